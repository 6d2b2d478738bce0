"""Fewer passes of Python's cyclic garbage collector while the tap allocates in bulk.

Why: the collector runs a young-generation pass every 700 container objects allocated and not yet
freed. Two phases of the tap allocate far more than that and leave nothing for it to find:

- the record path holds a decoded page alive while it writes it (a 5,000-row ``account`` page is
  8,500 dicts and lists), so the collector ran a dozen times per page, over rows that reference
  counting frees anyway (rows have no cycles): 0.10 to 0.17 s of CPU on a 200k-row sync of about
  two seconds (measured with ``gc.callbacks``, thread CPU time), none after this;
- discovery keeps ~10 acyclic objects per column: about a quarter of its CPU on a 1,000-table
  org went to passes that found nothing to free (``make bench-discovery``).

Nothing is left uncollected: the collector still runs (after :data:`YOUNG_THRESHOLD` net
allocations instead of 700), and the old setting is restored on exit.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Iterator

YOUNG_THRESHOLD = 100_000

_lock = threading.Lock()
_depth = 0  # nested or concurrent users (the setting is process-wide)
_saved: tuple[int, ...] | None = None


@contextlib.contextmanager
def few_collections() -> Iterator[None]:
    """Run the young-generation collector less often inside the block (see the module docstring).

    Re-entrant and safe to enter from several threads: the first to enter raises the threshold,
    the last to leave restores it. A collector that is off (or a threshold of 0) stays as it is.
    """
    global _depth, _saved  # one process-wide setting, guarded by _lock
    with _lock:
        if _depth == 0:
            old = gc.get_threshold()
            if gc.isenabled() and old[0] != 0:
                _saved = old
                gc.set_threshold(max(old[0], YOUNG_THRESHOLD), *old[1:])
            else:
                _saved = None
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None


__all__ = ["YOUNG_THRESHOLD", "few_collections"]
