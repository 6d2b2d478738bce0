"""Several page sequences fetched at once, consumed in one thread, with bounded buffering.

A Dataverse page sequence is inherently serial (each ``nextLink`` comes from the previous page),
so one big table can only go faster by reading several disjoint sequences at once — e.g. time
windows of a first load. :func:`interleave` runs each sequence on its own worker thread and hands
pages to the consuming thread as they arrive. A worker blocks once the shared queue is full, so at
most ``len(sequences) + buffer`` pages are in memory whatever the table size. Requests still go
through the client's global in-flight cap. Errors are re-raised in the consumer; closing the
generator stops the workers.
"""

from __future__ import annotations

import queue
import threading
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

T = t.TypeVar("T")

_DONE = object()


def interleave(
    sequences: list[Callable[[], Iterator[T]]],
    *,
    buffer: int = 2,
) -> Iterator[tuple[int, T]]:
    """Yield ``(index, item)`` from every sequence, in arrival order, as they are produced.

    ``sequences`` are factories (called on the worker threads) so that each sequence's own
    iteration, including its HTTP requests, happens concurrently.
    """
    if not sequences:
        return
    ready: queue.Queue[tuple[int, t.Any]] = queue.Queue(maxsize=max(1, buffer))
    stop = threading.Event()

    def put(item: tuple[int, t.Any]) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def work(index: int, factory: Callable[[], Iterator[T]]) -> None:
        try:
            for item in factory():
                if not put((index, item)):
                    return
            put((index, _DONE))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises
            put((index, exc))

    threads = [
        threading.Thread(target=work, args=(i, f), name=f"tap-dynamics-seq-{i}", daemon=True)
        for i, f in enumerate(sequences)
    ]
    for thread in threads:
        thread.start()
    remaining = len(threads)
    try:
        while remaining:
            index, item = ready.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
