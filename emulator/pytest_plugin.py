"""pytest fixtures for the emulator.

``emulator``: one session-wide instance with the default sizes (cheap to share because tests
that mutate data should use their own instance). ``make_emulator``: factory for tests that
need specific sizes or knobs; every instance it creates is stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from . import Emulator
from .dataverse.deployment import DataverseHost


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    emu = Emulator().start()
    try:
        yield emu
    finally:
        emu.stop()


def _started(make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """A factory of started emulators (``make(**kw)`` builds one), each stopped at teardown."""
    started: list[Any] = []

    def factory(*args: Any, **kw: Any) -> Any:
        emu = make(*args, **kw).start()
        started.append(emu)
        return emu

    try:
        yield factory
    finally:
        for emu in started:
            emu.stop()


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., Any]]:
    """``factory(rows, kind=Emulator, **knobs)``: a started Dataverse deployment of ``kind``
    (e.g. the on-premises one)."""

    def make(rows: dict[str, int] | None = None, *, kind: type[DataverseHost] = Emulator, **kw: Any) -> Any:
        return kind(rows=rows, **kw)

    yield from _started(make)


@pytest.fixture
def make_graph_emulator() -> Iterator[Callable[..., Any]]:
    """A started Office 365 tenant (:class:`~emulator.graph.GraphEmulator`)."""
    from .graph import GraphEmulator

    yield from _started(GraphEmulator)
