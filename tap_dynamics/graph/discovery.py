"""Graph discovery: which streams a run has, from the settings or the input catalog.

The streams are fixed (tap_dynamics/graph/resources.py) and their schemas are Graph v1.0's
(tap_dynamics/graph/schemas.py), so discovery makes no request. ``entities`` and
``exclude_entities`` pick streams by name (globs allowed), as they pick Dataverse tables.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import typing as t

from tap_dynamics.errors import ConfigError
from tap_dynamics.graph.events import EventsStream
from tap_dynamics.graph.resources import BY_STREAM, RESOURCES
from tap_dynamics.graph.streams import (
    DirectoryStream,
    GraphStream,
    GroupMembersStream,
    stream_schema,
)

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from singer_sdk import Stream

    from tap_dynamics.config import Settings
    from tap_dynamics.engine.run import RunContext
    from tap_dynamics.graph.client import GraphClient
    from tap_dynamics.graph.resources import GraphResource

LOGGER = logging.getLogger("tap-dynamics")
_CLASSES: dict[str, type[GraphStream]] = {"group_members": GroupMembersStream, "events": EventsStream}


def select_streams(patterns: Sequence[str] | None, exclude: Sequence[str] = ()) -> list[GraphResource]:
    """The resources ``entities`` names (all by default) minus ``exclude_entities``; a name that
    matches no stream is an error, so that a typo does not give an empty catalog."""
    names = [resource.stream for resource in RESOURCES]
    chosen: list[str] = []
    for pattern in patterns or ["*"]:
        matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.6)
            hint = f" (similar: {', '.join(close)})" if close else f" (streams: {', '.join(names)})"
            msg = f"setting 'entities' names {pattern!r}, which is no Microsoft Graph stream{hint}"
            raise ConfigError(msg)
        chosen += [name for name in matched if name not in chosen]
    return [BY_STREAM[name] for name in chosen if not any(fnmatch.fnmatchcase(name, p) for p in exclude)]


def build_stream(tap: t.Any, client: GraphClient, run: RunContext, resource: GraphResource,
                 schema: dict[str, t.Any]) -> GraphStream:
    """The stream object of one resource."""
    cls = _CLASSES.get(resource.stream, DirectoryStream)
    return cls(tap, client=client, run=run, resource=resource, schema=schema)


def discover_streams(
    tap: t.Any, settings: Settings, client: GraphClient, run: RunContext, input_catalog: t.Any
) -> list[Stream]:
    """One stream per chosen resource: from the input catalog when given (its schemas trusted)."""
    if input_catalog is not None:
        streams: list[Stream] = []
        for entry in input_catalog.streams:
            resource = BY_STREAM.get(entry.tap_stream_id)
            if resource is None:
                LOGGER.warning("Catalog stream %s is not a Microsoft Graph stream; skipping it", entry.tap_stream_id)
                continue
            streams.append(build_stream(tap, client, run, resource, entry.schema.to_dict()))
        return streams
    return [
        build_stream(tap, client, run, resource, stream_schema(resource, settings))
        for resource in select_streams(settings.entities, settings.exclude_entities)
    ]


__all__ = ["build_stream", "discover_streams", "select_streams"]
