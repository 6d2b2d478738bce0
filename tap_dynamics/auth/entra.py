"""Entra ID credentials of an application: a client secret or certificate, or a managed identity.

One credential per run is shared by discovery and every stream, so that MSAL's token cache
serves all of them and a token is only requested when the cached one is within five minutes of
expiry (MSAL's own margin). The MSAL application is built lazily because its constructor does
network I/O (tenant discovery). The signed-in user's credential (``AzureAD``) is in
:mod:`tap_dynamics.auth.delegated`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import typing as t
from urllib.parse import urlsplit

import msal
import requests

from tap_dynamics.auth.base import BearerCredential, evict_access_tokens, unverified_claim
from tap_dynamics.auth.certificates import client_credential
from tap_dynamics.auth.guidance import auth_error_from_response
from tap_dynamics.auth.http import TokenEndpointBusy, VerifyingSession, busy, network_error
from tap_dynamics.config.resource import MICROSOFT_AUTHORITY_HOSTS
from tap_dynamics.engine import override
from tap_dynamics.errors import AuthError, ConnectionProblem

if t.TYPE_CHECKING:
    from tap_dynamics.config.auth import ManagedIdentityAuth, ServicePrincipalAuth
    from tap_dynamics.config.common import HttpOptions
    from tap_dynamics.config.resource import Resource

LOGGER = logging.getLogger("tap-dynamics.auth")


def instance_discovery(authority_host: str) -> bool:
    """Whether MSAL may validate the authority with Microsoft (only for Microsoft's own hosts)."""
    return (urlsplit(authority_host).hostname or "") in MICROSOFT_AUTHORITY_HOSTS


class ConfidentialClient(BearerCredential):
    """The client-credentials flow of an MSAL confidential client, for Entra ID and AD FS alike.

    Subclasses say where the authority is, what the client credential is and how a refusal
    reads; the flow itself (one MSAL app per run, its token cache, retries of an unreachable
    endpoint, ``verify=`` on every call) is shared.
    """

    RETRIES = 4  # for a token endpoint that cannot be reached at all; transient answers go to the client

    def __init__(self, client_id: str, authority_host: str, http: HttpOptions, resource: Resource) -> None:
        super().__init__(http, resource)
        self.client_id = client_id
        self.authority_host = authority_host
        self._lock = threading.Lock()
        self._app: msal.ConfidentialClientApplication | None = None
        self._http = VerifyingSession(http.verify, min(http.timeout, 60))

    @property
    def authority(self) -> str:
        """The authority URL MSAL signs in at."""
        raise NotImplementedError

    def _client_credential(self) -> str | dict[str, t.Any]:
        raise NotImplementedError

    def _fail(self, payload: t.Mapping[str, t.Any]) -> AuthError:
        raise NotImplementedError

    def _build_app(self) -> msal.ConfidentialClientApplication:
        return msal.ConfidentialClientApplication(
            self.client_id,
            client_credential=self._client_credential(),
            authority=self.authority,
            instance_discovery=instance_discovery(self.authority_host),
            http_client=self._http,
        )

    def _acquire(self) -> dict[str, t.Any]:
        delay = 1.0
        for attempt in range(1, self.RETRIES + 1):
            try:
                if self._app is None:
                    self._app = self._build_app()
                return self._app.acquire_token_for_client(
                    scopes=self.resource.app_scopes, **self._token_request_options()
                )
            except ValueError as exc:
                # MSAL raises ValueError when tenant (OIDC) discovery gets a 4xx; the body is
                # Entra's JSON error (e.g. AADSTS90002 for an unknown tenant).
                raise self._fail(discovery_failure(self._http, self.authority, str(exc))) from None
            except (requests.exceptions.SSLError, TokenEndpointBusy) as exc:
                raise network_error(self.authority_host, exc) from None  # busy: the client retries it
            except (requests.exceptions.RequestException, OSError) as exc:
                if attempt == self.RETRIES:
                    raise network_error(self.authority_host, exc) from None
                LOGGER.warning("Token request failed (%s); retrying in %.0f s", type(exc).__name__, delay)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _token_request_options(self) -> dict[str, t.Any]:
        """Extra options of the token request (none for Entra ID)."""
        return {}

    @override
    def token(self) -> str:
        with self._lock:
            result = self._acquire()
        if "access_token" not in result:
            raise self._fail(result)
        return str(result["access_token"])

    @override
    def invalidate(self) -> None:
        with self._lock:
            if self._app is not None:
                # A new cache rather than evict_access_tokens: it holds only this app's tokens,
                # and MSAL's search() skips tokens whose request had extra body fields
                # (ext_cache_key: AD FS's `resource`), so an eviction would leave the rejected
                # AD FS token in place.
                self._app.token_cache = msal.TokenCache()


class ServicePrincipalCredential(ConfidentialClient):
    """auth_scheme AzureServicePrincipal: an app registration's client secret or certificate."""

    def __init__(self, auth: ServicePrincipalAuth, http: HttpOptions, resource: Resource) -> None:
        super().__init__(auth.client_id, auth.authority_host, http, resource)
        self.auth = auth

    @override
    def identity(self) -> str:
        return f"application {self.auth.client_id}"

    @property
    @override
    def authority(self) -> str:
        """The tenant-specific authority URL (never ``common`` for client credentials)."""
        return f"{self.auth.authority_host}/{self.auth.tenant_id}"

    @override
    def _client_credential(self) -> str | dict[str, t.Any]:
        return client_credential(self.auth.client_secret, self.auth.certificate)

    @override
    def _fail(self, payload: t.Mapping[str, t.Any]) -> AuthError:
        return auth_error_from_response(
            payload, client_id=self.auth.client_id, tenant_id=self.auth.tenant_id, url=self.resource.audience,
            wrong_resource=self.resource.wrong_resource,
            permission=self.resource.permission,
        )


def discovery_failure(http: requests.Session, authority: str, text: str) -> dict[str, t.Any]:
    """Entra's own error for a failed tenant discovery.

    MSAL ≥ 1.3x raises ``ValueError('Unable to get authority configuration …')`` without the
    response body, so the body (e.g. AADSTS90002 for an unknown tenant) is fetched once more.
    """
    if "{" not in text:
        try:
            answer = http.get(f"{authority}/v2.0/.well-known/openid-configuration")
            payload = answer.json()
            if isinstance(payload, dict) and payload.get("error"):
                return payload
        except (requests.exceptions.RequestException, ValueError):
            pass
    return _payload_from_discovery_error(text)


def _payload_from_discovery_error(text: str) -> dict[str, t.Any]:
    """Extract Entra's JSON error from MSAL's 'OIDC Discovery failed … Error: {json}' text."""
    start = text.find("{")
    if start >= 0:
        try:
            payload = json.loads(text[start:])
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            return payload
    return {"error": "invalid_request", "error_description": text.splitlines()[0] if text else ""}


class ManagedIdentityCredential(BearerCredential):
    """auth_scheme AzureMSI: the managed identity of the Azure host (VM, App Service, AKS…).

    MSAL's ``ManagedIdentityClient`` finds the local identity endpoint from the environment
    (``IDENTITY_ENDPOINT``/``IDENTITY_HEADER`` on App Service and Functions, IMDS at
    169.254.169.254 on VMs) and caches the token. No secret exists anywhere.
    """

    def __init__(self, auth: ManagedIdentityAuth, http: HttpOptions, resource: Resource) -> None:
        super().__init__(http, resource)
        self.auth = auth
        self._lock = threading.Lock()
        self._cache = msal.TokenCache()
        # A short connect timeout: off Azure, IMDS is an address nobody answers.
        self._http = VerifyingSession(http.verify, (5.0, min(http.timeout, 60)))
        identity: t.Any
        if auth.client_id:
            identity = msal.UserAssignedManagedIdentity(client_id=auth.client_id)
        else:
            identity = msal.SystemAssignedManagedIdentity()
        self._client = msal.ManagedIdentityClient(identity, http_client=self._http, token_cache=self._cache)
        self._app_id: str | None = None

    @override
    def identity(self) -> str:
        who = self._app_id or self.auth.client_id
        return f"managed identity {who}" if who else "the system-assigned managed identity"

    @override
    def token(self) -> str:
        with self._lock:
            try:
                result = self._client.acquire_token_for_client(resource=self.resource.audience)
            except TokenEndpointBusy as exc:
                raise busy(exc) from None
            except (requests.exceptions.RequestException, OSError, ValueError) as exc:
                msg = (
                    f"cannot reach the managed identity endpoint ({type(exc).__name__}) — "
                    "AzureMSI works only on an Azure host (VM, App Service, Functions, AKS) with a "
                    "managed identity turned on; elsewhere use AzureServicePrincipal"
                )
                raise ConnectionProblem(msg) from None
        if "access_token" not in result:
            description = str(result.get("error_description") or result.get("error") or "")
            first = description.strip().splitlines()[0] if description.strip() else "unknown error"
            msg = (
                f"the managed identity endpoint refused a token: {first} — check that the identity "
                "is assigned to this host and, for a user-assigned one, managed_identity_client_id"
            )
            raise AuthError(msg)
        self._app_id = unverified_claim(result["access_token"], "appid") or self._app_id
        return str(result["access_token"])

    @override
    def invalidate(self) -> None:
        with self._lock:
            evict_access_tokens(self._cache)
