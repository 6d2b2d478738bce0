"""The Microsoft Graph setting group (``edition`` Office365): which Graph, which extras, which window.

``url`` is the Graph origin, by default the Graph host of ``azure_environment``'s cloud (see
:mod:`tap_dynamics.config.clouds`); requests go to ``<url>/v1.0``. Tokens are for the Graph host
itself (scope ``<url>/.default``), so the sign-in settings are the same as Dataverse's.

Properties that need an extra licence or permission are opt-in (``opt_in_properties``): asked
for only when named, so that a tenant without them is not a run that fails. The calendar window
of the ``events`` stream is fixed into each mailbox's delta token, so it is a setting of its own.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from singer_sdk import typing as th

from tap_dynamics.config.auth import ON_PREMISES_AUTH_SCHEMES
from tap_dynamics.config.resource import Resource
from tap_dynamics.config.values import https_origin

GRAPH_API_VERSION = "v1.0"
EXAMPLE_GRAPH_URL = "https://graph.microsoft.com"
# "stream.property" -> what it needs beyond the stream's own permission (README lists them).
OPT_IN_PROPERTIES: dict[str, str] = {
    "users.signInActivity": (
        "AuditLog.Read.All and a Microsoft Entra ID P1/P2 licence; users are then read in full "
        "each run (users/delta cannot return it), at most 500 per page"
    ),
}
DEFAULT_EVENTS_DAYS_BACK = 365
DEFAULT_EVENTS_DAYS_FORWARD = 180

GRAPH_PROPERTIES = th.PropertiesList(
    th.Property(
        "opt_in_properties",
        th.ArrayType(th.StringType(allowed_values=list(OPT_IN_PROPERTIES))),
        title="Opt-in properties (Office365)",
        description=(
            "Microsoft Graph properties that need an extra licence or permission, as "
            "stream.property: users.signInActivity (AuditLog.Read.All and Entra ID P1/P2; users "
            "are then read in full, 500 per page). Default: none"
        ),
    ),
    th.Property(
        "events_window_days_back",
        th.IntegerType(minimum=0, maximum=3650),
        default=DEFAULT_EVENTS_DAYS_BACK,
        title="Events window, days back (Office365)",
        description="The events stream reads calendar events from this many days before the first sync (default 365)",
    ),
    th.Property(
        "events_window_days_forward",
        th.IntegerType(minimum=1, maximum=3650),
        default=DEFAULT_EVENTS_DAYS_FORWARD,
        title="Events window, days forward (Office365)",
        description="…and up to this many days after it (default 180)",
    ),
).to_dict()["properties"]

GRAPH_RULES: list[dict[str, t.Any]] = [
    {
        "properties": {
            "auth_scheme": {
                "not": {"enum": list(ON_PREMISES_AUTH_SCHEMES)},
                "x-error": (
                    "setting 'auth_scheme' is {auth_scheme}, an on-premises sign-in, but edition is "
                    "Office365 — Microsoft Graph signs in through Entra ID: use AzureServicePrincipal "
                    "(an app registration with Graph application permissions), AzureAD or AzureMSI"
                ),
            },
            "allow_http": {
                "const": False,
                "x-error": "setting 'allow_http' is only for on-premises servers — remove it for Office365",
            },
        },
    },
]


@dataclass(frozen=True)
class GraphSettings:
    """Where Microsoft Graph is, and what the Graph streams read beyond the defaults."""

    url: str  # https://graph.microsoft.com (or the cloud's / a test's Graph origin)
    opt_in: frozenset[str] = frozenset()
    events_days_back: int = DEFAULT_EVENTS_DAYS_BACK
    events_days_forward: int = DEFAULT_EVENTS_DAYS_FORWARD

    @property
    def api_base(self) -> str:
        """The Graph v1.0 root every request goes to."""
        return f"{self.url}/{GRAPH_API_VERSION}"

    @property
    def resource(self) -> Resource:
        """Tokens are for the Graph host; a user's token asks for the consented scopes (.default)."""
        return Resource(
            self.url,
            service="Microsoft Graph",
            wrong_resource=(
                f"{self.url} is not the Microsoft Graph of the tenant's cloud — set azure_environment "
                "to the tenant's cloud (GLOBAL, USGOVT, USGOVTDOD, CHINA) and remove url, or set url "
                "to that cloud's Graph host"
            ),
        )

    def wants(self, stream: str, prop: str) -> bool:
        """Whether the opt-in property ``stream.prop`` was asked for."""
        return f"{stream}.{prop}" in self.opt_in


def load_graph(config: t.Mapping[str, t.Any]) -> GraphSettings:
    """The Graph group from a schema-checked ``config`` (``url`` was defaulted from the cloud)."""
    return GraphSettings(
        url=https_origin("url", str(config["url"]), EXAMPLE_GRAPH_URL),
        opt_in=frozenset(config.get("opt_in_properties") or ()),
        events_days_back=int(config.get("events_window_days_back", DEFAULT_EVENTS_DAYS_BACK)),
        events_days_forward=int(config.get("events_window_days_forward", DEFAULT_EVENTS_DAYS_FORWARD)),
    )


__all__ = ["GRAPH_PROPERTIES", "GRAPH_RULES", "OPT_IN_PROPERTIES", "GraphSettings", "load_graph"]
