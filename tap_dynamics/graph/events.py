"""The ``events`` stream: every mailbox's calendar events inside a window, by delta query.

Graph has no tenant-wide calendar delta: each mailbox has its own
``/users/{id}/calendarView/delta?startDateTime=…&endDateTime=…`` (the window is fixed into its
token). So the stream lists the users, reads the mailboxes concurrently — ``max_concurrency``
at a time, each mailbox's pages one after another, and the transport's per-mailbox cap keeps
any mailbox at most at Outlook's 4 concurrent requests — and keeps one delta link per mailbox
in its state (``mailboxes``: {user id: {"delta_link": …}}).

Each mailbox runs the engine's :class:`~tap_dynamics.engine.replication.DeltaStrategy` through a
:class:`MailboxReader` (its state is the mailbox's entry, not the stream's). Its re-baseline is
not versioned: activating a version for one mailbox would drop every other mailbox's events.

The mailboxes' pages are merged into the stream's pages here; a page's checkpoint holds the
delta links of the mailboxes whose every row is in that page or before it, so a killed run
re-reads only the mailboxes that were in flight (from their previous delta link: their rows
again, never fewer). A user without an Exchange Online mailbox (no licence, on-premises) is
counted and skipped.

The window (``events_window_days_back``/``_forward``) is anchored when a mailbox's first read
starts and re-anchored — every mailbox read afresh — when the settings change or the anchor is
a week old (the window slides weekly; events that leave it stay in the target as they were).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor

from tap_dynamics.engine import override
from tap_dynamics.engine.pages import Page
from tap_dynamics.engine.replication import DELTA_LINK_KEY, NEXT_LINK_KEY, DeltaStrategy
from tap_dynamics.errors import ServiceError
from tap_dynamics.graph.policy import NO_MAILBOX_CODES, GraphDelta, is_denied, permission_denied
from tap_dynamics.graph.streams import GraphStream

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from singer_sdk.helpers.types import Context

    from tap_dynamics.engine.pages import PageSource
    from tap_dynamics.engine.prefetch import PageBudget

MAILBOXES_KEY = "mailboxes"
WINDOW_KEY = "window"
REANCHOR_AFTER = dt.timedelta(days=7)
MAX_EVENTS_PAGE = 1000
# Stop early when this many mailboxes in a row were refused and none was read: the permission
# is missing (not an application access policy that leaves some mailboxes out).
DENIED_BEFORE_GIVING_UP = 20
_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class MailboxReader:
    """A :class:`~tap_dynamics.engine.replication.Reader` over one mailbox of the events stream.

    Its state is the mailbox's entry; checkpoints only update it (the stream's merged pages
    carry it into the STATE), fetches go straight to the transport (the stream's queue bounds
    the pages alive), and table versions are never used.
    """

    def __init__(self, stream: EventsStream, state: dict[str, t.Any]) -> None:
        self.stream = stream
        self.name = stream.name
        self.deletes_emitted = 0
        self.state = state
        self.page_format = None  # the service's (OData v4 JSON)

    @property
    def client(self) -> PageSource:
        """The stream's transport."""
        return self.stream.client

    @property
    def logger(self) -> logging.Logger:
        """The stream's logger."""
        return self.stream.logger

    @property
    def read_state(self) -> dict[str, t.Any]:
        """The mailbox's state."""
        return self.state

    @property
    def page_budget(self) -> PageBudget:
        """The run's page budget (unused: the stream's queue bounds the pages)."""
        return self.stream.page_budget

    def fetch(self, url: str, prefer: str | None, *, required: tuple[str, ...] = (),
              cursor: tuple[str, type] | None = None) -> Iterator[Page]:
        """The mailbox's pages, straight from the transport."""
        for page in self.stream.client.iter_pages(url, prefer=prefer, table=self.name, required=required):
            self.stream.page_arrived(page)
            yield page

    def checkpoint(self, **values: t.Any) -> None:
        """Update the mailbox's state (the stream's next merged page writes it)."""
        apply(self.state, values)

    def set_bookmark_cap(self, cap: str | None) -> None:
        """No bookmark: nothing to cap."""

    def set_version(self, version: int | None) -> None:
        """No table versions for one mailbox."""

    def activate_version(self, version: int) -> None:
        """No table versions for one mailbox."""

    def set_windowed(self, windowed: bool) -> None:
        """One sequence per mailbox."""

    def note(self, text: str) -> None:
        """A remark for the stream's summary line."""
        self.stream.mailbox_note(text)

    def page_arrived(self, page: Page) -> None:
        """A page was read (run summary; number text on the fast path): the stream's."""
        self.stream.page_arrived(page)


