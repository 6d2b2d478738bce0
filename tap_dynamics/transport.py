"""The engine's transport as a system's client is built: from a run's settings.

Every system's client (Dataverse's, F&O's, …) is the engine's :class:`HttpTransport` with the
system's policy, locked to the configured ``url``, with the run's timeout, TLS verification and
concurrency. The wiring from settings is the same for all of them and lives here, beside the
systems, since the engine knows no settings.
"""

from __future__ import annotations

import typing as t

from tap_dynamics.engine.http import HttpTransport

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from tap_dynamics.auth import TokenProvider
    from tap_dynamics.config import Settings
    from tap_dynamics.engine.policy import ServicePolicy


class SettingsTransport(HttpTransport):
    """Authenticated, retrying, origin-locked client for the service ``settings`` name."""

    tokens: TokenProvider

    def __init__(
        self,
        policy: ServicePolicy,
        settings: Settings,
        tokens: TokenProvider,
        on_retry: Callable[[str | None, float], None] | None = None,
    ) -> None:
        super().__init__(policy, tokens, on_retry=on_retry, **settings.transport)
        self.settings = settings


__all__ = ["SettingsTransport"]
