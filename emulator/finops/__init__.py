"""Dynamics 365 Finance & Operations: Entra ID + an F&O environment's ``/data`` on one host.

Its own deployment (own port), because an F&O environment is its own URL and token audience:

    from emulator.finops import FinOpsEmulator
    with FinOpsEmulator(rows={"CustomersV3": 30000}) as emu:
        config = emu.tap_config()   # edition FinOpsOnline, url = the environment root

``big`` adds that many synthetic entities (the discovery benchmark's ``$metadata``).
``identity="adfs"``: an on-premises (local business data) environment signing in with AD FS on
the same port (``https://localhost:PORT/adfs``) instead of Entra ID; the environment is a
relying party trust of the AD FS and accepts only AD FS tokens issued for its URL.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.host import Host
from ..core.service import Service
from ..identity import DEFAULT_CLIENT, DEFAULT_SECRET, DEFAULT_TENANT
from ..identity.adfs import DEFAULT_ADFS_CLIENT, DEFAULT_ADFS_SECRET, Adfs
from ..identity.entra import App, Entra
from .model import COMPANIES, DEFAULT_COMPANY, Store
from .service import FinOpsService

DEFAULT_ROWS = {"CustomersV3": 300, "SalesOrderHeadersV2": 300}

__all__ = ["COMPANIES", "DEFAULT_COMPANY", "DEFAULT_ROWS", "FinOpsEmulator"]


class FinOpsEmulator(Host):
    """In-process F&O environment. Keywords: ``rows`` (per entity set, spread over the
    companies), ``seed``, ``big`` (synthetic entities), ``port`` and every knob."""

    service_classes: ClassVar[tuple[type[Service], ...]] = (Entra, Adfs, FinOpsService)

    def __init__(self, rows: dict[str, int] | None = None, seed: int = 42, big: int = 0,
                 identity: str = "entra", **kw: Any):
        if identity not in ("entra", "adfs"):
            raise ValueError("identity must be 'entra' or 'adfs'")
        super().__init__(**kw)
        self.identity = identity
        self.adfs: Adfs | None = None
        self._rows_cfg = dict(DEFAULT_ROWS if rows is None else rows)
        self.seed, self.big = seed, big
        self.tenant_id, self.client_id, self.client_secret = DEFAULT_TENANT, DEFAULT_CLIENT, DEFAULT_SECRET
        self.store: Store | None = None

    def build(self) -> None:
        self.store = Store(self._rows_cfg, self.seed, self.big)
        self.env_url = self.server_url
        self.entra = Entra(self)
        if self.identity == "adfs":  # on-premises: no Entra ID, AD FS under the authority host
            self.adfs = Adfs(self)
        self.finops = FinOpsService(self, self.store, self.entra, self.adfs)
        if self.adfs is not None:
            self.adfs.register_resource(self.finops.audience)
        else:
            self.entra.register_resource(self.finops.audience)
        self.register(self.finops)  # before the identity: /data and /Metadata are its own
        self.register(self.adfs if self.adfs is not None else self.entra)

    def tap_config(self) -> dict[str, Any]:
        if self.adfs is not None:
            return {"url": self.env_url, "edition": "FinOpsOnPremise", "auth_scheme": "ADFS",
                    "client_id": DEFAULT_ADFS_CLIENT, "client_secret": DEFAULT_ADFS_SECRET,
                    "authority_host": self.authority_host, "ca_bundle": self.ca_path}
        return {"url": self.env_url, "edition": "FinOpsOnline", "tenant_id": self.tenant_id,
                "client_id": self.client_id, "client_secret": self.client_secret,
                "authority_host": self.authority_host, "ca_bundle": self.ca_path}

    @property
    def adfs_token_requests(self) -> int:
        return self.adfs.token_requests if self.adfs is not None else 0

    def register_app(self, client_id: str, secret: str = DEFAULT_SECRET, *, registered_in_finops: bool = True,
                     **more: Any) -> App:
        """An Entra app; ``registered_in_finops=False``: it gets tokens but is missing from
        System administration > Setup > Microsoft Entra applications."""
        return self.entra.register_app(client_id, secret, application_user=registered_in_finops, **more)

    # ------------------------------------------------------------ data API
    def rows(self, entity_set: str) -> list[dict]:
        return list(self.store.entities[entity_set].rows.values())

    def upsert(self, entity_set: str, values: dict) -> dict:
        return self.store.upsert(entity_set, values)

    def delete(self, entity_set: str, *key: Any) -> None:
        self.store.delete(entity_set, key)
