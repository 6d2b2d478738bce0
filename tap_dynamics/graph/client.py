"""The Graph client: the engine's transport with the Graph policy, built from settings.

Discovery, the check and every stream of a run share one client (token cache, connection
pools, the global in-flight cap, the per-mailbox cap, the run-wide throttling pause).
"""

from __future__ import annotations

import typing as t

from tap_dynamics.config.auth import DelegatedAuth
from tap_dynamics.graph.policy import GraphPolicy
from tap_dynamics.transport import SettingsTransport

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from tap_dynamics.auth import TokenProvider
    from tap_dynamics.config import Settings
    from tap_dynamics.config.graph import GraphSettings


class GraphClient(SettingsTransport):
    """Authenticated, retrying, origin-locked JSON client for Microsoft Graph v1.0."""

    def __init__(
        self,
        settings: Settings,
        tokens: TokenProvider,
        on_retry: Callable[[str | None, float], None] | None = None,
    ) -> None:
        super().__init__(GraphPolicy(settings.api_base), settings, tokens, on_retry)

    @property
    def delegated(self) -> bool:
        """Whether the run signs in as a user (AzureAD): Graph then checks the app's delegated
        permissions, not its application permissions, and a refusal names those."""
        return isinstance(self.settings.auth, DelegatedAuth)

    @property
    def graph(self) -> GraphSettings:
        """The Graph setting group of the run."""
        return t.cast("GraphSettings", self.settings.service)


__all__ = ["GraphClient"]
