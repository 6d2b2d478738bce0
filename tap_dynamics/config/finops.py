"""The Finance & Operations setting group: which environment, which companies, empty dates.

``url`` is the environment's root as the browser shows it (``https://contoso.operations.dynamics.com``);
the OData service is ``<url>/data`` and tokens are for ``<url>`` (scope ``<url>/.default``).
F&O reads only the caller's default company unless asked for ``cross-company=true``, so
``cross_company`` (default true) reads every company the identity can see and ``companies``
narrows it to a list of ``dataAreaId`` values. F&O writes empty dates as ``1900-01-01``; they
arrive as null unless ``null_sentinel_dates`` is false. Pages may be as large as 10,000 rows.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from urllib.parse import urlsplit

from singer_sdk import typing as th

from tap_dynamics.config.resource import Resource
from tap_dynamics.config.values import checked_url
from tap_dynamics.errors import ConfigError

EXAMPLE_URL = "https://contoso.operations.dynamics.com"
MAX_PAGE_SIZE = 10_000  # F&O's server-driven page size
# What AADSTS65001 (no consent for the F&O environment) tells the user to add.
ERP_PERMISSION = (
    "the Dynamics ERP API permission (Add a permission > Dynamics ERP: application permission "
    "Connector.FullAccess; for delegated sign-in Odata.FullAccess and AX.FullAccess)"
)

FINOPS_PROPERTIES = th.PropertiesList(
    th.Property(
        "cross_company",
        th.BooleanType,
        default=True,
        title="Cross-company (F&O)",
        description=(
            "Finance & Operations: read every company (legal entity, dataAreaId) the identity can "
            "see (cross-company=true). false reads only the identity's default company"
        ),
    ),
    th.Property(
        "companies",
        th.ArrayType(th.StringType(min_length=1, max_length=4)),
        title="Companies (F&O)",
        description=(
            "Finance & Operations: only these companies (dataAreaId values, e.g. [\"usmf\", "
            "\"usrt\"]). Shared entities (without dataAreaId) ignore it. Default: every company"
        ),
    ),
    th.Property(
        "null_sentinel_dates",
        th.BooleanType,
        default=True,
        title="Empty dates as null (F&O)",
        description=(
            "Finance & Operations: emit the empty-date values F&O stores (1900-01-01, "
            "1900-01-01T00:00:00Z, 1900-01-01T12:00:00Z) as null"
        ),
    ),
).to_dict()["properties"]

# Checked only when edition is FinOpsOnline/FinOpsOnPremise (see config/system.for_editions).
FINOPS_RULES: list[dict[str, t.Any]] = [
    {
        "required": ["url"],
        "x-missing": {"url": f"set it to the environment's address as the browser shows it, e.g. {EXAMPLE_URL}"},
    },
    {
        "if": {"properties": {"cross_company": {"const": False}}, "required": ["cross_company", "companies"]},
        "then": {
            "not": {"required": ["companies"]},
            "x-error": (
                "setting 'companies' needs cross_company true: Finance & Operations reads only the "
                "default company without it — remove companies, or set cross_company true"
            ),
        },
    },
]


@dataclass(frozen=True)
class FinOpsSettings:
    """Where the F&O environment is, and how its companies and empty dates are read."""

    url: str  # scheme://host[:port], no trailing slash
    cross_company: bool = True
    companies: tuple[str, ...] | None = None  # dataAreaId values, lower case
    null_sentinel_dates: bool = True
    on_premises: bool = False

    @property
    def api_base(self) -> str:
        """The OData service root: ``<environment>/data``."""
        return f"{self.url}/data"

    @property
    def resource(self) -> Resource:
        """Tokens are for the environment URL (Dynamics ERP permissions, ``/.default``)."""
        return Resource(self.url, permission=ERP_PERMISSION)


def load_finops(config: t.Mapping[str, t.Any]) -> FinOpsSettings:
    """The F&O group from a schema-checked ``config``; the URL's shape is checked here."""
    value = str(config["url"])
    parts = checked_url("url", value, ("https",), EXAMPLE_URL)
    path = parts.path.rstrip("/")
    if path.lower() not in ("", "/data"):  # the root, or the service root pasted in full
        msg = (
            f"setting 'url' must be the environment's root without a path (got {value!r}) — e.g. "
            f"{EXAMPLE_URL}; tap-dynamics appends /data itself"
        )
        raise ConfigError(msg)
    companies = config.get("companies")
    return FinOpsSettings(
        url=f"https://{urlsplit(value).netloc.lower()}",
        cross_company=bool(config.get("cross_company", True)),
        companies=tuple(sorted({c.strip().lower() for c in companies})) if companies else None,
        null_sentinel_dates=bool(config.get("null_sentinel_dates", True)),
        on_premises=config.get("edition") == "FinOpsOnPremise",
    )
