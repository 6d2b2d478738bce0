"""The delta strategy: change tracking with tombstones and an expired-token re-baseline."""

from __future__ import annotations

import time
import typing as t
from dataclasses import replace

from tap_dynamics.engine.replication.base import (
    DELTA,
    DELTA_LINK_KEY,
    INITIAL,
    NEXT_LINK_KEY,
    PHASE_KEY,
    REBASELINE,
    VERSION_KEY,
    utc_now_iso,
)
from tap_dynamics.errors import ServiceError

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from tap_dynamics.engine.pages import Page
    from tap_dynamics.engine.replication.base import Reader

class DeltaDialect(t.Protocol):
    """How one product reports deletions and an expired delta token."""

    def tombstones(self, rows: Sequence[dict[str, t.Any]], read_at: str) -> tuple[Sequence[dict[str, t.Any]], int]:
        """``rows`` with each tombstone replaced by a deletion record (key + ``_sdc_deleted_at``),
        and how many there were; ``rows`` itself when the page has none."""
        ...

    def expired(self, exc: ServiceError) -> bool:
        """Whether ``exc`` says the delta token has expired (a full re-read is needed)."""
        ...


class DeltaStrategy:
    """Change tracking: the initial read, or the changes since the stored delta link.

    ``versioned`` (the default): a re-baseline is a new table version closed by
    ``ACTIVATE_VERSION``. A sequence that is only part of its table (one mailbox's calendar of an
    events table) must not activate a version — that would drop every other part's rows — so
    with ``versioned=False`` a re-baseline is a fresh initial read (rows deleted while the token
    was invalid stay in the target; the summary says so).
    """

    def __init__(
        self,
        reader: Reader,
        dialect: DeltaDialect,
        *,
        initial_url: Callable[[], str],
        prefer_initial: str,
        prefer_delta: str,
        required: tuple[str, ...],
        versioned: bool = True,
    ) -> None:
        self.reader = reader
        self.versioned = versioned
        self.dialect = dialect
        self.initial_url = initial_url
        self.prefer_initial = prefer_initial
        self.prefer_delta = prefer_delta
        self.required = required

    def pages(self) -> Iterator[Page]:
        """The pages to read now: resume, initial read, changes, or a re-baseline."""
        reader = self.reader
        state = reader.read_state
        next_link = state.get(NEXT_LINK_KEY)
        delta_link = state.get(DELTA_LINK_KEY)
        phase = state.get(PHASE_KEY)
        if phase == REBASELINE:  # a killed re-baseline, before or after its first page
            reader.note("re-baseline resumed")
            yield from self.track(next_link or self.initial_url(), REBASELINE)
            return
        url = next_link or delta_link
        if not url:
            yield from self.track(self.initial_url(), INITIAL)
            return
        # A next link of an initial read resumes it where a killed run stopped; its paging token
        # can expire like a delta token (Graph: 410 / syncStateNotFound), and is re-baselined so.
        resumed = INITIAL if next_link and phase == INITIAL else DELTA
        try:
            yield from self.track(url, resumed)
        except ServiceError as exc:
            if not self.dialect.expired(exc):
                raise
            reader.logger.warning(
                "Table %s: the change-tracking token has expired (%s); re-baselining with a full "
                "read. Targets that honour ACTIVATE_VERSION will drop rows deleted meanwhile.",
                reader.name,
                exc,
            )
            reader.note("re-baselined: change-tracking token expired")
            if not self.versioned:
                reader.checkpoint(**{DELTA_LINK_KEY: None, NEXT_LINK_KEY: None, PHASE_KEY: None})
                yield from self.track(self.initial_url(), INITIAL)
                return
            # One STATE for the whole switch: no point at which a kill forgets the re-baseline.
            version = int(time.time() * 1000)
            reader.checkpoint(**{DELTA_LINK_KEY: None, NEXT_LINK_KEY: None, PHASE_KEY: REBASELINE, VERSION_KEY: version})
            yield from self.track(self.initial_url(), REBASELINE)

    def track(self, url: str, phase: str) -> Iterator[Page]:
        """Follow one tracked sequence of pages to its delta link."""
        reader = self.reader
        state = reader.read_state
        full_pass = phase in (INITIAL, REBASELINE)
        version = state.get(VERSION_KEY) if phase == REBASELINE else None
        if phase == REBASELINE and version is None:
            version = int(time.time() * 1000)
        reader.set_version(version)
        reader.checkpoint(**{PHASE_KEY: phase, VERSION_KEY: version})
        prefer = self.prefer_initial if full_pass else self.prefer_delta
        for page in reader.fetch(url, prefer, required=self.required):
            rows, deletes = self.dialect.tombstones(page.records, utc_now_iso())
            reader.deletes_emitted += deletes
            if page.next_link:
                yield replace(page, records=rows, checkpoint={NEXT_LINK_KEY: page.next_link}, deletes=deletes)
            else:
                if not page.delta_link:
                    msg = f"table {reader.name}: the last change-tracking page has no @odata.deltaLink"
                    raise ServiceError(msg, table=reader.name)
                done = {NEXT_LINK_KEY: None, DELTA_LINK_KEY: page.delta_link, PHASE_KEY: None, VERSION_KEY: None}
                yield replace(page, records=rows, checkpoint=done, activate_version=version, deletes=deletes)
            del page, rows
        reader.set_version(None)