def apply(state: dict[str, t.Any], values: t.Mapping[str, t.Any]) -> None:
    """Set (or, for None, remove) keys of a state dict."""
    for key, value in values.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value


class EventsStream(GraphStream):
    """Calendar events of every mailbox, key (user id, event id)."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self.counts = {"mailboxes": 0, "read": 0, "no mailbox": 0, "denied": 0}
        self._notes: set[str] = set()

    @override
    def set_method(self, method: str) -> None:
        self.replication_key = None
        self.forced_replication_method = "LOG_BASED"

    def mailbox_note(self, text: str) -> None:
        """A remark of one mailbox (e.g. a re-baseline), said once in the summary."""
        with self._lock:
            self._notes.add(text)

    # -- the window -----------------------------------------------------------------------------
    def window(self, state: dict[str, t.Any]) -> tuple[dict[str, t.Any], bool]:
        """The window to read in, and whether it is new (every mailbox is read afresh)."""
        graph = self.client.graph
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        old = state.get(WINDOW_KEY)
        if isinstance(old, dict) and old.get("back") == graph.events_days_back and old.get(
            "forward"
        ) == graph.events_days_forward:
            try:
                anchor = dt.datetime.strptime(str(old.get("anchor")), _FORMAT).replace(tzinfo=dt.timezone.utc)
            except ValueError:
                anchor = None
            if anchor is not None and now - anchor < REANCHOR_AFTER:
                return old, False
        window = {
            "anchor": now.strftime(_FORMAT),
            "start": (now - dt.timedelta(days=graph.events_days_back)).strftime(_FORMAT),
            "end": (now + dt.timedelta(days=graph.events_days_forward)).strftime(_FORMAT),
            "back": graph.events_days_back,
            "forward": graph.events_days_forward,
        }
        return window, True

    def prefer(self) -> str:
        """Page size (calendar delta honours it) and event times in UTC."""
        return f'odata.maxpagesize={min(self.settings.page_size, MAX_EVENTS_PAGE)}, outlook.timezone="UTC"'

    def users(self) -> Iterator[str]:
        """Every user's id (each may or may not have a mailbox)."""
        url = self.client.url("users", {"$select": "id", "$top": "999"})
        for page in self.client.iter_pages(url, table=self.name, required=("id",)):
            self.page_arrived(page)
            for row in page.records:
                yield str(row["id"])

    # -- reading --------------------------------------------------------------------------------
    @override
    def get_pages(self, context: Context | None) -> Iterator[Page]:
        state = self.load_state(context)
        self._delta_read = True  # always a delta query: live rows say _sdc_deleted_at null
        self.run.summary.stream(self.name).method = "DELTA"
        window, fresh = self.window(state)
        mailboxes: dict[str, t.Any] = {} if fresh else dict(state.get(MAILBOXES_KEY) or {})
        if fresh and state.get(MAILBOXES_KEY):
            self.logger.info("Stream events: a new calendar window %s..%s; every mailbox is read afresh",
                             window["start"], window["end"])
        try:
            yield from self.read_all(window, mailboxes)
        except ServiceError as exc:
            if is_denied(exc):
                raise permission_denied(
                    self.name, "Calendars.Read (and User.Read.All)", exc, delegated=self.client.delegated
                ) from None
            raise
        counts = self.counts
        note = (
            f"{counts['mailboxes']} mailboxes: {counts['read']} read, {counts['no mailbox']} without a "
            f"mailbox skipped" + (f", {counts['denied']} refused (application access policy)" if counts["denied"] else "")
        )
        self.note("; ".join([note, *sorted(self._notes)]))

    def read_all(self, window: dict[str, t.Any], mailboxes: dict[str, t.Any]) -> Iterator[Page]:
        """Merge the mailboxes' pages (read concurrently) into the stream's pages."""
        workers = max(1, self.settings.max_concurrency)
        found: queue.Queue[tuple[str, t.Any, t.Any]] = queue.Queue(maxsize=2 * workers)
        stop = threading.Event()

        def put(item: tuple[str, t.Any, t.Any]) -> None:
            while not stop.is_set():
                try:
                    found.put(item, timeout=0.2)
                    return
                except queue.Full:
                    continue

        def read(user: str) -> None:
            if stop.is_set():
                return
            mailbox = {k: v for k, v in (mailboxes.get(user) or {}).items() if k == DELTA_LINK_KEY}
            try:
                for page in self.mailbox_pages(user, mailbox, window):
                    put(("page", user, page))
                put(("done", user, mailbox.get(DELTA_LINK_KEY)))
            except ServiceError as exc:
                put(("failed", user, exc))
            except BaseException as exc:
                put(("crashed", user, exc))

        users = list(self.users())
        self.counts["mailboxes"] = len(users)
        for gone in set(mailboxes) - set(users):  # deleted users: their delta links go too
            del mailboxes[gone]
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailbox")
        for user in users:
            pool.submit(read, user)
        rows: list[dict[str, t.Any]] = []
        deletes = 0
        finished = 0
        changed = True  # the window itself is new state
        try:
            while finished < len(users):
                kind, user, value = found.get()
                if kind == "page":
                    rows.extend(value.records)
                    deletes += value.deletes
                else:
                    finished += 1
                    if kind == "done":
                        self.counts["read"] += 1
                        mailboxes[user] = {DELTA_LINK_KEY: value}
                        changed = True
                    elif kind == "failed":
                        self.mailbox_failed(user, value)
                    else:
                        raise value
                # A page per page_size rows, or per 50 finished mailboxes (their delta links).
                if len(rows) >= self.settings.page_size or (changed and kind != "page" and finished % 50 == 0):
                    yield self.merged(rows, deletes, window, mailboxes)
                    rows, deletes, changed = [], 0, False
            yield self.merged(rows, deletes, window, mailboxes)
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def merged(self, rows: list[dict[str, t.Any]], deletes: int, window: dict[str, t.Any],
               mailboxes: dict[str, t.Any]) -> Page:
        """One stream page: the rows so far and the delta links of the mailboxes they complete."""
        return Page(rows, None, None, None, checkpoint={WINDOW_KEY: window, MAILBOXES_KEY: dict(mailboxes)},
                    deletes=deletes)

    def mailbox_failed(self, user: str, exc: ServiceError) -> None:
        """A mailbox that cannot be read: skipped when it has no mailbox, else the stream fails."""
        if exc.code in NO_MAILBOX_CODES or exc.status == 404:
            self.counts["no mailbox"] += 1
            self.logger.debug("Stream events: user %s has no mailbox (%s); skipped", user, exc.code)
            return
        if is_denied(exc):
            self.counts["denied"] += 1
            if self.counts["read"] == 0 and self.counts["denied"] >= min(DENIED_BEFORE_GIVING_UP, self.counts["mailboxes"]):
                raise exc
            self.logger.warning("Stream events: mailbox of user %s refused (%s); skipped", user, exc.code)
            return
        raise exc

    def mailbox_pages(self, user: str, mailbox: dict[str, t.Any], window: dict[str, t.Any]) -> Iterator[Page]:
        """One mailbox's pages by the engine's delta strategy (its state: ``mailbox``)."""
        reader = MailboxReader(self, mailbox)

        def initial_url() -> str:
            return self.client.url(
                f"users/{user}/calendarView/delta",
                {"startDateTime": window["start"], "endDateTime": window["end"]},
            )

        strategy = DeltaStrategy(
            reader,
            GraphDelta({"user_id": user}),
            initial_url=initial_url,
            prefer_initial=self.prefer(),
            prefer_delta=self.prefer(),
            required=(),
            versioned=False,
        )
        for page in strategy.pages():
            if page.checkpoint:
                apply(mailbox, page.checkpoint)
            yield page
        mailbox.pop(NEXT_LINK_KEY, None)


__all__ = ["EventsStream", "MailboxReader"]
