"""The documented Dynamics connection string, turned into tap settings.

People arrive with a connection string from another connector, e.g.
``URL=https://myorg.crm.dynamics.com/;AuthScheme=AzureServicePrincipal;AzureTenant=…;
OAuthClientId=…;OAuthClientSecret=…;CRMVersion=CRMOnline``. Rather than make them translate it by
hand (and get a key wrong), :func:`merge_connection_string` maps each documented property to the
tap setting of the same meaning. Explicit settings always win over the string, so a Meltano
environment can override one part (say the secret, from a vault) without rewriting the rest. An
unknown key is an error listing the valid ones: silently ignoring a typo in ``OAuthClientSecret``
would end in a confusing AADSTS7000218 much later.
"""

from __future__ import annotations

import typing as t

from tap_dynamics.errors import ConfigError

# Documented property (lower-cased, spaces removed) -> tap setting.
CONNECTION_KEYS: dict[str, str] = {
    "url": "url",
    "resource": "url",
    "organizationurl": "url",
    "authscheme": "auth_scheme",
    "azuretenant": "tenant_id",
    "oauthclientid": "client_id",
    "oauthclientsecret": "client_secret",
    "oauthjwtcert": "certificate_path",
    "oauthjwtcerttype": "certificate_type",
    "oauthjwtcertpassword": "certificate_password",
    "callbackurl": "callback_url",
    "initiateoauth": "initiate_oauth",
    "oauthsettingslocation": "token_cache_path",
    "oauthaccesstoken": "access_token",
    "oauthrefreshtoken": "refresh_token",
    "crmversion": "crm_version",
    "edition": "edition",
    "authorityhost": "authority_host",
    "azureenvironment": "azure_environment",
    # On-premises (AuthScheme=NTLM): the Windows account, as the documented drivers name it.
    "user": "username",
    "username": "username",
    "password": "password",
}

# How the keys are spelled in the documents, for the error message.
DOCUMENTED_KEYS = (
    "URL",
    "Resource",
    "AuthScheme",
    "AzureTenant",
    "OAuthClientId",
    "OAuthClientSecret",
    "OAuthJWTCert",
    "OAuthJWTCertType",
    "OAuthJWTCertPassword",
    "CallbackURL",
    "InitiateOAuth",
    "OAuthSettingsLocation",
    "OAuthAccessToken",
    "OAuthRefreshToken",
    "CRMVersion",
    "Edition",
    "AuthorityHost",
    "AzureEnvironment",
    "User",
    "Password",
)


def _split(text: str) -> list[str]:
    """Split on ``;`` outside single or double quotes (values such as paths may contain ``;``)."""
    parts: list[str] = []
    current: list[str] = []
    quote: str | None = None
    for char in text:
        if quote:
            if char == quote:
                quote = None
            else:
                current.append(char)
        elif char in "'\"" and "".join(current).strip().endswith("="):
            quote = char  # a quoted value: ';' inside it is part of the value
        elif char == ";":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quote:
        msg = "setting 'connection_string' has an unclosed quote — close it or remove the quotes"
        raise ConfigError(msg)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_connection_string(text: str) -> dict[str, str]:
    """Parse ``Key=Value;…`` into tap setting names. Keys are case- and space-insensitive."""
    result: dict[str, str] = {}
    for part in _split(text):
        key, sep, value = part.partition("=")
        if not sep:
            msg = (
                f"setting 'connection_string' has a part without '=' ({key.strip()[:40]!r}) — "
                "use Key=Value pairs separated by ';'"
            )
            raise ConfigError(msg)
        normal = "".join(key.split()).lower()
        name = CONNECTION_KEYS.get(normal)
        if name is None:
            msg = (
                f"setting 'connection_string' has an unknown key {key.strip()!r} — valid keys: "
                + ", ".join(DOCUMENTED_KEYS)
            )
            raise ConfigError(msg)
        if name in result and result[name] != value.strip():
            msg = f"setting 'connection_string' gives {key.strip()!r} twice with different values"
            raise ConfigError(msg)
        result[name] = value.strip()
    return result


def merge_connection_string(config: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Return ``config`` with the connection string's values filled in where a setting is unset.

    Also resolves ``resource`` (another platform's name for ``url``): it is used only when ``url``
    is not set, and two different values are an error rather than a guess.
    """
    merged = dict(config)
    explicit = {k for k, v in config.items() if v not in (None, "")}
    if merged.get("resource") not in (None, ""):
        resource = str(merged["resource"]).strip()
        url = merged.get("url")
        if url not in (None, "") and str(url).strip().rstrip("/").lower() != resource.rstrip("/").lower():
            msg = (
                f"settings 'url' ({url}) and 'resource' ({resource}) disagree — they are two names "
                "for the org URL; set only one"
            )
            raise ConfigError(msg)
        merged["url"] = url if url not in (None, "") else resource
        explicit.add("url")
    text = merged.get("connection_string")
    if text in (None, ""):
        return merged
    if not isinstance(text, str):
        msg = "setting 'connection_string' must be a string of Key=Value pairs separated by ';'"
        raise ConfigError(msg)
    for name, value in parse_connection_string(text).items():
        if name not in explicit and value != "":
            merged[name] = value
    return merged
