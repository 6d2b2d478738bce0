"""Identity providers: Entra ID (with a registry of resources, so that each service accepts
only tokens issued for its own audience), AD FS and Windows (NTLM, Kerberos) sign-in.

Every credential the emulator ever hands out or accepts is added to :data:`ISSUED_SECRETS`,
process-wide: ``tests/taprun.py`` greps every tap run's output for them.
"""

from __future__ import annotations

import base64
import uuid

DEFAULT_TENANT = "11111111-1111-4111-8111-111111111111"
DEFAULT_CLIENT = "22222222-2222-4222-8222-222222222222"
DEFAULT_SECRET = "emulator~secret.0123456789abcdefABCDEF"
DEFAULT_USER = "alex@contoso.onmicrosoft.com"
MSI_CLIENT = "33333333-3333-4333-8333-333333333333"

ISSUED_SECRETS: set[str] = set()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def user_object_id(principal: str) -> str:
    """The stable object id (``systemuserid`` in WhoAmI) of an app, identity or account."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, "user:" + principal))


class Resources:
    """The resources tokens may be issued for (Entra ID: application ID URIs of the tenant's
    service principals; AD FS: relying party trust identifiers), compared as the services
    compare an audience: case-insensitively, without a trailing slash."""

    def __init__(self) -> None:
        self._by_key: dict[str, str] = {}

    def register(self, uri: str) -> str:
        uri = uri.rstrip("/")
        self._by_key[uri.lower()] = uri
        return uri

    def get(self, uri: str) -> str | None:
        """The registered resource ``uri`` names, or None."""
        return self._by_key.get(uri.rstrip("/").lower())

    def first(self) -> str:
        return next(iter(self._by_key.values()))
