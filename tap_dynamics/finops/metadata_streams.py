"""F&O metadata streams: what enum values mean, and which entities there are.

- ``enum_labels``: one row per (enum, member, language) with the member's value and label — what
  analysts join an enum column (``SalesOrderStatus``) to. Members and label ids come from the
  enumerations metadata service (``/Metadata/PublicEnumerations``), the labels from
  ``/Metadata/Labels`` per installed language (the languages F&O answers for).
- ``entity_definitions``: the environment's entity sets as discovered: entity type, key,
  company-specific or shared, the cursor the tap uses.

Opt-in like Dataverse's metadata streams: select them by name.
"""

from __future__ import annotations

import typing as t
from concurrent.futures import ThreadPoolExecutor

from singer_sdk import typing as th

from tap_dynamics.engine import override
from tap_dynamics.engine.stream import OptInStream
from tap_dynamics.errors import ServiceError

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    from singer_sdk.helpers.types import Context

    from tap_dynamics.engine.run import RunContext
    from tap_dynamics.finops.client import FinOpsClient
    from tap_dynamics.finops.metadata import EntityInfo, Metadata

# Languages asked for when reading labels (F&O answers 404 for a language not installed).
LANGUAGES = ("en-us", "de", "fr", "es", "nl", "da", "it", "ja", "zh-hans", "pt-br", "sv", "nb-no", "fi", "pl")


class FinOpsMetadataStream(OptInStream):
    """Base: a fixed-schema, opt-in stream (rows counted for the run summary)."""

    client: FinOpsClient
    stream_name = ""
    key: tuple[str, ...] = ()
    properties: th.PropertiesList

    def __init__(self, tap: t.Any, *, client: FinOpsClient, run: RunContext, entities: list[EntityInfo],
                 metadata: Metadata) -> None:
        super().__init__(tap, client=client, run=run, name=self.stream_name, schema=self.properties.to_dict())
        self.primary_keys = list(self.key)
        self.entities = entities
        self.catalog_metadata = metadata


class EnumLabelsStream(FinOpsMetadataStream):
    """Every enum member with its value and its label in each installed language."""

    stream_name = "enum_labels"
    key = ("enum", "member", "language")
    properties = th.PropertiesList(
        th.Property("enum", th.StringType, required=True),
        th.Property("member", th.StringType, required=True),
        th.Property("value", th.IntegerType),
        th.Property("language", th.StringType, required=True),
        th.Property("label", th.StringType),
    )

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        client = self.client
        payload, _ = client.get_json(f"{client.settings.url}/Metadata/PublicEnumerations", table=self.name)
        enums = payload.get("value") if isinstance(payload, dict) else None
        if not isinstance(enums, list):
            msg = "the enumerations metadata service (/Metadata/PublicEnumerations) answered without a 'value' list"
            raise ServiceError(msg, table=self.name)
        members = [(str(e.get("Name")), m) for e in enums if isinstance(e, dict)
                   for m in e.get("Members") or [] if isinstance(m, dict)]
        label_ids = sorted({str(m["LabelId"]) for _e, m in members if m.get("LabelId")})
        probed = self._probe_languages(label_ids[:1])
        languages = [lang for (_label_id, lang), label in probed.items() if label is not None] or ["en-us"]
        labels = self._labels(label_ids, languages, probed)
        for enum, member in members:
            for language in languages:
                label_id = member.get("LabelId")
                yield {"enum": enum, "member": member.get("Name"), "value": member.get("Value"),
                       "language": language, "label": labels.get((str(label_id), language)) if label_id else None}

    def _label(self, label_id: str, language: str) -> str | None:
        client = self.client
        url = f"{client.settings.url}/Metadata/Labels(Id='{label_id}',Language='{language}')"
        try:
            payload, _ = client.get_json(url, table=self.name)
        except ServiceError as exc:
            if exc.status == 404:
                return None
            raise
        value = payload.get("Value") if isinstance(payload, dict) else None
        return value if isinstance(value, str) else None

    def _probe_languages(self, probe: list[str]) -> dict[tuple[str, str], str | None]:
        """The first label in every language asked for: the installed languages are those F&O
        answers it for (and those answers are the first label's, not read again)."""
        return self._labels(probe, list(LANGUAGES), {}) if probe else {}

    def _labels(
        self, label_ids: list[str], languages: list[str], known: dict[tuple[str, str], str | None]
    ) -> dict[tuple[str, str], str | None]:
        """Each label in each language, ``max_concurrency`` at a time; ``known`` pairs are not read."""
        pairs = [(label_id, lang) for label_id in label_ids for lang in languages if (label_id, lang) not in known]
        with ThreadPoolExecutor(self.client.settings.max_concurrency) as pool:
            values = list(pool.map(lambda pair: self._label(*pair), pairs))
        return {**known, **dict(zip(pairs, values, strict=True))}


class EntityDefinitionsStream(FinOpsMetadataStream):
    """The discovered entity sets."""

    stream_name = "entity_definitions"
    key = ("entity_set",)
    properties = th.PropertiesList(
        th.Property("entity_set", th.StringType, required=True),
        th.Property("entity_type", th.StringType),
        th.Property("keys", th.ArrayType(th.StringType)),
        th.Property("company_specific", th.BooleanType),
        th.Property("cursor", th.StringType),
        th.Property("property_count", th.IntegerType),
    )

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        for entity in self.entities:
            yield {"entity_set": entity.entity_set, "entity_type": entity.type_name, "keys": list(entity.keys),
                   "company_specific": entity.company_specific, "cursor": entity.default_cursor,
                   "property_count": len(entity.properties)}


METADATA_STREAMS: tuple[type[FinOpsMetadataStream], ...] = (EnumLabelsStream, EntityDefinitionsStream)
METADATA_STREAM_NAMES = frozenset(cls.stream_name for cls in METADATA_STREAMS)
