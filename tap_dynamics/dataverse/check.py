"""Dataverse's ``check``: will a sync work? (``tap-dynamics check`` and the SDK's ``--test``).

In the order in which things go wrong in practice: is the URL a reachable Dynamics org at all (an
unauthenticated request must get Dataverse's ``401`` with a ``Bearer authorization_uri=…``
challenge), does the credential get a token, does the environment accept it (``WhoAmI``; the
organisation's name when the identity may read it), and which of the tables a sync would read can
the identity read (one ``$top=1`` probe per table).
"""

from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass

import requests

from tap_dynamics.auth import build_token_provider
from tap_dynamics.auth.negotiate import offered
from tap_dynamics.checks import TableAccess, service_answers, verdict
from tap_dynamics.checks import probe_tables as probe_all
from tap_dynamics.config.auth import WINDOWS_SCHEMES
from tap_dynamics.dataverse.client import DataverseClient
from tap_dynamics.dataverse.discovery import metadata_guard
from tap_dynamics.dataverse.metadata import list_entities, select_entities
from tap_dynamics.engine.retry import CHECK_ATTEMPTS
from tap_dynamics.errors import ConnectionProblem, ServiceError, ServiceUnavailable, cannot_reach

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from tap_dynamics.auth import TokenProvider
    from tap_dynamics.config import Settings

LOGGER = logging.getLogger("tap-dynamics")


def probe_org(settings: Settings, base: str | None = None) -> None:
    """Make sure ``url`` is a reachable Dynamics org before any credential is used.

    Dataverse answers an unauthenticated Web API request with 401 and a ``WWW-Authenticate:
    Bearer authorization_uri=…`` challenge; anything else means the URL is not an org.
    ``base``: another root to ask (on-premises, the OData v2 endpoint every version has).
    """
    base = base or settings.api_base
    target = f"{base}/"
    try:
        response = requests.get(
            target,
            headers={"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"},
            timeout=min(settings.request_timeout, 30),
            verify=settings.verify,
            allow_redirects=False,
        )
    except requests.exceptions.SSLError:
        msg = (
            f"TLS verification failed for {settings.url} — if a proxy inspects TLS, set ca_bundle "
            "to a PEM file with its CA certificate"
        )
        raise ConnectionProblem(msg) from None
    except requests.exceptions.RequestException as exc:
        raise cannot_reach(settings.url, type(exc).__name__) from None
    challenge = response.headers.get("WWW-Authenticate", "")
    if settings.on_premises and settings.auth_scheme in WINDOWS_SCHEMES:
        # An Active Directory deployment challenges with Negotiate (and NTLM) instead of Bearer;
        # which of them the account can use is the credential's to say after its handshake.
        if response.status_code != 401 or not offered(challenge) & {"ntlm", "negotiate"}:
            msg = (
                f"{settings.url} does not look like an on-premises Dynamics server with Windows "
                f"sign-in (HTTP {response.status_code} without an NTLM/Negotiate challenge at "
                f"{base}/) — set url to the organization's URL, e.g. "
                "https://crm.contoso.com/contoso, and check api_version"
            )
            raise ConnectionProblem(msg)
        return
    if response.status_code != 401 or "bearer" not in challenge.lower() or "authorization_uri" not in challenge:
        msg = (
            f"{settings.url} does not look like a Dynamics 365 / Dataverse org (HTTP "
            f"{response.status_code} without a Bearer challenge at /api/data/) — set url to the "
            "org URL exactly as the browser shows it, e.g. https://myorg.crm4.dynamics.com"
        )
        raise ConnectionProblem(msg)


def _org_name(client: DataverseClient, whoami: dict[str, t.Any]) -> str:
    """The organisation's name, or its id from ``WhoAmI`` when ``organizations`` is not readable.

    An application user whose role lacks Read on ``organization`` is common and does not stop a
    sync, so a 4xx here is not a failed connection.
    """
    org_id = whoami.get("OrganizationId")
    fallback = f"organization {org_id}" if org_id else "(unnamed organisation)"
    try:
        orgs, _ = client.get_json(client.url("organizations", {"$select": "name"}))
    except ServiceUnavailable:
        raise
    except ServiceError as exc:
        LOGGER.info("Cannot read the organization's name (%s); naming it by its id", exc)
        return fallback
    values = orgs.get("value") if isinstance(orgs, dict) else None
    first = values[0] if isinstance(values, list) and values and isinstance(values[0], dict) else {}
    name = first.get("name")
    return name if isinstance(name, str) and name else fallback


def probe_tables(client: DataverseClient, settings: Settings) -> TableAccess:
    """Read one key of one row of every configured table, ``max_concurrency`` at a time.

    The tables are the ones a sync without ``--catalog`` would read (``entities`` and
    ``exclude_entities`` resolved against the org's tables, as discovery does).
    ``$select=<key>&$top=1`` costs Dataverse next to nothing, yet needs the same Read
    privilege as the sync.
    """
    entities = select_entities(
        metadata_guard(list_entities, client), settings.entities, settings.exclude_entities
    )
    probes = [(e.logical_name, client.url(e.entity_set, {"$select": e.primary_id, "$top": "1"})) for e in entities]
    return read_probes(client, settings, probes)


def read_probes(client: DataverseClient, settings: Settings, probes: list[tuple[str, str]]) -> TableAccess:
    """GET each (table, url) of ``probes``, ``max_concurrency`` at a time: what could be read
    (a 403 is PrivilegeDenied, 0x80040220, "is missing prvRead…")."""

    def probe(table_url: tuple[str, str]) -> None:
        table, url = table_url
        client.get_json(url, table=table)

    return probe_all(probes, probe, lambda table_url: table_url[0], settings.max_concurrency)


@dataclass(frozen=True)
class Findings:
    """What a check found out: the organisation's name, the user's id (if known), the tables,
    and which endpoint it read (said after the URL, when a server has two)."""

    name: str
    user_id: str | None
    access: TableAccess
    where: str = ""


def check_client(settings: Settings, tokens: TokenProvider | None) -> DataverseClient:
    """The check's own client: its short retry budget must not become the sync's."""
    client = DataverseClient(settings, tokens or build_token_provider(settings))
    client.MAX_ATTEMPTS = CHECK_ATTEMPTS
    return client


def web_api_findings(client: DataverseClient, settings: Settings) -> Findings:
    """``WhoAmI``, the organisation's name, the tables (the Web API's way)."""
    whoami, _ = client.get_json(client.url("WhoAmI"))
    if not isinstance(whoami, dict):
        whoami = {}
    user_id = whoami.get("UserId")
    return Findings(_org_name(client, whoami), str(user_id) if user_id else None, probe_tables(client, settings))


def report(settings: Settings, tokens: TokenProvider, find: Callable[[], Findings]) -> str:
    """Run ``find`` and return the success line; raise a one-line error otherwise."""
    with service_answers():  # a 4xx or a redirect: a person must change something
        found = find()
    suffix = f", user id {found.user_id}" if found.user_id else ""
    line = f"{found.name} ({settings.url}{found.where}) as {tokens.identity()}{suffix}; {found.access.describe()}"
    return verdict(line, found.access)


def connection_check(settings: Settings, tokens: TokenProvider | None = None) -> str:
    """Run the whole check and return the success line; raise a one-line error otherwise.

    ``tokens``: the token provider of a run (``--test``), so that the check costs no extra
    sign-in. The check gets its own client either way: its short retry budget must not become
    the sync's.
    """
    probe_org(settings)
    client = check_client(settings, tokens)
    return report(settings, client.tokens, lambda: web_api_findings(client, settings))
