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


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., Any]]:
    started: list[DataverseHost] = []

    def factory(rows: dict[str, int] | None = None, *, kind: type[DataverseHost] = Emulator,
                **kw: Any) -> Any:
        """A started emulator of ``kind`` (e.g. the on-premises one), stopped at teardown."""
        emu = kind(rows=rows, **kw).start()
        started.append(emu)
        return emu

    try:
        yield factory
    finally:
        for emu in started:
            emu.stop()


@pytest.fixture
def make_graph_emulator() -> Iterator[Callable[..., Any]]:
    """A started Office 365 tenant (:class:`~emulator.graph.GraphEmulator`), stopped at teardown."""
    from .graph import GraphEmulator

    started: list[GraphEmulator] = []

    def factory(**kw: Any) -> GraphEmulator:
        emu = GraphEmulator(**kw).start()
        started.append(emu)
        return emu

    try:
        yield factory
    finally:
        for emu in started:
            emu.stop()
