"""What every system's ``check`` shares: the readable-tables tally and its one line.

A system's check probes each table a sync would read (one cheap request each, with the same
privilege as the sync) and reports ``can read 12 of 14 tables — no read privilege on: …``. The
probing and the tally are the same for every system; what a probe sends and how a table is named
is the system's. This module names no product, and no system package imports another's: both
import this one.
"""

from __future__ import annotations

import contextlib
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tap_dynamics.errors import (
    ConnectionProblem,
    ServiceError,
    ServiceUnavailable,
    TapDynamicsError,
)

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

# At most this many names per list in the one-line answer (a 1,000-table org).
MAX_NAMES = 20

T = t.TypeVar("T")


def shown_names(names: Sequence[str]) -> str:
    """``a, b, c and 12 more``: at most ``MAX_NAMES`` names, the rest counted."""
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")


@dataclass
class TableAccess:
    """What the probes found: which of the configured tables the identity can read."""

    total: int = 0
    readable: int = 0
    denied: list[str] = field(default_factory=list)  # 403: the role lacks Read on the table
    failed: dict[str, ServiceError] = field(default_factory=dict)  # any other failure

    def describe(self) -> str:
        """``can read 12 of 14 tables — no read privilege on: invoice, salesorder``."""
        if not self.total:
            return "no table matches the entities setting"
        head = f"can read {self.readable} of {self.total} table{'s' if self.total > 1 else ''}"
        if self.readable == self.total:
            return head
        parts = []
        if self.denied:
            parts.append(
                f"no read privilege on: {shown_names(self.denied)} (give the identity's security role "
                "Read on them)"
            )
        if self.failed:
            first = next(iter(self.failed.values()))
            parts.append(f"could not read: {shown_names(list(self.failed))} (first error: {first})")
        return f"{head} — {'; '.join(parts)}"

    def error(self, line: str) -> TapDynamicsError | None:
        """The error when no table is readable: exit 4 only when the service itself kept failing."""
        if not self.total or self.readable:
            return None
        if not self.denied and all(isinstance(e, ServiceUnavailable) for e in self.failed.values()):
            return ServiceUnavailable(line)
        return ConnectionProblem(line)


def refused(error: ServiceError) -> bool:
    """Whether a probe's error is a missing privilege (403) rather than a failure to read."""
    return error.status == 403


def probe_tables(
    tables: Sequence[T],
    probe: Callable[[T], object],
    name_of: Callable[[T], str],
    max_workers: int,
    *,
    denied: Callable[[ServiceError], bool] = refused,
) -> TableAccess:
    """Run ``probe`` on every table, ``max_workers`` at a time, and tally the outcomes: a
    :class:`ServiceError` that is ``denied`` (by default a 403) is "no read privilege", any other
    one "could not read"."""

    def attempt(table: T) -> ServiceError | None:
        try:
            probe(table)
        except ServiceError as exc:
            return exc
        return None

    access = TableAccess(total=len(tables))
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        outcomes = list(pool.map(attempt, tables))
    for table, error in zip(tables, outcomes, strict=True):
        if error is None:
            access.readable += 1
        elif denied(error):
            access.denied.append(name_of(table))
        else:
            access.failed[name_of(table)] = error
    return access


@contextlib.contextmanager
def service_answers() -> Iterator[None]:
    """Around a check's requests: a :class:`ServiceError` means the service answered and a person
    must change something (exit 2, its one line); :class:`ServiceUnavailable` stays what it is
    (the service kept failing, exit 4)."""
    try:
        yield
    except ServiceUnavailable:
        raise
    except ServiceError as exc:
        raise ConnectionProblem(str(exc)) from None


def verdict(line: str, access: TableAccess) -> str:
    """``connection available: <line>``, or the error when no table is readable."""
    error = access.error(line)
    if error is not None:
        raise error
    return f"connection available: {line}"


__all__ = ["MAX_NAMES", "TableAccess", "probe_tables", "refused", "service_answers", "shown_names", "verdict"]
