"""The full-table strategy: every row each run, as a table version closed by ACTIVATE_VERSION."""

from __future__ import annotations

import time
import typing as t
from dataclasses import replace

from tap_dynamics.engine.replication.base import NEXT_LINK_KEY, VERSION_KEY

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tap_dynamics.engine.pages import Page
    from tap_dynamics.engine.replication.base import Reader

class FullTableStrategy:
    """One full pass as a table version; resumes from the in-flight next link."""

    def __init__(self, reader: Reader, *, prefer: str | None, required: tuple[str, ...]) -> None:
        self.reader = reader
        self.prefer = prefer
        self.required = required

    def pages(self, first_url: str) -> Iterator[Page]:
        """The table's pages; the last one activates the version."""
        reader = self.reader
        state = reader.read_state
        next_link = state.get(NEXT_LINK_KEY)
        version = state.get(VERSION_KEY)
        if not (next_link and version):
            next_link, version = None, int(time.time() * 1000)
            if state.get("last_version") is None:
                # First ever sync: activate the version at once so the target creates the table.
                reader.activate_version(version)
        reader.set_version(version)
        reader.checkpoint(**{VERSION_KEY: version, NEXT_LINK_KEY: next_link})
        for page in reader.fetch(next_link or first_url, self.prefer, required=self.required):
            if page.next_link:
                yield replace(page, checkpoint={NEXT_LINK_KEY: page.next_link})
            else:
                # The whole table has been emitted as `version`: targets may now drop older rows.
                done = {VERSION_KEY: None, NEXT_LINK_KEY: None, "last_version": version}
                yield replace(page, checkpoint=done, activate_version=version)
            del page
