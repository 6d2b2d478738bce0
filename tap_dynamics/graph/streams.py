"""Directory streams of Microsoft Graph on the engine's strategies.

One :class:`DirectoryStream` per resource (users, groups, devices, applications, service
principals, directory roles, domains, the organization, subscribed SKUs), and
:class:`GroupMembersStream` for memberships. Per stream the method is:

* **delta** (Singer ``LOG_BASED``; the default where Graph has a delta query): the first run
  pages ``<resource>/delta?$select=…`` to its ``@odata.deltaLink``, which is kept whole in the
  state (with the in-flight ``@odata.nextLink``, so a killed run resumes); later runs follow it
  and get only changes. ``@removed`` entries become records carrying the key and
  ``_sdc_deleted_at``. 410 Gone or ``syncStateNotFound`` re-baselines: a full read as a new
  table version closed by ``ACTIVATE_VERSION``.
* **full table** (``FULL_TABLE``; domains, the organization, subscribed SKUs, or when asked in
  ``replication``, or for users with the opt-in ``signInActivity``, which delta cannot return):
  every row each run as a table version closed by ``ACTIVATE_VERSION``.

The strategies are the engine's; this module gives them Graph's URLs, ``Prefer`` header, tombstone
shape (:class:`~tap_dynamics.graph.policy.GraphDelta`) and permissions.
"""

from __future__ import annotations

import typing as t

from tap_dynamics.engine import override
from tap_dynamics.engine.replication import (
    DELETED_AT,
    DELETED_AT_SCHEMA,
    DeltaStrategy,
    FullTableStrategy,
)
from tap_dynamics.engine.stream import FULL_TABLE, PagedStream
from tap_dynamics.errors import ConfigError, ServiceError
from tap_dynamics.graph.policy import GraphDelta, GroupMembersDelta, is_denied, permission_denied
from tap_dynamics.graph.resources import SIGN_IN_ACTIVITY_TOP
from tap_dynamics.graph.schemas import entity_schema

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from singer_sdk.helpers.types import Context

    from tap_dynamics.config import Settings
    from tap_dynamics.engine.pages import Page
    from tap_dynamics.engine.replication import DeltaDialect
    from tap_dynamics.engine.run import RunContext
    from tap_dynamics.graph.client import GraphClient
    from tap_dynamics.graph.resources import GraphResource

DELTA = "delta"
# Graph pages a delta query at most this many objects (Prefer: odata.maxpagesize).
MAX_DELTA_PAGE = 999
_METHODS = {"delta": DELTA, "change_tracking": DELTA, "full_table": FULL_TABLE}


def stream_schema(resource: GraphResource, settings: Settings) -> dict[str, t.Any]:
    """The stream's schema: the entity type's (Graph v1.0 metadata), or the membership row."""
    graph = t.cast("t.Any", settings.service)
    if resource.stream == "group_members":
        text = {"type": ["string", "null"]}
        schema: dict[str, t.Any] = {
            "type": "object",
            "properties": {"group_id": {"type": "string"}, "member_id": {"type": "string"}, "member_type": text},
        }
    else:
        opt_in = [p for p in ("signInActivity",) if graph.wants(resource.stream, p)]
        schema = entity_schema(resource.entity, opt_in)
    if resource.stream == "events":
        schema["properties"] = {"user_id": {"type": "string"}, **schema["properties"]}
    if resource.delta:
        schema["properties"][DELETED_AT] = DELETED_AT_SCHEMA
    return schema


def choose_method(resource: GraphResource, settings: Settings, requested: str | None) -> str:
    """Delta where Graph has it, else full table; ``replication`` may ask for full table."""
    graph = t.cast("t.Any", settings.service)
    sign_ins = graph.wants(resource.stream, "signInActivity")
    if requested is None:
        return DELTA if resource.delta and not sign_ins else FULL_TABLE
    method = _METHODS.get(requested)
    if method is None:
        msg = (
            f"setting 'replication' asks for {requested!r} on stream {resource.stream}; Microsoft Graph "
            "streams take delta or full_table — use one of them, or leave the stream out of replication"
        )
        raise ConfigError(msg)
    if method == DELTA and not resource.delta:
        msg = f"setting 'replication' asks for delta on stream {resource.stream}, which Graph has no delta query for — use full_table"
        raise ConfigError(msg)
    if method == FULL_TABLE and resource.stream == "group_members":
        msg = "setting 'replication' asks for full_table on group_members, which is read through groups/delta only — remove it"
        raise ConfigError(msg)
    if method == DELTA and sign_ins:
        msg = (
            "setting 'replication' asks for delta on users, but opt_in_properties names "
            "users.signInActivity, which users/delta cannot return — remove one of them"
        )
        raise ConfigError(msg)
    return method


