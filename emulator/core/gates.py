"""Gates: hold chosen requests inside the server, in flight, until a test opens them.

Tests use them to have several requests in flight at once without relying on timing; ``met``
says whether ``open_at`` requests really were in flight at once. A service calls
:meth:`~emulator.core.host.Host.hold` for each request it admitted (Dataverse: after service
protection counted it in).
"""

from __future__ import annotations

import re
import threading


class Gate:
    """Holds the requests whose decoded target matches ``pattern`` until it opens: by
    :meth:`open`, or by itself once ``open_at`` of them wait together."""

    def __init__(self, pattern: str, open_at: int | None = None, timeout_s: float = 120.0):
        self.pattern = re.compile(pattern)
        self.open_at = open_at
        self.timeout_s = timeout_s
        self.waiting = 0
        self.most_waiting = 0
        self.passed = 0
        self.met = False
        self._open = False
        self._cond = threading.Condition()

    def hold(self, target: str) -> None:
        """Called by the server for every admitted request."""
        if self._open or not self.pattern.search(target):
            return
        with self._cond:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
            if self.open_at is not None and self.waiting >= self.open_at:
                self.met = True
                self._open = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._open, self.timeout_s)
            self.waiting -= 1
            self.passed += 1

    def wait_for(self, count: int, timeout_s: float = 120.0) -> bool:
        """Block the test until ``count`` requests are held (False if that never happens)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.waiting >= count, timeout_s)

    def open(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()
