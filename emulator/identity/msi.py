"""Managed identity token endpoints: App Service (``IDENTITY_ENDPOINT`` + ``X-IDENTITY-HEADER``,
api-version 2019-08-01) and IMDS (``/metadata/identity/oauth2/token`` + ``Metadata: true``)."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .entra import App


class ManagedIdentity:
    """The managed-identity endpoints of :class:`~emulator.identity.entra.Entra`."""

    # provided by Entra
    msi_header: str
    system_identity: App
    user_identities: dict[str, App]
    token_lifetime: int

    def error(self, code: int, **fmt: object) -> tuple[int, dict]:
        raise NotImplementedError

    def resource(self, uri: str) -> str | None:
        raise NotImplementedError

    def issue(self, app: App, lifetime: int | None = None, audience: str | None = None,
              user: bool = False) -> str:
        raise NotImplementedError

    def managed_identity(self, path: str, query: dict[str, str],
                         headers: dict[str, str]) -> tuple[int, dict]:
        """App Service (``IDENTITY_ENDPOINT`` + ``X-IDENTITY-HEADER``, api-version 2019-08-01)
        and IMDS (``/metadata/identity/oauth2/token`` + ``Metadata: true``) token endpoints."""
        app_service = path == "/msi/token"
        if app_service:
            if headers.get("x-identity-header") != self.msi_header:
                return 401, {"statusCode": 401, "message": "Unauthorized: the X-IDENTITY-HEADER is missing or wrong."}
        elif headers.get("metadata", "").lower() != "true":
            return 400, {"error": "invalid_request", "error_description": "Required metadata header not specified"}
        wanted = query.get("client_id")
        identity = self.user_identities.get(wanted.lower()) if wanted else self.system_identity
        if identity is None:
            if app_service:
                return 400, {"statusCode": 400, "message": "No User Assigned or Delegated Managed "
                             "Identity found for specified ClientId/ResourceId/PrincipalId.",
                             "correlationId": str(uuid.uuid4())}
            return 400, {"error": "invalid_request", "error_description": "Identity not found"}
        resource = query.get("resource", "").rstrip("/")
        audience = self.resource(resource)
        if audience is None:
            _status, body = self.error(500011, resource=resource, tenant=identity.tenant_id)
            if app_service:
                return 500, {"statusCode": 500, "message": body["error_description"].splitlines()[0],
                             "correlationId": body["correlation_id"]}
            return 400, body
        lifetime = int(self.token_lifetime)
        token = self.issue(identity, lifetime, audience)
        expires_on = str(int(time.time()) + lifetime)
        if app_service:
            return 200, {"access_token": token, "expires_on": expires_on, "resource": resource,
                         "token_type": "Bearer", "client_id": identity.client_id}
        return 200, {"access_token": token, "refresh_token": "", "expires_in": str(lifetime),
                     "expires_on": expires_on, "not_before": str(int(time.time())),
                     "resource": resource, "token_type": "Bearer"}

    # ---------------------------------------------------------- routing of the above
