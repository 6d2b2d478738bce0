"""The settings every Microsoft system shares: HTTP (trust, timeouts, concurrency) and the run
(which tables, how to replicate them, pages, progress, strictness).

Ranges and types are JSON Schema (``minimum``/``maximum``, item types); what a schema cannot
judge is code here: a CA bundle that must be a readable file (and win over
``REQUESTS_CA_BUNDLE``), an ISO-8601 start date, the per-table replication map.
"""

from __future__ import annotations

import datetime as dt
import os
import typing as t
from dataclasses import dataclass

from singer_sdk import typing as th

from tap_dynamics.errors import ConfigError

MAX_PAGE_SIZE = 5000  # Dataverse's largest page (its rules cap page_size at it)
LARGEST_PAGE_SIZE = 10_000  # any system's (Finance & Operations)
# Date-time bookmarks stay this far behind the server's clock: Dataverse stamps modifiedon when a
# write starts and allows a synchronous plug-in 2 minutes, so a row may become visible that late.
DEFAULT_COMMIT_MARGIN = 300
MAX_COMMIT_MARGIN = 86400

COMMON_PROPERTIES = th.PropertiesList(
    th.Property(
        "ca_bundle",
        th.StringType,
        title="CA bundle",
        description=(
            "Path to a PEM file of trusted CA certificates (e.g. a corporate TLS-inspecting "
            "proxy). Default: REQUESTS_CA_BUNDLE if set, else the system/certifi bundle."
        ),
    ),
    th.Property(
        "start_date",
        th.DateTimeType,
        title="Start date",
        description=(
            "Earliest modifiedon to extract on the first run of an incremental table "
            "(ISO-8601). Default: everything."
        ),
    ),
    th.Property(
        "entities",
        th.ArrayType(th.StringType(min_length=1)),
        title="Tables",
        description=(
            "Logical names of the tables to discover, globs allowed (e.g. [\"account\", "
            "\"new_*\"]). Default: every readable table. Private, virtual, elastic and "
            "intersect tables are only included when named exactly."
        ),
    ),
    th.Property(
        "replication",
        th.ObjectType(additional_properties=th.StringType(min_length=1)),
        title="Replication per table",
        description=(
            "Replication method per table logical name (globs allowed): change_tracking, "
            "full_table, modifiedon, versionnumber, or another date-time column such as "
            "createdon, e.g. {\"audit\": \"createdon\", \"new_*\": \"full_table\"}. Default: change "
            "tracking where the table has it enabled, else modifiedon, else full table."
        ),
    ),
    th.Property(
        "lookback_seconds",
        th.IntegerType(minimum=0, maximum=7 * 24 * 3600),
        default=0,
        title="Lookback seconds",
        description=(
            "Re-read this many seconds before the bookmark of date-time cursors, to catch rows "
            "committed late (duplicates are possible, losses are not)"
        ),
    ),
    th.Property(
        "commit_margin_seconds",
        th.IntegerType(minimum=0, maximum=MAX_COMMIT_MARGIN),
        default=DEFAULT_COMMIT_MARGIN,
        title="Commit margin seconds",
        description=(
            "Date-time cursors never move past the server's time at the start of a read minus "
            "this many seconds, so the next run re-reads that margin and gets rows committed "
            "late (a long transaction, a synchronous plug-in: up to 2 minutes in Dataverse). "
            "Rows already emitted unchanged are not emitted again. 0 turns it off"
        ),
    ),
    th.Property(
        "first_load_windows",
        th.IntegerType(minimum=1, maximum=32),
        default=4,
        title="First-load windows",
        description=(
            "On the first load of a big table with a date-time cursor, read this many "
            "time windows of it concurrently (1 disables)"
        ),
    ),
    th.Property(
        "page_size",
        th.IntegerType(minimum=1, maximum=LARGEST_PAGE_SIZE),
        default=MAX_PAGE_SIZE,
        title="Page size",
        description=(
            "Rows per page requested with Prefer: odata.maxpagesize: 1-5000 for Dataverse "
            "(default 5000), 1-10000 for Finance & Operations (default 10000)"
        ),
    ),
    th.Property(
        "max_concurrency",
        th.IntegerType(minimum=1, maximum=32),
        default=8,
        title="Max concurrency",
        description=(
            "Most HTTP requests in flight at once, across everything the tap does (Dataverse "
            "allows 52 per user; keep well under it)"
        ),
    ),
    th.Property(
        "request_timeout",
        th.IntegerType(minimum=1, maximum=3600),
        default=300,
        title="Request timeout",
        description="Seconds to wait for one HTTP response before retrying it",
    ),
    th.Property(
        "exclude_entities",
        th.ArrayType(th.StringType(min_length=1)),
        title="Excluded tables",
        description=(
            "Logical names of tables to leave out, globs allowed (e.g. [\"msdyn_*\", "
            "\"adx_*\"]); applied after 'entities'"
        ),
    ),
    th.Property(
        "annotations",
        th.BooleanType,
        default=False,
        title="Labels and lookup tables",
        description=(
            "Also extract formatted values (choice labels, lookup display names, formatted "
            "money/dates) as <column>__formatted and lookup target tables as "
            "_<lookup>_value__lookuplogicalname columns"
        ),
    ),
    th.Property(
        "label_languages",
        th.ArrayType(th.IntegerType(minimum=1, maximum=99999)),
        title="Label languages",
        description=(
            "Language codes (LCIDs, e.g. [1033, 1031]) of the labels in option_set_labels. "
            "Default: every language installed in the org"
        ),
    ),
    th.Property(
        "metadata_cache_path",
        th.StringType,
        title="Metadata cache file",
        description=(
            "File where discovered table schemas are cached between runs, so scheduled syncs do "
            "not rediscover. Default: no cache"
        ),
    ),
    th.Property(
        "metadata_cache_ttl",
        th.IntegerType(minimum=0, maximum=365 * 86400),
        default=86400,
        title="Metadata cache TTL",
        description=(
            "Seconds a cached table schema is reused before it is read again (the cache is also "
            "dropped when the org's table list changes)"
        ),
    ),
    th.Property(
        "progress_interval",
        th.NumberType(minimum=0, maximum=86400),
        default=10,
        title="Progress interval",
        description=(
            "Seconds between progress lines on stderr (rows, rate, percent and ETA per running "
            "table); 0 turns them off"
        ),
    ),
    th.Property(
        "strict",
        th.BooleanType,
        default=False,
        title="Strict",
        description=(
            "Stop the run at the first table that fails (403, provider error, retries "
            "exhausted) instead of skipping it with a warning and listing it in the run summary"
        ),
    ),
).to_dict()["properties"]

