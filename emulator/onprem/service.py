"""The on-premises Web API: the Dataverse service under the organization's mount, with what
an on-premises server does differently (see the package docstring), and IIS in front of it."""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

import orjson

from ..core.service import NOT_FOUND, Request, Response, Service
from ..dataverse.service import DataverseService, privilege_denied
from ..identity import user_object_id
from ..odata import ODataError

if TYPE_CHECKING:
    from ..core.host import Host
    from ..dataverse.store import Store
    from ..identity.adfs import Adfs
    from ..identity.ntlm import WindowsSignIn

ON_PREMISES_VERSIONS = ("v8.0", "v8.1", "v8.2", "v9.0", "v9.1")
# CRM 2011 (5.0), 2013 (6.x) and 2015 (7.x): no Web API, only OrganizationData.svc (odata2.py).
LEGACY_VERSIONS = ("5.0", "6.0", "6.1", "7.0", "7.1")
ONLINE_ONLY_ENTITY_PROPS = frozenset({"TableType", "IsElasticTable", "IsVirtual"})
# Virtual entities (and the properties describing them) arrived with 9.0.
V9_ENTITY_PROPS = frozenset({"DataProviderId", "DataSourceId", "ExternalName", "ExternalCollectionName"})


class OnPremDataverse(DataverseService):
    """The Web API as an on-premises server serves it (see the package docstring)."""

    prefix = "/"  # the whole organization's site: IIS answers what is not the Web API
    request_version = threading.local()  # the version segment of the request being served

    def __init__(self, host: Host, store: Store, mount: str, server_version: str, *,
                 signin: WindowsSignIn | None, adfs: Adfs | None) -> None:
        super().__init__(host, store, None, mount)
        self.versions = tuple(v for v in ON_PREMISES_VERSIONS if float(v[1:]) <= float(server_version))
        self.signin = signin
        self.adfs = adfs

    @property
    def audience(self) -> str:
        """AD FS tokens are issued for the server (the relying party trust), not the org."""
        return self.host.server_url

    def gate(self, req: Request) -> Response | None:
        """IIS: Windows sign-in first (the whole site), then the served Web API versions."""
        denied = self.signin.gate(req) if self.signin is not None else None
        if denied is not None:
            return denied
        m = re.match(r"^/api/data/(v\d+\.\d+)(?:[/?]|$)", req.path)
        if not m or not self.versions:  # a 2011-2015 server has no Web API application at all
            return NOT_FOUND
        if m.group(1) not in self.versions:
            err = {"error": {"code": "0x8006088a",
                             "message": f"Resource not found for the segment '{m.group(1)}'."}}
            return 404, self.headers(), orjson.dumps(err)
        self.request_version.value = m.group(1)
        return None

    def headers(self, ct: str | None = "application/json; odata.metadata=minimal") -> list[tuple[str, str]]:
        dropped = ("x-ms-ratelimit-", "x-ms-service-request-id")
        out = [(k, v) for k, v in super().headers(ct) if not k.lower().startswith(dropped)]
        if not self.host.tls_enabled:
            out = [(k, v) for k, v in out if k != "Strict-Transport-Security"]
        return out

    def authenticate(self, req: Request) -> Response | None:
        """Windows authentication already happened on the connection (the gate); with AD FS,
        the bearer token must be one the AD FS issued for this server."""
        if self.adfs is not None:
            auth = req.headers.get("authorization", "")
            challenge = [("WWW-Authenticate",
                          f"Bearer authorization_uri={self.host.authority_host}/adfs/oauth2/authorize, "
                          f"resource_id={self.audience}/")]
            client = self.adfs.validate(auth[7:].strip(), self.audience) if auth.lower().startswith("bearer ") else None
            if client is None:
                return 401, self.headers(None) + challenge, b""
            req.user_id = user_object_id(client)
            return None
        if req.user_id is None:
            challenges = self.signin.challenges if self.signin is not None else []
            return 401, self.headers(None) + challenges, b""
        return None

    def check_read(self, req: Request, logical: str, schema: str, otc: int, display: str) -> None:
        """The Windows account's role (``host.read_denied``), or an AD FS application's."""
        if req.principal is None and logical in getattr(self.host, "read_denied", ()):
            raise privilege_denied(req.user_id or "", logical, schema, otc, display)
        super().check_read(req, logical, schema, otc, display)

    def total_count(self, req: Request, base: str, rest: str) -> Response:
        if "/api/data/v8." in base:
            raise ODataError(404, "0x8006088a",
                             "Resource not found for the segment 'RetrieveTotalRecordCount'.")
        return super().total_count(req, base, rest)

    def connection_closed(self, connection_id: str) -> None:
        if self.signin is not None:
            self.signin.connection_closed(connection_id)

    def _project(self, d: dict, select: list[str] | None, allowed: list[str], type_name: str) -> dict:
        if type_name == "EntityMetadata":
            absent = ONLINE_ONLY_ENTITY_PROPS
            if getattr(self.request_version, "value", "").startswith("v8."):
                absent = absent | V9_ENTITY_PROPS
            allowed = [a for a in allowed if a not in absent]
            d = {k: v for k, v in d.items() if k not in absent}
        return DataverseService._project(d, select, allowed, type_name)


def add_windows_user(store: Store, account: str) -> None:
    """The Windows account as the organization's user (``DOMAIN\\user``; its id is WhoAmI's)."""
    name = account.rpartition("\\")[2].partition("@")[0]
    store.insert("systemuser", {"systemuserid": user_object_id(account), "domainname": account,
                                "fullname": name, "firstname": None, "lastname": name,
                                "isdisabled": False, "accessmode": 0})


def drop_online_only_tables(store: Store, server_version: str, rows: dict[str, int]) -> None:
    """No elastic tables on-premises at all, and no virtual tables before 9.0 (asking for rows
    of one is a mistake in the test, not something to skip silently)."""
    absent = {"Elastic"} | ({"Virtual"} if float(server_version) < 9 else set())
    for name in [n for n, td in store.tables.items() if td.table_type in absent]:
        if rows.get(name):
            raise ValueError(f"table {name} ({store.tables[name].table_type}) does not exist on-premises")
        del store.tables[name]
        del store.t[name]


class IisSite(Service):
    """The rest of the web site: Windows sign-in first, then 404 (no such application)."""

    name = "iis"
    prefix = "/"

    def __init__(self, host: Host, signin: WindowsSignIn) -> None:
        super().__init__(host)
        self.signin = signin

    def gate(self, req: Request) -> Response | None:
        return self.signin.gate(req)

    def handle(self, req: Request) -> Response:
        return NOT_FOUND
