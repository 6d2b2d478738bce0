"""The Windows (Active Directory) sign-in settings of an on-premises server: NTLM and Kerberos.

Part of :mod:`tap_dynamics.config.auth` (which composes them into the one ``auth_scheme``
union), kept apart because the two Windows schemes share the account settings and differ in
what else may stand for the password: NTLM needs ``username`` and ``password``; Kerberos signs
in with a password, a keytab, or a ticket that is already in a ticket cache (``kinit``).
"""

from __future__ import annotations

import os
import typing as t
from dataclasses import dataclass, field

from singer_sdk import typing as th

from tap_dynamics.config.values import Explainer
from tap_dynamics.errors import ConfigError

WINDOWS_ACCOUNT_PATTERN = r"^[^\\@\s]+\\[^\\@\s]+$|^[^\\@\s]+@[^\\@\s]+\.[^\\@\s]+$"
# A Kerberos principal: user or service/instance, optionally @REALM (else krb5.conf's default).
KERBEROS_PRINCIPAL_PATTERN = r"^[^\\@\s/]+(/[^\\@\s/]+)?(@[^\\@\s]+)?$"

WINDOWS_PROPERTIES = th.PropertiesList(
    th.Property(
        "username",
        th.StringType,
        title="Username",
        description=(
            "NTLM: the Windows (Active Directory) account the tap signs in as, DOMAIN\\user or "
            "user@domain. Kerberos: the principal, user@REALM (e.g. svc-tap@CONTOSO.COM); "
            "optional with a keytab or a ticket cache"
        ),
    ),
    th.Property(
        "password",
        th.StringType,
        secret=True,
        title="Password",
        description=(
            "NTLM and Kerberos: the password of username (Kerberos: omit it to sign in with "
            "kerberos_keytab or an existing ticket cache)"
        ),
    ),
    th.Property(
        "kerberos_keytab",
        th.StringType,
        title="Kerberos keytab",
        description=(
            "Kerberos only: path of a keytab holding the key of username (or of its first "
            "principal when username is not set), instead of a password"
        ),
    ),
    th.Property(
        "kerberos_ticket_cache",
        th.StringType,
        title="Kerberos ticket cache",
        description=(
            "Kerberos only: the ticket cache to sign in from (e.g. FILE:/tmp/krb5cc_1000, after "
            "kinit); default: KRB5CCNAME, else the system's default cache"
        ),
    ),
).to_dict()["properties"]


def _when(scheme: str, then: dict[str, t.Any]) -> dict[str, t.Any]:
    return {"if": {"properties": {"auth_scheme": {"const": scheme}}, "required": ["auth_scheme"]}, "then": then}


def _refuses(scheme: str, name: str, fix: str) -> dict[str, t.Any]:
    """Under any other scheme than Kerberos, a Kerberos-only setting is a mistake, not ignored."""
    return {
        "not": {"required": [name]},
        "x-error": f"setting '{name}' is set but auth_scheme is {scheme} — {fix}",
    }


_PASSWORD_FIX = (
    "set it to the Windows password of username (e.g. from a secret store through TAP_DYNAMICS_PASSWORD)"
)

WINDOWS_RULES: list[dict[str, t.Any]] = [
    _when(
        "NTLM",
        {
            "required": ["username", "password"],
            "x-missing": {
                "username": "set it to the Windows account the tap signs in as, e.g. CONTOSO\\svc-tap",
                "password": _PASSWORD_FIX,
            },
            "properties": {"username": {"pattern": WINDOWS_ACCOUNT_PATTERN}},
        },
    ),
    _when(
        "Kerberos",
        {
            "properties": {"username": {"pattern": KERBEROS_PRINCIPAL_PATTERN}},
            "allOf": [
                {
                    "if": {"required": ["password"]},
                    "then": {
                        "required": ["username"],
                        "x-missing": {
                            "username": (
                                "a Kerberos password belongs to a principal: set username to "
                                "user@REALM, e.g. svc-tap@CONTOSO.COM"
                            ),
                        },
                    },
                },
                {
                    "not": {"required": ["password", "kerberos_keytab"]},
                    "x-error": (
                        "settings 'password' and 'kerberos_keytab' are both set — Kerberos signs "
                        "in with one of them; remove the other"
                    ),
                },
                {
                    "not": {
                        "required": ["kerberos_ticket_cache"],
                        "anyOf": [{"required": ["password"]}, {"required": ["kerberos_keytab"]}],
                    },
                    "x-error": (
                        "setting 'kerberos_ticket_cache' is set together with a password or "
                        "kerberos_keytab — the tap signs in from the ticket cache only when neither "
                        "is given (and never writes into it); remove one of them"
                    ),
                },
            ],
        },
    ),
    {
        "if": {"not": {"properties": {"auth_scheme": {"const": "Kerberos"}}, "required": ["auth_scheme"]}},
        "then": {
            "allOf": [
                _refuses("{auth_scheme}", name, "it is only for auth_scheme Kerberos; remove it")
                for name in ("kerberos_keytab", "kerberos_ticket_cache")
            ],
        },
    },
]

WINDOWS_MESSAGES: dict[str, dict[str, str]] = {
    "username": {
        "pattern": (
            "setting 'username' is {value!r}: give the Windows account with its domain, as "
            "CONTOSO\\user or user@contoso.com"
        ),
    },
}



def _explain_username(value: t.Any, config: t.Mapping[str, t.Any]) -> str | None:
    if config.get("auth_scheme") != "Kerberos":
        return None  # the NTLM message
    return (
        f"setting 'username' is {value!r}: Kerberos names the account as a principal, "
        "user@REALM (e.g. svc-tap@CONTOSO.COM, the realm in capitals), not DOMAIN\\user"
    )


WINDOWS_EXPLAINERS: dict[str, Explainer] = {"username": _explain_username}


@dataclass(frozen=True)
class WindowsAuth:
    """NTLM: a Windows (Active Directory) account of an on-premises deployment."""

    scheme: t.ClassVar[str] = "NTLM"
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class KerberosAuth:
    """Kerberos: a principal signing in with a password, a keytab, or an existing ticket cache.

    Exactly one of the three: ``password`` (with ``username``), ``keytab``, or neither (the
    ticket cache, ``ticket_cache`` or the default one).
    """

    scheme: t.ClassVar[str] = "Kerberos"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keytab: str | None = None
    ticket_cache: str | None = None

    @property
    def source(self) -> str:
        """Where the credential comes from, for messages (never the password itself)."""
        if self.password is not None:
            return "password"
        if self.keytab is not None:
            return f"keytab {self.keytab}"
        return f"ticket cache {self.ticket_cache}" if self.ticket_cache else "the default ticket cache"


def load_windows(scheme: str, config: t.Mapping[str, t.Any]) -> WindowsAuth | KerberosAuth:
    """The settings of a Windows scheme from a schema-checked ``config``."""
    if scheme == "NTLM":
        return WindowsAuth(username=config["username"], password=config["password"])
    keytab = config.get("kerberos_keytab")
    if keytab is not None:
        keytab = os.path.expanduser(keytab)
        if not os.path.isfile(keytab) or not os.access(keytab, os.R_OK):
            msg = (
                f"setting 'kerberos_keytab' points to {keytab!r}, which is not a readable file — "
                "give the path of the keytab exported for username (ktutil, or ktpass on Windows)"
            )
            raise ConfigError(msg)
    return KerberosAuth(
        username=config.get("username"),
        password=config.get("password"),
        keytab=keytab,
        ticket_cache=config.get("kerberos_ticket_cache"),
    )
