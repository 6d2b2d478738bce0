"""Which Microsoft cloud a run signs in to: the documented ``AzureEnvironment`` property.

Each national cloud has its own login host and its own Microsoft Graph host, and a token is
only issued for a resource of the cloud it is asked in (``<graph host>/.default``). So
``azure_environment`` (``GLOBAL``, ``USGOVT``, ``USGOVTDOD``, ``CHINA``) sets the default
``authority_host`` for every system, and the default ``url`` for Microsoft Graph; explicit
``authority_host``/``url`` still win. Without it, a Graph URL names its cloud.

A login host and a Graph host of different clouds can never work together (the login host
answers AADSTS500011 for the other cloud's resource), so that mix is refused before any request.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from urllib.parse import urlsplit

from singer_sdk import typing as th

from tap_dynamics.errors import ConfigError


@dataclass(frozen=True)
class Cloud:
    """One national cloud: where its users sign in and where its Microsoft Graph is."""

    login: str  # the default authority host
    graph: str  # the Graph origin
    login_hosts: frozenset[str]  # every login host name of the cloud (aliases included)


_US_LOGIN = frozenset({"login.microsoftonline.us", "login-us.microsoftonline.com", "login.usgovcloudapi.net"})

# https://learn.microsoft.com/graph/deployments (hosts); MSAL's well-known authority hosts.
CLOUDS: dict[str, Cloud] = {
    "GLOBAL": Cloud(
        "https://login.microsoftonline.com",
        "https://graph.microsoft.com",
        frozenset({"login.microsoftonline.com", "login.microsoft.com", "login.windows.net", "sts.windows.net"}),
    ),
    "USGOVT": Cloud("https://login.microsoftonline.us", "https://graph.microsoft.us", _US_LOGIN),
    "USGOVTDOD": Cloud("https://login.microsoftonline.us", "https://dod-graph.microsoft.us", _US_LOGIN),
    "CHINA": Cloud(
        "https://login.chinacloudapi.cn",
        "https://microsoftgraph.chinacloudapi.cn",
        frozenset({"login.chinacloudapi.cn", "login.partner.microsoftonline.cn"}),
    ),
}
DEFAULT_CLOUD = "GLOBAL"
# auth_scheme values that sign in to a Microsoft cloud (NTLM and ADFS sign in on-premises).
CLOUD_AUTH_SCHEMES = ("AzureServicePrincipal", "AzureAD", "AzureMSI")

CLOUD_PROPERTIES = th.PropertiesList(
    th.Property(
        "azure_environment",
        th.StringType,
        allowed_values=list(CLOUDS),
        title="Azure environment",
        description=(
            "The Microsoft cloud of the tenant (the documented AzureEnvironment property): GLOBAL, "
            "USGOVT (GCC High), USGOVTDOD (DoD) or CHINA (21Vianet). Sets the default "
            "authority_host and, for Office365, the default url (the cloud's Microsoft Graph "
            "host); explicit authority_host and url win. Default: the cloud of a Graph url, else "
            "GLOBAL"
        ),
    ),
).to_dict()["properties"]


def url_host(url: t.Any) -> str:
    """The lower-cased host of ``url``; "" for no URL or a malformed one (the setting's own URL
    check names that problem)."""
    if not isinstance(url, str):
        return ""
    try:
        return (urlsplit(url.strip()).hostname or "").lower()
    except ValueError:
        return ""


def cloud_of_graph(url: t.Any) -> str | None:
    """The cloud whose Microsoft Graph host ``url`` is, or None."""
    host = url_host(url)
    return next((name for name, cloud in CLOUDS.items() if url_host(cloud.graph) == host), None)


def cloud_of_login(url: t.Any) -> str | None:
    """The first cloud whose login host ``url`` is (US Government and DoD share theirs), or None."""
    host = url_host(url)
    return next((name for name, cloud in CLOUDS.items() if host in cloud.login_hosts), None)


def _same_login(a: str, b: str) -> bool:
    return CLOUDS[a].login_hosts == CLOUDS[b].login_hosts


def prepare_cloud(config: dict[str, t.Any], *, graph: bool) -> None:
    """Fill ``authority_host`` (and, for Graph, ``url``) from the cloud; refuse a mix of clouds.

    Runs after the connection string is merged and before the schema check, so the defaults
    are visible to every rule.
    """
    given = config.get("azure_environment")
    name = given if isinstance(given, str) and given in CLOUDS else None  # else the schema names it
    graph_cloud = cloud_of_graph(config.get("url")) if graph else None
    if name is not None and graph_cloud is not None and graph_cloud != name:
        msg = (
            f"setting 'url' is {config['url']}, the Microsoft Graph host of the {graph_cloud} cloud, "
            f"but azure_environment is {name} — remove url (it defaults to {CLOUDS[name].graph}) or "
            f"set azure_environment {graph_cloud}"
        )
        raise ConfigError(msg)
    cloud = name or graph_cloud or DEFAULT_CLOUD
    if graph and "url" not in config:
        config["url"] = CLOUDS[cloud].graph
    if config.get("auth_scheme") not in CLOUD_AUTH_SCHEMES:
        return
    login_cloud = cloud_of_login(config.get("authority_host"))
    if "authority_host" not in config:
        config["authority_host"] = CLOUDS[cloud].login
    elif login_cloud is not None and (name is not None or graph_cloud is not None) and not _same_login(login_cloud, cloud):
        what = f"azure_environment is {name}" if name else f"url is the Microsoft Graph host of the {cloud} cloud"
        msg = (
            f"setting 'authority_host' is {config['authority_host']}, the login host of the {login_cloud} "
            f"cloud, but {what} — a tenant signs in to its own cloud only: remove authority_host "
            f"(it defaults to {CLOUDS[cloud].login}) or set azure_environment to the tenant's cloud"
        )
        raise ConfigError(msg)


__all__ = [
    "CLOUDS", "CLOUD_PROPERTIES", "DEFAULT_CLOUD", "Cloud", "cloud_of_graph", "cloud_of_login", "prepare_cloud",
    "url_host",
]
