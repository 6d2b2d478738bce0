"""``check`` (and ``--test``) on an on-premises server: which endpoint, then what it can tell.

The endpoint is decided as a sync decides it (:func:`~tap_dynamics.onprem.odata2.open_client`:
``api_version``, the URL, or the server's answer) and named in the success line, because a
server may have both and the check must test the one the sync will read. A Web API gets the
Web API's check (:mod:`tap_dynamics.dataverse.check`). CRM 2011-2015's OData v2 endpoint has no
functions — no ``WhoAmI`` — only entity sets, so the same questions are asked of those:

- is the server there with the expected sign-in: the unauthenticated challenge of the v2
  endpoint, which every version from 2011 to 9.1 serves (a 2011-2015 server has no
  ``api/data`` to ask);
- who the Windows account is: ``SystemUserSet?$filter=DomainName eq 'CONTOSO\\svc-tap'``
  (its ``SystemUserId``; an AD FS application has no domain name, and a user the role may not
  read is named without an id, as on the Web API);
- the organisation: ``OrganizationSet?$select=Name&$top=1`` (named after the URL's
  organization when its role cannot read it);
- each table a sync would read: ``<Set>?$select=<Key>&$top=1``.

A wrong password fails the first request, once (the sign-in's own rule), with the sign-in's one
line; a 403 on a table is "no read privilege", as on the Web API.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as t

from tap_dynamics.auth import build_token_provider
from tap_dynamics.config.dataverse import ODATA_V2, WEB_API
from tap_dynamics.dataverse.check import Findings, probe_org, read_probes, report, web_api_findings
from tap_dynamics.dataverse.metadata import select_entities
from tap_dynamics.engine.retry import CHECK_ATTEMPTS
from tap_dynamics.errors import ServiceError, ServiceUnavailable
from tap_dynamics.onprem.odata2 import is_odata2, open_client
from tap_dynamics.onprem.v2streams import fetch_tables

if t.TYPE_CHECKING:
    from tap_dynamics.auth import TokenProvider
    from tap_dynamics.config import Settings
    from tap_dynamics.dataverse.client import DataverseClient

LOGGER = logging.getLogger("tap-dynamics")
V2_ENDPOINT = ", OData v2 endpoint"


def onprem_check(settings: Settings, tokens: TokenProvider | None = None) -> str:
    """The check of an on-premises server whose endpoint is the OData v2 one or not yet known."""
    dataverse = settings.dataverse
    v2_base = dataclasses.replace(dataverse, endpoint=ODATA_V2).api_base
    probe_org(settings, None if dataverse.endpoint == WEB_API else v2_base)
    provider = tokens or build_token_provider(settings)

    def find() -> Findings:
        decided, client = open_client(settings, provider, None)
        client.MAX_ATTEMPTS = CHECK_ATTEMPTS
        if is_odata2(client):
            return v2_findings(client, decided)
        found = web_api_findings(client, decided)
        return dataclasses.replace(found, where=f", Web API v{decided.dataverse.api_version}")

    return report(settings, provider, find)


def v2_findings(client: DataverseClient, settings: Settings) -> Findings:
    """The user's id, the organisation's name and the readable tables, from entity sets."""
    user_id = _windows_user_id(client, getattr(settings.auth, "username", None))
    name = _organization_name(client, settings)
    all_tables = fetch_tables(client)
    tables = select_entities([table.entity for table in all_tables], settings.entities, settings.exclude_entities)
    keys = {table.entity.logical_name: table.by_name[table.entity.primary_id].source for table in all_tables}
    probes = [(e.logical_name, client.url(e.entity_set, {"$select": keys[e.logical_name], "$top": "1"}))
              for e in tables]
    return Findings(name, user_id, read_probes(client, settings, probes), V2_ENDPOINT)


def _first(client: DataverseClient, entity_set: str, options: dict[str, str], what: str) -> dict[str, t.Any] | None:
    """The first row of a small query, or None when the role may not read it (a 4xx: not a
    failed connection, as on the Web API). A 401 and a kept-failing service still fail."""
    try:
        payload, _ = client.get_json(client.url(entity_set, {**options, "$top": "1"}))
    except ServiceUnavailable:
        raise
    except ServiceError as exc:
        if exc.status == 401:
            raise
        LOGGER.info("Cannot read %s (%s)", what, exc)
        return None
    body = payload.get("d") if isinstance(payload, dict) else None
    rows = body.get("results") if isinstance(body, dict) else body
    first = rows[0] if isinstance(rows, list) and rows else None
    return first if isinstance(first, dict) else None


def _windows_user_id(client: DataverseClient, account: str | None) -> str | None:
    """``SystemUserId`` of the user whose ``DomainName`` is the Windows account (as configured)."""
    if not account:
        return None
    literal = account.replace("'", "''")
    row = _first(client, "SystemUserSet", {"$select": "SystemUserId", "$filter": f"DomainName eq '{literal}'"},
                 f"the user {account}")
    user_id = row.get("SystemUserId") if row else None
    return str(user_id) if user_id else None


def _organization_name(client: DataverseClient, settings: Settings) -> str:
    """``OrganizationSet``'s name, or the URL's organization when the role cannot read it."""
    row = _first(client, "OrganizationSet", {"$select": "Name"}, "the organization's name")
    name = row.get("Name") if row else None
    if isinstance(name, str) and name:
        return name
    org = settings.dataverse.org_path.strip("/")
    return f"organization {org}" if org else "(unnamed organisation)"


__all__ = ["onprem_check", "v2_findings"]
