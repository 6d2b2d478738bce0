"""auth_scheme ADFS: client credentials of an AD FS server application (IFD deployments)."""

from __future__ import annotations

import typing as t

from tap_dynamics.auth.entra import ConfidentialClient
from tap_dynamics.auth.negotiate import warn_if_plain_http
from tap_dynamics.engine import override
from tap_dynamics.errors import AuthError, TapDynamicsError

if t.TYPE_CHECKING:
    from tap_dynamics.config.auth import AdfsAuth
    from tap_dynamics.config.common import HttpOptions
    from tap_dynamics.config.resource import Resource


class AdfsCredential(ConfidentialClient):
    """auth_scheme ADFS: client credentials of an AD FS server application (IFD deployments).

    MSAL treats an authority whose first path segment is ``adfs`` as AD FS: it reads
    ``{host}/adfs/.well-known/openid-configuration`` (no ``/v2.0``) and skips Entra's instance
    discovery. The token request names the org both as ``scope`` (``{url}/.default``, AD FS 2019)
    and as ``resource`` (AD FS 2016 knows only that), so either server version answers. Everything
    else (one MSAL app per run, its token cache, retries of 5xx, ``verify=`` on every call) is
    the Entra ID service principal's (:class:`~tap_dynamics.auth.entra.ConfidentialClient`).
    """

    def __init__(self, auth: AdfsAuth, http: HttpOptions, resource: Resource) -> None:
        super().__init__(auth.client_id, auth.authority_host, http, resource)
        self.auth = auth
        warn_if_plain_http(resource.audience)

    @property
    @override
    def authority(self) -> str:
        """The AD FS authority, ``https://adfs.contoso.com/adfs``."""
        return f"{self.auth.authority_host}/adfs"

    @override
    def identity(self) -> str:
        return f"AD FS application {self.auth.client_id}"

    @override
    def _client_credential(self) -> str | dict[str, t.Any]:
        return self.auth.client_secret

    @override
    def _token_request_options(self) -> dict[str, t.Any]:
        return {"data": {"resource": self.resource.audience}}

    @override
    def _fail(self, payload: t.Mapping[str, t.Any]) -> AuthError:
        error = str(payload.get("error") or "error")
        description = str(payload.get("error_description") or error).strip()
        first = description.splitlines()[0] if description else error
        if error == "invalid_client":
            fix = "check client_id and client_secret of the AD FS server application"
        elif error in ("invalid_resource", "invalid_scope"):
            fix = (
                f"give the AD FS application access to the Dynamics relying party {self.resource.audience} "
                "(AD FS Management > Application Groups > Web API), or check url"
            )
        else:
            fix = "check authority_host (your AD FS server), client_id and client_secret"
        return AuthError(f"AD FS refused a token ({error}): {first} — {fix}")

    @override
    def rejected(self, origin: str) -> TapDynamicsError:
        msg = (
            f"{origin} rejected a fresh AD FS token (401) — check that url is the organization's "
            "internet-facing (IFD) URL and that AD FS issues tokens for it"
        )
        return AuthError(msg)
