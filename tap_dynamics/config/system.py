"""Which Microsoft system a run reads: the documented ``Edition`` connection property.

People paste the address their browser shows and expect the right system; the documented
connection property ``Edition`` names the product (``Sales``, ``FinOpsOnline``, …). So the
system is the edition's when ``edition`` is set, else the URL host's
(``*.operations.dynamics.com`` is Finance & Operations, ``graph.microsoft.com`` is Microsoft
Graph), else Dataverse. :func:`prepare_system` writes the result back as ``edition`` before the
schema is checked, so each system's rules can branch on it (``if edition in …``).

A system's package registers its name in :mod:`tap_dynamics.systems`; its settings group (a
module beside :mod:`tap_dynamics.config.dataverse`) joins the schema with rules guarded by
:func:`for_editions`.
"""

from __future__ import annotations

import typing as t

from singer_sdk import typing as th

from tap_dynamics.config.clouds import CLOUDS, url_host

DATAVERSE = "dataverse"
FINOPS = "finops"
GRAPH = "graph"

# Documented Edition values -> the system that reads them.
EDITIONS: dict[str, str] = {
    "Sales": DATAVERSE,
    "CustomerService": DATAVERSE,
    "FieldService": DATAVERSE,
    "Marketing": DATAVERSE,
    "ProjectOperations": DATAVERSE,
    "FinOpsOnline": FINOPS,
    "FinOpsOnPremise": FINOPS,
    "Office365": GRAPH,
}
DEFAULT_EDITION = "Sales"

# URL hosts that name their system (suffix match on the lower-cased host).
HOST_SYSTEMS: tuple[tuple[str, str], ...] = (
    (".operations.dynamics.com", FINOPS),  # also *.sandbox.operations.dynamics.com
    (".cloudax.dynamics.com", FINOPS),
    (".operations.dynamics.cn", FINOPS),  # 21Vianet
    (".operations.gov.dynamics.us", FINOPS),  # US Government community cloud
    # every cloud's Microsoft Graph host
    *((url_host(cloud.graph), GRAPH) for cloud in CLOUDS.values()),
)

SYSTEM_PROPERTIES = th.PropertiesList(
    th.Property(
        "edition",
        th.StringType,
        allowed_values=list(EDITIONS),
        title="Edition",
        description=(
            "Which Dynamics product url is (the documented Edition property): Sales, "
            "CustomerService, FieldService, Marketing or ProjectOperations read Dataverse; "
            "FinOpsOnline and FinOpsOnPremise read Finance & Operations; Office365 reads "
            "Microsoft Graph. Default: inferred from url's host, else Dataverse"
        ),
    ),
).to_dict()["properties"]


def editions_of(system: str) -> list[str]:
    """The documented editions a system reads, in declaration order."""
    return [edition for edition, owner in EDITIONS.items() if owner == system]


def inferred_edition(url: t.Any) -> str:
    """The edition a URL's host implies: F&O and Graph hosts name themselves; else Dataverse."""
    host = url_host(url)
    for suffix, system in HOST_SYSTEMS:
        if host == suffix.lstrip(".") or host.endswith(suffix):
            return editions_of(system)[0]
    return DEFAULT_EDITION


def prepare_system(config: dict[str, t.Any]) -> None:
    """Fill ``edition`` from the URL when unset, so that every rule can branch on it."""
    if config.get("edition") in (None, ""):
        config["edition"] = inferred_edition(config.get("url"))


def system_of(config: t.Mapping[str, t.Any]) -> str:
    """The system of a prepared, schema-checked config."""
    return EDITIONS[str(config.get("edition") or DEFAULT_EDITION)]


def for_editions(system: str, rules: list[dict[str, t.Any]]) -> dict[str, t.Any]:
    """``rules`` applied only when the config's edition belongs to ``system``."""
    return {
        "if": {"properties": {"edition": {"enum": editions_of(system)}}, "required": ["edition"]},
        "then": {"allOf": rules},
    }
