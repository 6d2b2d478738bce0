"""On-premises Dynamics CRM / Dynamics 365 CE (Web API v8.x-9.1) behind Windows authentication.

What differs from the online emulator, as a real Active Directory deployment does it
(reference §3.2/§3.4):

- The organization is in the path: ``{server}/{org}/api/data/v8.2|v9.0|v9.1/``; v9.2 does not
  exist on-premises (404), and nextLinks/contexts carry the ``/{org}`` prefix.
- IIS Windows authentication: an anonymous request gets 401 with two challenges,
  ``WWW-Authenticate: Negotiate`` and ``WWW-Authenticate: NTLM``. The NTLM handshake
  (NEGOTIATE -> 401 CHALLENGE -> AUTHENTICATE) is verified for real with pyspnego's acceptor
  against the configured account and password, and it signs the *TCP connection* in: later
  requests on that keep-alive connection need no Authorization header, and a handshake split
  over two connections fails, as it does against IIS.
- Optionally plain ``http://`` (``tls=False``), for the ``allow_http`` opt-in.
- No service-protection headers (``x-ms-ratelimit-*``), no ``x-ms-service-request-id`` (only
  ``REQ_ID``), no ``TableType``/``IsElasticTable`` on ``EntityMetadata`` [unverified: both
  arrived online with elastic tables, after the last on-premises release], and
  ``RetrieveTotalRecordCount`` is absent on v8.x (404).

- ``auth="kerberos"``: Kerberos-only Windows sign-in (NTLM switched off): the only challenge is
  ``WWW-Authenticate: Negotiate``, tickets for the site's service principal are verified with
  its ``keytab`` (``HTTP/<host>``, from a real KDC the caller runs, e.g. ``tests/kdc.py``),
  NTLM tokens are refused. ``auth="negotiate"``: both, as a default IIS in a domain with a
  keytab does (``Negotiate`` takes Kerberos or NTLM, ``NTLM`` takes NTLM).
- ``auth="adfs"``: an internet-facing (claims-based) deployment instead: no Windows challenge,
  but ``WWW-Authenticate: Bearer authorization_uri=…/adfs/oauth2/authorize, resource_id=…`` and
  an AD FS on the same port under the authority host name (``https://localhost:PORT/adfs``):
  ``/adfs/.well-known/openid-configuration`` (no ``/v2.0``, as MSAL expects for AD FS) and
  ``/adfs/oauth2/token/`` for client credentials (secret in the body or Basic), taking the
  resource from ``resource=`` (AD FS 2016) or from the ``scope`` (AD FS 2019). Error texts
  (``MSIS…``) are illustrative [unverified].
- ``server_version`` is the product's newest Web API version: a 9.1 server serves v8.0-v9.1,
  a CRM 2016 one (8.2) v8.0-v8.2 and no virtual tables (they arrived with 9.0); 5.0-7.1 are
  CRM 2011-2015, which have no Web API (``/api/data/`` is IIS's 404).
- Every version serves the OData v2 endpoint ``/{org}/XRMServices/2011/OrganizationData.svc``
  (:class:`~.odata2.OrganizationData`: verbose JSON or ATOM, 50-row pages, v2 literals).
- The Windows account is a user of the organization, as it must be to sign in to CRM at all: a
  ``systemuser`` row whose ``domainname`` is the account (``CONTOSO\\svc-tap``) and whose id is
  the ``UserId`` of ``WhoAmI``. ``read_denied`` names the tables its security role cannot read
  (403 PrivilegeDenied on both endpoints).

    with OnPremEmulator(rows={"account": 100}, tls=False) as emu:
        config = emu.tap_config()   # auth_scheme NTLM, username, password, url with /{org}
    python -m emulator --onprem --onprem-http   # the same, out of process

The pieces: :class:`~.service.OnPremDataverse` (the Web API under the org's mount, behind the
IIS gate), :class:`~emulator.identity.ntlm.WindowsSignIn` (the NTLM handshake, and Kerberos
through :class:`~emulator.identity.kerberos.KerberosAcceptor`) and
:class:`~emulator.identity.adfs.Adfs` (the claims-based alternative).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.service import Service
from ..dataverse.deployment import DataverseHost
from ..identity.adfs import DEFAULT_ADFS_CLIENT, DEFAULT_ADFS_SECRET, Adfs
from ..identity.controls import IdentityControls
from ..identity.kerberos import KerberosAcceptor
from ..identity.ntlm import WindowsSignIn
from .odata2 import OrganizationData
from .service import (
    LEGACY_VERSIONS,
    ON_PREMISES_VERSIONS,
    IisSite,
    OnPremDataverse,
    add_windows_user,
    drop_online_only_tables,
)

DEFAULT_ORG = "contoso"
DEFAULT_USERNAME = "CONTOSO\\svc-tap"
DEFAULT_PASSWORD = "Winter-Pa55word!onprem"
# IIS Windows authentication: NTLM (the default), Kerberos only, both (Negotiate), or AD FS.
AUTH_KINDS = ("ntlm", "kerberos", "negotiate", "adfs")
KERBEROS_HOST = "localhost"  # the host of the site's service principal, HTTP/localhost

__all__ = ["DEFAULT_ADFS_CLIENT", "DEFAULT_ADFS_SECRET", "DEFAULT_ORG", "DEFAULT_PASSWORD",
           "DEFAULT_USERNAME", "LEGACY_VERSIONS", "ON_PREMISES_VERSIONS", "OnPremEmulator"]


class OnPremEmulator(DataverseHost):
    """An on-premises server: Windows (NTLM/Kerberos) sign-in, organization in the path, optional http."""

    service_classes: ClassVar[tuple[type[Service], ...]] = (OrganizationData, OnPremDataverse, Adfs, IisSite)

    def __init__(self, rows: dict[str, int] | None = None, *, org: str = DEFAULT_ORG,
                 username: str = DEFAULT_USERNAME, password: str = DEFAULT_PASSWORD,
                 tls: bool = True, server_version: str = "9.1", auth: str = "ntlm",
                 keytab: str | None = None, **kw: Any):
        super().__init__(rows, tls=tls, **kw)
        if auth not in AUTH_KINDS:
            raise ValueError(f"auth must be one of {AUTH_KINDS}")
        if (auth in ("kerberos", "negotiate")) != (keytab is not None):
            raise ValueError("a keytab (of HTTP/<host>) goes with auth 'kerberos' or 'negotiate', and only there")
        self.keytab = keytab
        if server_version not in {v[1:] for v in ON_PREMISES_VERSIONS} | set(LEGACY_VERSIONS):
            raise ValueError(f"server_version must be one of {ON_PREMISES_VERSIONS} or {LEGACY_VERSIONS}")
        self.auth = auth
        # The product's Web API: a 9.1 server serves v8.0-v9.1, a CRM 2016 (8.2) one v8.0-v8.2.
        self.server_version = server_version
        self.org = org
        self._account = (username, password)
        self.windows: WindowsSignIn | None = None
        self.kerberos: KerberosAcceptor | None = None
        self.adfs: Adfs | None = None
        # No Entra ID on-premises; the token-endpoint fault controls (they act on AD FS) keep
        # the name they have online.
        self.entra = IdentityControls(self)
        self._signin_max_requests: int | None = None
        self.read_denied: set[str] = set()  # tables the Windows account's role lacks Read on

    def build(self) -> None:
        store = self.make_store()
        drop_online_only_tables(store, self.server_version, self._rows_cfg)
        add_windows_user(store, self._account[0])
        if self.keytab is not None:
            # A Kerberos service principal names a host (HTTP/localhost), never an address: the
            # site is served under the host name (the same port), as a domain's IIS is.
            self.server_url = self.server_url.replace("://127.0.0.1:", f"://{KERBEROS_HOST}:")
        self.kerberos = KerberosAcceptor(self.keytab) if self.keytab is not None else None
        self.windows = WindowsSignIn(*self._account, ntlm=self.auth != "kerberos", kerberos=self.kerberos)
        self.windows.max_requests = self._signin_max_requests
        self.org_url = f"{self.server_url}/{self.org}"
        self.base_url = self.org_url
        signin = self.windows if self.auth != "adfs" else None
        if self.auth == "adfs":  # AD FS under the authority host name; no Entra ID on-premises
            self.adfs = Adfs(self)
            self.adfs.register_resource(self.server_url)
        self.dataverse = OnPremDataverse(self, store, f"/{self.org}", self.server_version,
                                         signin=signin, adfs=self.adfs)
        # Before the Web API: its site answers every path under the organization.
        self.organization_data = OrganizationData(self, store, f"/{self.org}", self.dataverse)
        self.register(self.organization_data)
        self.register(self.dataverse)
        if self.adfs is not None:
            self.register(self.adfs)
        if signin is not None:  # IIS authenticates the whole site, not only the organization
            self.register(IisSite(self, signin))

    def stop(self) -> None:
        super().stop()
        if self.windows is not None:
            self.windows.close()

    # ------------------------------------------------------------ accounts
    @property
    def username(self) -> str:
        return self._account[0]

    @property
    def password(self) -> str:
        return self._account[1]

    def set_password(self, password: str) -> None:
        """Change the account's password (signed-in connections stay signed in, as in AD)."""
        self._account = (self._account[0], password)
        if self.windows is not None:
            self.windows.set_password(password)

    @property
    def signin_max_requests(self) -> int | None:
        """A connection's Windows sign-in is forgotten after this many requests (None: never)."""
        return self._signin_max_requests

    @signin_max_requests.setter
    def signin_max_requests(self, requests: int | None) -> None:
        self._signin_max_requests = requests
        if self.windows is not None:
            self.windows.max_requests = requests

    @property
    def user_file(self) -> str | None:
        return self.windows.user_file if self.windows is not None else None

    @property
    def windows_logons(self) -> list[str]:
        return self.windows.windows_logons if self.windows is not None else []

    @property
    def failed_logons(self) -> int:
        return self.windows.failed_logons if self.windows is not None else 0

    @property
    def kerberos_logons(self) -> list[str]:
        """Client principals whose tickets signed a connection in, one entry per connection."""
        return self.kerberos.logons if self.kerberos is not None else []

    @property
    def refused_tickets(self) -> int:
        """Kerberos tickets that did not verify."""
        return self.kerberos.failed if self.kerberos is not None else 0

    @property
    def adfs_token_requests(self) -> int:
        return self.adfs.token_requests if self.adfs is not None else 0

    def tap_config(self) -> dict[str, Any]:
        if self.auth == "adfs":
            config: dict[str, Any] = {"url": self.org_url, "auth_scheme": "ADFS", "crm_version": "CRM2011+",
                                      "authority_host": self.authority_host,
                                      "client_id": DEFAULT_ADFS_CLIENT, "client_secret": DEFAULT_ADFS_SECRET}
        elif self.auth == "kerberos":  # the principal and its password live in the caller's KDC
            config = {"url": self.org_url, "auth_scheme": "Kerberos", "crm_version": "CRM2011+"}
        else:
            config = {"url": self.org_url, "auth_scheme": "NTLM", "crm_version": "CRM2011+",
                      "username": self.username, "password": self.password}
        if self.tls_enabled:
            config["ca_bundle"] = self.ca_path
        else:
            config["allow_http"] = True
        return config
