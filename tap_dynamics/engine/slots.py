"""Concurrency caps per resource, beside the transport's global in-flight cap.

Some services limit concurrent requests per resource rather than per client: Outlook allows 4
at a time per mailbox (Graph answers a fifth with 429 ``ApplicationThrottled``). The policy
names the resource a URL belongs to (:meth:`~tap_dynamics.engine.policy.ServicePolicy.concurrency_key`);
the transport holds that resource's slot while the request is on the wire.
"""

from __future__ import annotations

import contextlib
import threading
import typing as t


class ResourceSlots:
    """``limit`` slots per resource key, created on first use (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    def hold(self, key: str | None) -> t.ContextManager[t.Any]:
        """The slot of resource ``key`` (None: no per-resource cap, nothing to hold)."""
        if key is None:
            return contextlib.nullcontext()
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = threading.BoundedSemaphore(self.limit)
        return slot


__all__ = ["ResourceSlots"]