class GraphStream(PagedStream):
    """Base of every Graph stream: the engine's paged stream with Graph's resource facts."""

    client: GraphClient
    cursor_reads = False  # Graph filters no collection by a modification time: delta or full

    def __init__(
        self, tap: t.Any, *, client: GraphClient, run: RunContext, resource: GraphResource, schema: dict[str, t.Any]
    ) -> None:
        super().__init__(tap, client=client, run=run, name=resource.stream, schema=schema)
        self.resource = resource
        self.log_based_method = DELTA if resource.delta else None  # where Graph has a delta query
        self.primary_keys = resource.key
        self.STATE_MSG_FREQUENCY = client.settings.page_size
        self.set_method(choose_method(resource, client.settings, client.settings.replication_for(resource.stream)))
        # Whether the read under way is a delta query (set by get_pages; read once per row).
        self._delta_read = False

    @property
    def settings(self) -> Settings:
        """The run's validated settings."""
        return self.client.settings

    @override
    def method_setting(self) -> str | None:
        requested = self.settings.replication_for(self.name)
        return None if requested is None else choose_method(self.resource, self.settings, requested)

    @property
    @override
    def is_sorted(self) -> bool:
        return False

    def selected_columns(self) -> list[str]:
        """Columns for ``$select``: the selected properties of the entity type, and the key."""
        properties = self.schema.get("properties", {})
        return [
            name
            for name in properties
            if name != DELETED_AT and (name == "id" or self.mask.get(("properties", name), True))
        ]

    def delta_prefer(self) -> str:
        """``Prefer`` of a delta query: the page size (Graph pages delta by its own rules)."""
        return f"odata.maxpagesize={min(self.settings.page_size, MAX_DELTA_PAGE)}"

    def list_url(self) -> str:
        """The full read: ``$select`` of the columns, ``$top`` where the collection pages."""
        options = {"$select": ",".join(self.selected_columns())}
        top = self.resource.top
        if top is not None:
            if "signInActivity" in options["$select"].split(","):
                top = SIGN_IN_ACTIVITY_TOP
            options["$top"] = str(min(self.settings.page_size, top))
        return self.client.url(self.resource.path, options)

    def delta_url(self) -> str:
        """The initial delta query; the options travel inside the tokens from then on."""
        return self.client.url(f"{self.resource.path}/delta", {"$select": ",".join(self.selected_columns())})

    def dialect(self) -> DeltaDialect:
        """How this stream's delta pages become records."""
        return GraphDelta()

    @override
    def get_pages(self, context: Context | None) -> Iterator[Page]:
        """The stream's pages by the engine's strategy; a 403 names the missing permission."""
        self.load_state(context)
        self._delta_read = self.method == DELTA
        self.run.summary.stream(self.name).method = "DELTA" if self._delta_read else "FULL_TABLE"
        try:
            if self._delta_read:
                yield from DeltaStrategy(
                    self,
                    self.dialect(),
                    initial_url=self.delta_url,
                    prefer_initial=self.delta_prefer(),
                    prefer_delta=self.delta_prefer(),
                    required=(),
                ).pages()
            else:
                yield from FullTableStrategy(self, prefer=None, required=("id",)).pages(self.list_url())
        except ServiceError as exc:
            if is_denied(exc):
                raise permission_denied(self.name, self.permission, exc, delegated=self.client.delegated) from None
            raise

    @property
    def permission(self) -> str:
        """The application permission(s) this read needs, as the 403 message names them."""
        if "signInActivity" in self.selected_columns():
            return f"{self.resource.permission} and AuditLog.Read.All (for the opt-in signInActivity)"
        return self.resource.permission

    @override
    def post_process(self, row: dict[str, t.Any], context: Context | None = None) -> dict[str, t.Any] | None:
        """Drop OData control keys (``@odata.type``, ``members@delta``); a live row of a delta
        stream says ``_sdc_deleted_at: null`` (an object restored after a soft delete)."""
        for name in [name for name in row if "@" in name]:
            del row[name]
        if self._delta_read and DELETED_AT not in row:
            row[DELETED_AT] = None
        return row


class DirectoryStream(GraphStream):
    """Objects of one directory collection (users, groups, devices …)."""


class GroupMembersStream(GraphStream):
    """Memberships, read from ``groups/delta?$select=id,members`` (``members@delta``).

    Its own delta link, apart from the ``groups`` stream's: the two can be selected, scheduled
    and re-baselined independently.
    """

    @override
    def selected_columns(self) -> list[str]:
        return ["id", "members"]

    @override
    def dialect(self) -> DeltaDialect:
        return GroupMembersDelta()

    @override
    def post_process(self, row: dict[str, t.Any], context: Context | None = None) -> dict[str, t.Any] | None:
        return row


__all__ = ["DELTA", "FULL_TABLE", "DirectoryStream", "GraphStream", "GroupMembersStream", "choose_method", "stream_schema"]
