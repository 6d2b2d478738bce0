"""Overlap the network with processing: page prefetch under a fixed page budget.

Why: one page sequence is strictly serial (each ``@odata.nextLink`` comes from the
previous page), and a large page can take a second to serve. While the tap encodes page *n*, page
*n + 1* should already be on the wire, and several sequences (tables, or windows of one table)
should be on the wire at once, up to the run's global in-flight cap
(held by the transport for every request, see ``engine/http.py``).

This module wraps a :class:`~tap_dynamics.engine.pages.PageSource`'s ``iter_pages`` (it does not
change it): each page sequence
is driven by one background thread that pulls the next page from ``iter_pages`` as soon as it
holds a slot of the shared :class:`PageBudget`. A page keeps its budget slot from before its
request until the consumer has finished with it (asked for the next page), so the number of
pages alive in the process — on the wire, buffered (rows still raw JSON, see ``pages.Rows``) or
being emitted (decoded) — never exceeds the budget, whatever the number of tables or sequences,
and no generator on the way keeps a page it has handed on. Memory stays flat.

:func:`prefetch_pages` drives several sequences at once and yields ``(index, page)`` as pages
arrive; each sequence's own pages come out in order.
"""

from __future__ import annotations

import queue
import threading
import typing as t

from tap_dynamics.engine import override

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from tap_dynamics.engine.pages import Page

# Pages the stream being emitted may have fetched ahead of the one it is emitting.
DEFAULT_DEPTH = 1
_POLL = 0.2  # seconds between checks of the stop flag while blocked


class PageBudget:
    """A fixed number of pages that may be alive at once across the whole run."""

    def __init__(self, pages: int) -> None:
        if pages < 1:
            msg = "a page budget needs at least one page"
            raise ValueError(msg)
        self.pages = pages
        self._sem = threading.Semaphore(pages)
        self._lock = threading.Lock()
        self.held = 0
        self.max_held = 0  # high-water mark (tests check the bound; the benchmark reports it)

    def acquire(self, stop: threading.Event) -> bool:
        """Take one slot; False if ``stop`` was set while waiting."""
        while not self._sem.acquire(timeout=_POLL):
            if stop.is_set():
                return False
        with self._lock:
            self.held += 1
            self.max_held = max(self.max_held, self.held)
        return True

    def release(self) -> None:
        """Give one slot back."""
        with self._lock:
            self.held -= 1
        self._sem.release()


class _End:
    """Queue marker: the sequence is exhausted."""


class _Failed:
    """Queue marker: the sequence raised; the consumer re-raises it in its own thread."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Feed(threading.Thread):
    """Pulls one page sequence on a background thread, ``depth`` pages ahead of its consumer."""

    def __init__(
        self,
        index: int,
        source: Callable[[], Iterator[Page]],
        budget: PageBudget,
        depth: int,
        out: queue.Queue,
        stop: threading.Event,
        handoff: threading.Lock,
        name: str,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.index = index
        self.source = source
        self.budget = budget
        self.out = out
        self.stop = stop
        self.handoff = handoff
        # Pages of this sequence fetched but not yet finished by the consumer, plus the one on
        # the wire: the consumer releases one per page it is done with.
        self.ahead = threading.Semaphore(depth + 1)

    def _wait(self, sem: threading.Semaphore) -> bool:
        while not sem.acquire(timeout=_POLL):
            if self.stop.is_set():
                return False
        return True

    @override
    def run(self) -> None:
        pages: Iterator[Page] | None = None
        try:
            pages = self.source()
            while not self.stop.is_set():
                if not self._wait(self.ahead):
                    return
                if not self.budget.acquire(self.stop):
                    self.ahead.release()
                    return
                try:
                    page = next(pages)
                except StopIteration:
                    self.budget.release()
                    self.ahead.release()
                    self.out.put((self.index, _End()))
                    return
                except BaseException:
                    self.budget.release()
                    self.ahead.release()
                    raise
                with self.handoff:  # either the consumer drains this page, or it was never put
                    if self.stop.is_set():
                        self.budget.release()
                        return
                    self.out.put((self.index, page))
                del page  # the consumer owns it now; not kept during the next fetch
        except BaseException as exc:  # handed to the consumer, raised there
            self.out.put((self.index, _Failed(exc)))
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()


def prefetch_pages(
    sources: Sequence[Callable[[], Iterator[Page]]],
    budget: PageBudget,
    *,
    depth: int = DEFAULT_DEPTH,
    name: str = "pages",
) -> Iterator[tuple[int, Page]]:
    """Drive every page sequence in ``sources`` at once; yield ``(index, page)`` as pages arrive.

    ``sources[i]()`` must return an iterator of pages (typically a ``client.iter_pages(...)``
    call). Pages of one sequence come out in their order; sequences interleave. A page's budget
    slot is released when the consumer asks for the next page, so the consumer must finish with
    a page (write it out) before iterating on. An error in a sequence is raised here, in the
    consumer's thread, after the pages that preceded it. Closing the generator stops the feeds.
    """
    out: queue.Queue = queue.Queue()
    stop = threading.Event()
    handoff = threading.Lock()
    feeds = [
        _Feed(i, source, budget, depth, out, stop, handoff, f"{name}-{i}")
        for i, source in enumerate(sources)
    ]
    for feed in feeds:
        feed.start()
    remaining = len(feeds)
    current: _Feed | None = None
    try:
        while remaining:
            index, item = out.get()
            if isinstance(item, _End):
                remaining -= 1
                continue
            if isinstance(item, _Failed):
                raise item.error
            current = feeds[index]
            yield index, item
            del item  # released with its budget slot, not kept while the next page is awaited
            # The consumer is done with this page: its slots go back.
            current = None
            feeds[index].ahead.release()
            budget.release()
    finally:
        if current is not None:  # closed while a page was out: give its slots back
            current.ahead.release()
            budget.release()
        with handoff:
            stop.set()
            # Give back the slots of pages fetched but never consumed.
            while True:
                try:
                    _index, item = out.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(item, (_End, _Failed)):
                    budget.release()


def prefetch(
    source: Callable[[], Iterator[Page]],
    budget: PageBudget,
    *,
    depth: int = DEFAULT_DEPTH,
    name: str = "pages",
) -> Iterator[Page]:
    """One page sequence, fetched ``depth`` pages ahead of its consumer."""
    for _index, page in prefetch_pages([source], budget, depth=depth, name=name):
        yield page
        del page
