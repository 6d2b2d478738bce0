"""Dataverse's metadata API: ``EntityDefinitions`` (with ``Attributes``, casts and option-set
expansion), ``GlobalOptionSetDefinitions`` and ``RelationshipDefinitions`` — the tap's
discovery surface, unpaged, with the real 400s for unknown properties."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..odata import ODataError, bad_request
from ..odata.filter import compile_filter, parse_filter
from ..odata.query import parse_select, split_expand
from . import metadata as M  # noqa: N812 - M.entity_json etc.: the rendering module
from .schema import NS, TableDef
from .tables import global_option_sets, relationships

if TYPE_CHECKING:
    from ..core.service import Response
    from .store import Store


class MetadataApi:
    """The metadata endpoints of :class:`~emulator.dataverse.service.DataverseService`."""

    store: Store

    def json(self, status: int, obj: Any, extra: list | None = None) -> Response:
        raise NotImplementedError

    def _find_entity(self, key: str) -> TableDef:
        m = re.match(r"^LogicalName='([^']*)'$", key)
        if m:
            for td in self.store.tables.values():
                if td.logical == m.group(1):
                    return td
            raise ODataError(404, "0x80040217",
                             f"Could not find entity with LogicalName = {m.group(1)}.")
        k = key.strip().lower()
        for td in self.store.tables.values():
            if td.metadata_id == k:
                return td
        raise ODataError(404, "0x80040217", f"Could not find entity with MetadataId = {key}.")

    @staticmethod
    def _resolver(sample: dict, type_name: str):
        def resolve(name: str):
            parts = name.split("/")
            if parts[0] not in sample:
                raise bad_request(f"Could not find a property named '{parts[0]}' on type '{NS}.{type_name}'.")
            v = sample[parts[0]]
            for p in parts[1:]:
                v = v.get(p) if isinstance(v, dict) else None

            def get(d, parts=parts):
                x = d.get(parts[0])
                for p in parts[1:]:
                    x = x.get(p) if isinstance(x, dict) else None
                return x

            kind = ("bool" if isinstance(v, bool) else "number" if isinstance(v, int | float)
                    else "string" if isinstance(v, str) else "any")
            return get, kind
        return resolve

    @staticmethod
    def _project(d: dict, select: list[str] | None, allowed: list[str], type_name: str) -> dict:
        """``$select`` on a metadata entity, with the real 400 for an unknown property."""
        try:
            return M.select_props(d, select, allowed, type_name)
        except ValueError as e:
            raise bad_request(str(e)) from None

    def entity_definitions(self, req, base, rest):
        q = req.query
        select = parse_select(q["$select"]) if "$select" in q else None
        m = re.match(r"^(?:\(([^)]*)\))?(?:/Attributes(?:\(([^)]*)\))?(?:/([\w.]+))?)?$", rest)
        if not m:
            raise ODataError(404, "0x80060888", f"Resource not found for the segment '{rest}'.")
        key, attr_key, cast = m.group(1), m.group(2), m.group(3)
        if "/Attributes" in rest:
            td = self._find_entity(key) if key else None
            if td is None:
                raise bad_request("Attributes can only be read for a single entity.")
            return self.attributes(req, base, td, attr_key, cast, select)
        expand = split_expand(q["$expand"]) if "$expand" in q else []
        ents = [self.store.tables[n] for n in self.store.tables]
        if key is not None:
            ents = [self._find_entity(key)]
        sample = M.entity_json(ents[0])
        pred = None
        if "$filter" in q:
            pred, _ = compile_filter(parse_filter(q["$filter"]), self._resolver(sample, "EntityMetadata"))
        out = []
        for td in ents:
            d = M.entity_json(td)
            if pred is not None and not pred(d):
                continue
            p = self._project(d, select, M.ENTITY_PROPS, "EntityMetadata")
            for name, opts in expand:
                if name != "Attributes":
                    raise bad_request(f"Could not find a property named '{name}' on type '{NS}.EntityMetadata'.")
                p["Attributes"] = self._attr_list(td, None, opts)
            out.append(p)
        ctx = "EntityDefinitions" + (f"({','.join(select)})" if select else "")
        if key is not None:
            body = {"@odata.context": base + f"$metadata#{ctx}/$entity"}
            body.update(out[0])
            return self.json(200, body)
        return self.json(200, {"@odata.context": base + f"$metadata#{ctx}", "value": out})

    def _attr_list(self, td: TableDef, cast: str | None, opts: dict[str, str]) -> list[dict]:
        allowed = list(M.BASE_ATTR_PROPS)
        md_type = None
        if cast:
            if not cast.startswith(NS + ".") or cast[len(NS) + 1:] not in M.TYPE_PROPS:
                raise ODataError(404, "0x80060888", f"Resource not found for the segment '{cast}'.")
            md_type = cast[len(NS) + 1:]
            allowed += M.TYPE_PROPS[md_type]
        select = parse_select(opts["$select"]) if "$select" in opts else None
        expand = split_expand(opts["$expand"]) if "$expand" in opts else []
        attrs = [(i, a) for i, a in enumerate(td.attrs) if md_type is None or a.md_type == md_type]
        items = [(a, M.attr_json(td, a, i + 1)) for i, a in attrs]
        if "$filter" in opts and items:
            sample = dict(items[0][1])
            for k in M.BASE_ATTR_PROPS + (M.TYPE_PROPS.get(md_type, []) if md_type else []):
                sample.setdefault(k, None)
            pred, _ = compile_filter(parse_filter(opts["$filter"]),
                                     self._resolver(sample, md_type or "AttributeMetadata"))
            items = [(a, d) for a, d in items if pred(d)]
        out = []
        for a, d in items:
            p = self._project(d, select, allowed, md_type or "AttributeMetadata")
            for name, eopts in expand:
                navs = M.OPTIONSET_NAV.get(md_type or "", [])
                if name not in navs:
                    raise bad_request(f"Could not find a property named '{name}' on type "
                                      f"'{NS}.{md_type or 'AttributeMetadata'}'.")
                os_ = a.optionset
                val = None
                if os_ is not None and (name == "OptionSet" or os_.is_global):
                    val = M.optionset_json(os_)
                    if "$select" in eopts:
                        keep = parse_select(eopts["$select"])
                        val = {k: v for k, v in val.items() if k in keep or k == "MetadataId"}
                p[name] = val
            out.append(p)
        return out

    def attributes(self, req, base, td, attr_key, cast, select):
        if td.metadata_error is not None:
            raise ODataError(*td.metadata_error)
        q = dict(req.query)
        items = self._attr_list(td, cast, q)
        if attr_key is not None:
            m = re.match(r"^LogicalName='([^']*)'$", attr_key)
            want = m.group(1) if m else None
            items = [d for d in items if (d.get("LogicalName") == want if want else
                                          d.get("MetadataId") == attr_key.lower())]
            if not items:
                raise ODataError(404, "0x80040217", f"Could not find attribute {attr_key} on entity {td.logical}.")
        ctx = f"EntityDefinitions({td.metadata_id})/Attributes" + (f"/{cast}" if cast else "") + \
            (f"({','.join(select)})" if select else "")
        if attr_key is not None:
            body = {"@odata.context": base + f"$metadata#{ctx}/$entity"}
            body.update(items[0])
            return self.json(200, body)
        return self.json(200, {"@odata.context": base + f"$metadata#{ctx}", "value": items})

    def global_option_sets(self, req, base, rest):
        """``GlobalOptionSetDefinitions`` (unpaged; ``$filter`` is not supported there)."""
        if "$filter" in req.query:
            raise bad_request("The $filter query option is not supported on GlobalOptionSetDefinitions.")
        select = parse_select(req.query["$select"]) if "$select" in req.query else None
        sets = global_option_sets(self.store.tables)
        m = re.match(r"^(?:\((?:Name=)?'?([^')]*)'?\))?$", rest)
        if not m:
            raise ODataError(404, "0x80060888", f"Resource not found for the segment '{rest}'.")
        out = []
        for os_ in sets:
            d = {"@odata.type": f"#{NS}.OptionSetMetadata", **M.optionset_json(os_)}
            if m.group(1) and m.group(1) not in (os_.name, d["MetadataId"]):
                continue
            out.append(self._project(d, select, M.OPTIONSET_PROPS, "OptionSetMetadata"))
        ctx = "GlobalOptionSetDefinitions" + (f"({','.join(select)})" if select else "")
        if m.group(1):
            if not out:
                raise ODataError(404, "0x80040217", f"Could not find optionset {m.group(1)}.")
            return self.json(200, {"@odata.context": base + f"$metadata#{ctx}/$entity", **out[0]})
        return self.json(200, {"@odata.context": base + f"$metadata#{ctx}", "value": out})

    def relationship_definitions(self, req, base, rest):
        """``RelationshipDefinitions`` with optional derived-type cast; type-specific
        properties are only selectable through the cast, like on ``Attributes``."""
        m = re.match(r"^(?:/([\w.]+))?$", rest)
        if not m:
            raise ODataError(404, "0x80060888", f"Resource not found for the segment '{rest}'.")
        cast = m.group(1)
        allowed = list(M.RELATIONSHIP_BASE_PROPS)
        md_type = None
        if cast:
            md_type = cast[len(NS) + 1:] if cast.startswith(NS + ".") else None
            if md_type not in M.RELATIONSHIP_TYPE_PROPS:
                raise ODataError(404, "0x80060888", f"Resource not found for the segment '{cast}'.")
            allowed += M.RELATIONSHIP_TYPE_PROPS[md_type]
        select = parse_select(req.query["$select"]) if "$select" in req.query else None
        out = []
        for rel in relationships(self.store.tables):
            if md_type and rel["@odata.type"] != f"#{NS}.{md_type}":
                continue
            out.append(self._project(rel, select, allowed, md_type or "RelationshipMetadataBase"))
        ctx = "RelationshipDefinitions" + (f"/{cast}" if cast else "") + \
            (f"({','.join(select)})" if select else "")
        return self.json(200, {"@odata.context": base + f"$metadata#{ctx}", "value": out})
