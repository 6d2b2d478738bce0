"""Credentials: one per run, for one explicit resource, chosen by ``auth_scheme``.

* :mod:`~tap_dynamics.auth.base`: the :class:`TokenProvider` protocol the transport calls;
* :mod:`~tap_dynamics.auth.entra`: Entra ID applications (client secret or certificate) and
  managed identities; :mod:`~tap_dynamics.auth.delegated`: a signed-in user (and ``login``);
* :mod:`~tap_dynamics.auth.windows`: Windows (NTLM) sign-in, locked to the org's origin, and
  :mod:`~tap_dynamics.auth.kerberos`: Windows (Kerberos) sign-in, with what both share in
  :mod:`~tap_dynamics.auth.negotiate`;
  :mod:`~tap_dynamics.auth.adfs`: an AD FS server application;
* :mod:`~tap_dynamics.auth.guidance`: Entra ID's error numbers as one-line fixes.

:data:`SCHEMES` is the registry: a new scheme is one entry (its settings class from
:mod:`tap_dynamics.config.auth` and its credential class), and a new service asks
:func:`build_credential` for a token for its own :class:`~tap_dynamics.config.auth.Resource`.
"""

from __future__ import annotations

import importlib
import typing as t
from collections.abc import Iterator, Mapping

from tap_dynamics.auth.base import BearerCredential, TokenProvider
from tap_dynamics.auth.entra import ManagedIdentityCredential, ServicePrincipalCredential
from tap_dynamics.config.auth import (
    AdfsAuth,
    AuthSettings,
    DelegatedAuth,
    KerberosAuth,
    ManagedIdentityAuth,
    ServicePrincipalAuth,
    WindowsAuth,
)
from tap_dynamics.config.resource import Resource
from tap_dynamics.engine import override
from tap_dynamics.errors import AuthError

if t.TYPE_CHECKING:
    from tap_dynamics.config.common import HttpOptions
    from tap_dynamics.config.settings import Settings

# A credential class, called with (settings of its scheme's class, HTTP options, resource).
CredentialClass = t.Callable[[t.Any, "HttpOptions", Resource], TokenProvider]


class _Schemes(Mapping[str, tuple[type, CredentialClass]]):
    """auth_scheme -> (its settings class, its credential class), each credential's module
    imported when its scheme is first looked up.

    Why: every run imports this package, but uses one scheme. NTLM's module pulls in ``spnego``
    and ``requests_ntlm``, the signed-in user's ``msal_extensions``: together about 35 ms of CPU
    at the start of every run (a sync of 200k rows takes about two seconds).
    """

    def __init__(self, entries: dict[str, tuple[type, str, str]]) -> None:
        self._entries = entries  # scheme -> (settings class, module, class name)

    @override
    def __getitem__(self, scheme: str) -> tuple[type, CredentialClass]:
        settings_class, module, name = self._entries[scheme]
        return settings_class, getattr(importlib.import_module(module), name)

    @override
    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    @override
    def __len__(self) -> int:
        return len(self._entries)


SCHEMES: Mapping[str, tuple[type, CredentialClass]] = _Schemes({
    ServicePrincipalAuth.scheme: (ServicePrincipalAuth, "tap_dynamics.auth.entra", "ServicePrincipalCredential"),
    DelegatedAuth.scheme: (DelegatedAuth, "tap_dynamics.auth.delegated", "DelegatedCredential"),
    ManagedIdentityAuth.scheme: (ManagedIdentityAuth, "tap_dynamics.auth.entra", "ManagedIdentityCredential"),
    WindowsAuth.scheme: (WindowsAuth, "tap_dynamics.auth.windows", "WindowsCredential"),
    KerberosAuth.scheme: (KerberosAuth, "tap_dynamics.auth.kerberos", "KerberosCredential"),
    AdfsAuth.scheme: (AdfsAuth, "tap_dynamics.auth.adfs", "AdfsCredential"),
})


def build_credential(auth: AuthSettings, http: HttpOptions, resource: Resource) -> TokenProvider:
    """The credential of ``auth``'s scheme, for tokens (or sign-ins) to ``resource``."""
    entry = SCHEMES.get(auth.scheme)
    if entry is None or not isinstance(auth, entry[0]):
        msg = f"auth_scheme {auth.scheme!r} is not supported"
        raise AuthError(msg)
    return entry[1](auth, http, resource)


def sign_in(settings: Settings, *, device_code: bool) -> str:
    """``tap-dynamics login`` (see :func:`tap_dynamics.auth.delegated.sign_in`)."""
    from tap_dynamics.auth.delegated import sign_in as delegated_sign_in  # see _Schemes

    return delegated_sign_in(settings, device_code=device_code)


def build_token_provider(settings: Settings, resource: Resource | None = None) -> TokenProvider:
    """The run's credential: for ``resource``, by default the configured system's."""
    return build_credential(settings.auth, settings.http, resource or settings.resource)


__all__ = [
    "SCHEMES",
    "BearerCredential",
    "ManagedIdentityCredential",
    "ServicePrincipalCredential",
    "TokenProvider",
    "build_credential",
    "build_token_provider",
    "sign_in",
]
