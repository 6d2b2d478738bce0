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

import typing as t

from tap_dynamics.auth.adfs import AdfsCredential
from tap_dynamics.auth.base import BearerCredential, TokenProvider
from tap_dynamics.auth.delegated import DelegatedCredential, sign_in
from tap_dynamics.auth.entra import ManagedIdentityCredential, ServicePrincipalCredential
from tap_dynamics.auth.kerberos import KerberosCredential
from tap_dynamics.auth.windows import WindowsCredential
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
from tap_dynamics.errors import AuthError

if t.TYPE_CHECKING:
    from tap_dynamics.config.common import HttpOptions
    from tap_dynamics.config.settings import Settings

# auth_scheme -> (its settings class, its credential class). The credential class is called with
# (settings of that class, HTTP options, resource).
SCHEMES: dict[str, tuple[type, t.Callable[[t.Any, HttpOptions, Resource], TokenProvider]]] = {
    ServicePrincipalAuth.scheme: (ServicePrincipalAuth, ServicePrincipalCredential),
    DelegatedAuth.scheme: (DelegatedAuth, DelegatedCredential),
    ManagedIdentityAuth.scheme: (ManagedIdentityAuth, ManagedIdentityCredential),
    WindowsAuth.scheme: (WindowsAuth, WindowsCredential),
    KerberosAuth.scheme: (KerberosAuth, KerberosCredential),
    AdfsAuth.scheme: (AdfsAuth, AdfsCredential),
}


def build_credential(auth: AuthSettings, http: HttpOptions, resource: Resource) -> TokenProvider:
    """The credential of ``auth``'s scheme, for tokens (or sign-ins) to ``resource``."""
    entry = SCHEMES.get(auth.scheme)
    if entry is None or not isinstance(auth, entry[0]):
        msg = f"auth_scheme {auth.scheme!r} is not supported"
        raise AuthError(msg)
    return entry[1](auth, http, resource)


def build_token_provider(settings: Settings, resource: Resource | None = None) -> TokenProvider:
    """The run's credential: for ``resource``, by default the configured system's."""
    return build_credential(settings.auth, settings.http, resource or settings.resource)


__all__ = [
    "SCHEMES",
    "BearerCredential",
    "DelegatedCredential",
    "KerberosCredential",
    "ManagedIdentityCredential",
    "ServicePrincipalCredential",
    "TokenProvider",
    "build_credential",
    "build_token_provider",
    "sign_in",
]
