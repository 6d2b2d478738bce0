"""Dataverse online: Entra ID + the Dataverse Web API on one host.

One server, one port, two host names: the org URL ``https://127.0.0.1:PORT`` and the
authority host ``https://localhost:PORT`` (so tests can check that bearer tokens only go to
the org). Routing is by path; any Host header is accepted.

    from emulator import Emulator
    with Emulator(rows={"account": 1000}) as emu:
        requests.get(emu.org_url + "/api/data/v9.2/WhoAmI", verify=emu.ca_path, ...)
"""

from __future__ import annotations

from typing import Any, ClassVar

from .core.service import Service
from .dataverse.deployment import DataverseHost
from .dataverse.service import DataverseService
from .identity import DEFAULT_CLIENT, DEFAULT_SECRET, DEFAULT_TENANT
from .identity.entra import App, Entra


class Emulator(DataverseHost):
    """In-process emulator. ``start()`` generates data, creates TLS material and serves.

    Keywords: ``rows``, ``seed``, ``org_tables``, ``clones`` (the data), ``port``, ``host``,
    and every knob (``latency_ms``, ``token_lifetime``, ``change_tracking_expiry_seconds``,
    ``top_wins``, ``latency_scope`` and the fault knobs; see ``emu.knobs``)."""

    service_classes: ClassVar[tuple[type[Service], ...]] = (Entra, DataverseService)

    def __init__(self, rows: dict[str, int] | None = None, **kw: Any):
        super().__init__(rows, **kw)
        self.tenant_id, self.client_id, self.client_secret = DEFAULT_TENANT, DEFAULT_CLIENT, DEFAULT_SECRET
        self.entra: Entra | None = None

    def build(self) -> None:
        store = self.make_store()
        self.org_url = self.server_url
        self.base_url = self.org_url
        self.dataverse = DataverseService(self, store, None)
        self.entra = Entra(self)
        self.dataverse.identity = self.entra
        self.entra.register_resource(self.dataverse.audience)
        self.register(self.dataverse)
        self.register(self.entra)

    # ------------------------------------------------------------ public API
    def tap_config(self) -> dict[str, str]:
        return {"url": self.org_url, "tenant_id": self.tenant_id, "client_id": self.client_id,
                "client_secret": self.client_secret, "authority_host": self.authority_host,
                "ca_bundle": self.ca_path}

    def register_app(self, client_id: str, secret: str = DEFAULT_SECRET, tenant_id: str | None = None,
                     secret_expired: bool = False, consent: bool = True,
                     application_user: bool = True, **more: Any) -> App:
        """``more``: certificate=, redirect_uris=, public_client=, managed_identity= (entra.py)."""
        return self.entra.register_app(client_id, secret, tenant_id, secret_expired, consent,
                                       application_user, **more)

    def issue_token(self, client_id: str | None = None, lifetime: int | None = None,
                    audience: str | None = None) -> str:
        """A bearer token minted directly (tests of expiry / audience without a token call)."""
        app = self.entra.apps[(client_id or self.client_id).lower()]
        return self.entra.issue(app, lifetime, audience)
