"""The Graph resources the tap reads: one stream each, its path, key and permission.

Which application permission each stream needs is part of the resource, because a 403 on a
stream must name it (and ``check`` reports which streams the granted permissions cover).
``Directory.Read.All`` covers every directory stream too; the narrower permissions are named.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GraphResource:
    """One stream of Graph: where it is read from and what reading it needs."""

    stream: str  # the stream name (snake case)
    entity: str  # the microsoft.graph entity type of its rows (schemas.ENTITIES)
    path: str  # the collection, relative to /v1.0
    permission: str  # the least application permission that reads it
    delta: bool  # Graph has a delta query for it
    top: int | None = None  # the most $top the collection accepts (None: it does not page)
    key: tuple[str, ...] = ("id",)


RESOURCES: tuple[GraphResource, ...] = (
    GraphResource("users", "user", "users", "User.Read.All", delta=True, top=999),
    GraphResource("groups", "group", "groups", "Group.Read.All", delta=True, top=999),
    GraphResource(
        "group_members", "group", "groups", "GroupMember.Read.All", delta=True, top=999,
        key=("group_id", "member_id"),
    ),
    GraphResource("devices", "device", "devices", "Device.Read.All", delta=True, top=999),
    GraphResource("applications", "application", "applications", "Application.Read.All", delta=True, top=999),
    GraphResource(
        "service_principals", "servicePrincipal", "servicePrincipals", "Application.Read.All", delta=True, top=999
    ),
    GraphResource(
        "directory_roles", "directoryRole", "directoryRoles", "RoleManagement.Read.Directory", delta=True
    ),
    GraphResource("domains", "domain", "domains", "Domain.Read.All", delta=False),
    GraphResource("organization", "organization", "organization", "Organization.Read.All", delta=False),
    GraphResource("subscribed_skus", "subscribedSku", "subscribedSkus", "Organization.Read.All", delta=False),
    GraphResource(
        "events", "event", "users/{user}/calendarView/delta", "Calendars.Read", delta=True, key=("user_id", "id")
    ),
)
BY_STREAM = {resource.stream: resource for resource in RESOURCES}
# $select=signInActivity caps a users page at 500 rows.
SIGN_IN_ACTIVITY_TOP = 500

__all__ = ["BY_STREAM", "RESOURCES", "SIGN_IN_ACTIVITY_TOP", "GraphResource"]