_TABLES = "setting '{name}' must be a list of table logical names (globs allowed)"
COMMON_MESSAGES: dict[str, dict[str, str]] = {
    "page_size": {  # below 1 (above the system's largest page: the system's own rule names it)
        "minimum": "setting 'page_size' must be from 1 to 5000 (Dataverse) or 10000 (Finance & Operations), got {value}",
    },
    "entities": {"*": _TABLES},
    "exclude_entities": {"*": _TABLES},
    "label_languages": {
        "*": "setting 'label_languages' must be a list of language codes such as [1033, 1031] (got {value!r})",
    },
    "replication": {
        "*": (
            "setting 'replication' must map table names to a method, e.g. "
            '{{"account": "change_tracking", "audit": "createdon"}}'
        ),
    },
    "progress_interval": {
        "*": (
            "setting 'progress_interval' must be a number of seconds from 0 to 86400 (0 = off), "
            "got {value!r}"
        ),
    },
    "start_date": {
        "*": "setting 'start_date' is not an ISO-8601 date-time (got {value!r}) — e.g. 2024-01-01T00:00:00Z",
    },
    "metadata_cache_path": {
        "*": "setting 'metadata_cache_path' must be a file path, e.g. .meltano/tap-dynamics-metadata.json",
    },
}


@dataclass(frozen=True)
class HttpOptions:
    """What every HTTP call (Web API or token endpoint) gets: the trust anchor and a timeout."""

    verify: str | bool  # what requests/MSAL get as `verify=`
    timeout: int


def verify_setting(config: t.Mapping[str, t.Any]) -> str | bool:
    """Pick the CA bundle. The setting wins over REQUESTS_CA_BUNDLE; both must be readable."""
    bundle = config.get("ca_bundle") or os.environ.get("REQUESTS_CA_BUNDLE")
    if not bundle:
        return True
    source = "setting 'ca_bundle'" if config.get("ca_bundle") else "REQUESTS_CA_BUNDLE"
    path = os.path.expanduser(str(bundle))
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        msg = f"{source} points to {bundle!r}, which is not a readable file — fix the path to a PEM CA bundle"
        raise ConfigError(msg)
    return path


def start_date_setting(value: t.Any) -> dt.datetime | None:
    """``start_date`` as an aware UTC datetime (a date alone, or no zone, means UTC)."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        msg = f"setting 'start_date' is not an ISO-8601 date-time (got {value!r}) — e.g. 2024-01-01T00:00:00Z"
        raise ConfigError(msg) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


def names(value: t.Any) -> tuple[str, ...]:
    """A schema-checked list of table names (globs allowed), lower-cased as logical names are."""
    return tuple(name.strip().lower() for name in value or ())


def replication_setting(value: t.Any) -> tuple[tuple[str, str], ...]:
    """The schema-checked per-table replication map, in the order given (globs: first match)."""
    pairs = tuple((k.strip().lower(), v.strip().lower()) for k, v in (value or {}).items())
    if any(not k for k, _v in pairs):
        raise ConfigError(COMMON_MESSAGES["replication"]["*"].format(name="replication", value=value))
    return pairs
