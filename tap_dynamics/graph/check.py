"""Graph's ``check``: will a sync work? (``tap-dynamics check`` and the SDK's ``--test``).

A token for the Graph host (the credential's own errors name AADSTS65001 consent, a wrong
resource or a wrong cloud), the tenant's name from ``/organization``, then one cheap probe per
chosen stream (``$select=id&$top=1``) to say which streams the granted permissions (application, or
delegated for a signed-in user) cover, naming the permission each missing one needs.
"""

from __future__ import annotations

import datetime as dt
import typing as t

from tap_dynamics.auth import build_token_provider
from tap_dynamics.checks import probe_tables, service_answers, shown_names, verdict
from tap_dynamics.engine.retry import CHECK_ATTEMPTS
from tap_dynamics.errors import ServiceError, ServiceUnavailable
from tap_dynamics.graph.client import GraphClient
from tap_dynamics.graph.discovery import select_streams
from tap_dynamics.graph.policy import NO_MAILBOX_CODES, is_denied

if t.TYPE_CHECKING:
    from tap_dynamics.auth import TokenProvider
    from tap_dynamics.config import Settings
    from tap_dynamics.graph.resources import GraphResource

ORGANIZATION = "organization"  # the collection that names the tenant, and the stream of it


def _first_id(client: GraphClient, path: str, table: str) -> str | None:
    payload, _ = client.get_json(client.url(path, {"$select": "id", "$top": "1"}), table=table)
    rows = payload.get("value") if isinstance(payload, dict) else None
    return rows[0].get("id") if isinstance(rows, list) and rows and isinstance(rows[0], dict) else None


def probe(client: GraphClient, resource: GraphResource) -> ServiceError | None:
    """Read one id of the stream the way a sync needs to; the error, or None when readable."""
    try:
        if resource.stream == "group_members":
            group = _first_id(client, "groups", resource.stream)
            if group is not None:
                _first_id(client, f"groups/{group}/members", resource.stream)
        elif resource.stream == "events":
            user = _first_id(client, "users", resource.stream)
            if user is not None:
                now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                url = client.url(f"users/{user}/calendarView", {"startDateTime": now, "endDateTime": now, "$top": "1"})
                try:
                    client.get_json(url, table=resource.stream)
                except ServiceError as exc:
                    if exc.code not in NO_MAILBOX_CODES:  # that user has no mailbox: not the permission
                        raise
        else:
            options = {"$select": "id"} if resource.top is None else {"$select": "id", "$top": "1"}
            client.get_json(client.url(resource.path, options), table=resource.stream)
    except ServiceError as exc:
        return exc
    return None


def _tenant_name(client: GraphClient) -> tuple[str, ServiceError | None]:
    """The organization's display name (and id), and the refusal when it is denied: a 403 here
    is only a missing permission, and the ``organization`` stream's probe (the same read)."""
    try:
        payload, _ = client.get_json(client.url(ORGANIZATION, {"$select": "id,displayName"}))
    except ServiceUnavailable:
        raise
    except ServiceError as exc:
        if is_denied(exc):
            return "the tenant (its name needs Organization.Read.All)", exc
        raise
    rows = payload.get("value") if isinstance(payload, dict) else None
    org = rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], dict) else {}
    return f"{org.get('displayName') or 'the tenant'} (tenant {org.get('id') or 'unknown'})", None


def connection_check(settings: Settings, tokens: TokenProvider | None = None) -> str:
    """Run the whole check and return the success line; raise a one-line error otherwise."""
    client = GraphClient(settings, tokens or build_token_provider(settings))
    client.MAX_ATTEMPTS = CHECK_ATTEMPTS
    resources = select_streams(settings.entities, settings.exclude_entities)
    with service_answers():
        name, organization = _tenant_name(client)

        def read(resource: GraphResource) -> None:
            # The organization stream reads what the tenant's name was read from: not asked twice.
            error = organization if resource.stream == ORGANIZATION else probe(client, resource)
            if error is not None:
                raise error

        access = probe_tables(resources, read, lambda r: r.stream, settings.max_concurrency, denied=is_denied)
    permission = {r.stream: r.permission for r in resources}
    line = (
        f"{name} at {settings.url} as {client.tokens.identity()}; the permissions cover {access.readable} of "
        f"{access.total} streams"
    )
    if access.denied:
        missing = ", ".join(f"{stream} ({permission[stream]})" for stream in access.denied)
        kind = "delegated" if client.delegated else "application"
        line += (
            f" — missing {kind} permissions: {missing}; add them under App registrations > your "
            f"app > API permissions > Microsoft Graph > {kind.capitalize()} permissions and grant admin consent"
        )
    if access.failed:
        first = next(iter(access.failed.values()))
        line += f" — could not read: {shown_names(list(access.failed))} (first error: {first})"
    return verdict(line, access)


__all__ = ["connection_check", "probe"]
