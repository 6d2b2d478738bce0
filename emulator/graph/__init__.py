"""Microsoft Graph v1.0 for Office 365: a tenant's directory (users, groups and memberships,
devices, applications, service principals, directory roles, domains, the organization,
subscribed SKUs) and its mailboxes' calendars, with delta queries tied to a change log.

:class:`GraphEmulator` is a deployment of its own: Entra ID + Graph on one port, the Graph
audience being the server's URL (as ``https://graph.microsoft.com`` is Graph's)::

    from emulator.graph import GraphEmulator
    with GraphEmulator(counts={"users": 100}) as emu:
        config = emu.tap_config()  # edition Office365, url = the Graph origin
        emu.directory.delete("users", user_id)           # a soft delete: @removed "changed"
        emu.directory.remove_member(group_id, user_id)   # members@delta with @removed
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.host import Host
from ..core.service import Service
from ..identity import DEFAULT_CLIENT, DEFAULT_SECRET, DEFAULT_TENANT
from ..identity.entra import Entra
from .directory import Directory
from .service import ALL_PERMISSIONS, GraphService

DEFAULT_COUNTS = {"users": 40, "groups": 8, "devices": 12, "applications": 5, "servicePrincipals": 7,
                  "directoryRoles": 3}


class GraphEmulator(Host):
    """In-process Office 365 tenant. Keywords: ``counts`` (objects per collection), ``seed``,
    ``events_per_user``, ``no_mailbox_every`` (every n-th user has no mailbox), and every knob."""

    service_classes: ClassVar[tuple[type[Service], ...]] = (Entra, GraphService)

    def __init__(self, counts: dict[str, int] | None = None, seed: int = 42, events_per_user: int = 5,
                 no_mailbox_every: int = 0, **kw: Any) -> None:
        super().__init__(**kw)
        self.counts = {**DEFAULT_COUNTS, **(counts or {})}
        self.seed = seed
        self.events_per_user = events_per_user
        self.no_mailbox_every = no_mailbox_every
        self.tenant_id, self.client_id, self.client_secret = DEFAULT_TENANT, DEFAULT_CLIENT, DEFAULT_SECRET

    def build(self) -> None:
        self.directory = Directory(self.counts, self.seed, tenant_id=self.tenant_id,
                                   events_per_user=self.events_per_user, no_mailbox_every=self.no_mailbox_every)
        self.entra = Entra(self)
        self.graph = GraphService(self, self.directory, self.entra)
        self.graph_url = self.server_url
        self.entra.register_resource(self.graph.audience)
        self.register(self.graph)
        self.register(self.entra)

    def tap_config(self) -> dict[str, Any]:
        return {"edition": "Office365", "url": self.graph_url, "tenant_id": self.tenant_id,
                "client_id": self.client_id, "client_secret": self.client_secret,
                "authority_host": self.authority_host, "ca_bundle": self.ca_path}

    def grant(self, *permissions: str) -> None:
        """Grant only these application permissions (admin consent given for them)."""
        self.set(graph_permissions=list(permissions))

    def deny(self, *permissions: str) -> None:
        """Grant every permission but these."""
        self.grant(*[p for p in ALL_PERMISSIONS if p not in permissions])

    def deny_delegated(self, *permissions: str) -> None:
        """Consent every delegated permission but these (what a signed-in user's token carries)."""
        self.set(graph_delegated_permissions=[p for p in ALL_PERMISSIONS if p not in permissions])


__all__ = ["ALL_PERMISSIONS", "DEFAULT_COUNTS", "Directory", "GraphEmulator", "GraphService"]
