"""Page formats: a collection response body → :class:`~tap_dynamics.engine.pages.Page`.

The transport decodes a 200 body with the format's typed decoder (:attr:`PageFormat.decoder`:
msgspec checks the whole document, so a cut-off body is still caught and retried where it
arrives, but leaves each row raw) and hands the result to :meth:`PageFormat.page`. A body that is
valid JSON of another shape arrives as plain JSON, and the format says what is wrong with it.

:class:`ODataV4` is the JSON format of the Dataverse Web API, Finance & Operations' ``/data`` and
Microsoft Graph (``value``, ``@odata.nextLink``, ``@odata.deltaLink``). :class:`ODataV2Verbose` is
OData v2's verbose JSON (WCF Data Services: ``{"d": {"results": [...], "__next": ...}}``,
``/Date(ms)/`` dates) with the same :meth:`page` contract; what a product's rows mean (which
properties are dates, how complex values flatten) comes in as a per-table row conversion.
"""

from __future__ import annotations

import datetime as dt
import re
import typing as t
from itertools import repeat
from operator import contains, methodcaller

import msgspec

from tap_dynamics.engine import override
from tap_dynamics.engine.pages import JSON_DECODER, Page, Rows, where
from tap_dynamics.errors import ServiceError

# A cursor column and the type its values must have when not null (str: a date-time, int).
Cursor = tuple[str, type]
# What a date-time cursor value looks like (the sort check and the bookmark compare them as text).
DATETIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)\Z")


class PageFormat(t.Protocol):
    """How one protocol lays out a page of a collection."""

    decoder: msgspec.json.Decoder

    def page(
        self,
        payload: t.Any,
        *,
        table: str | None,
        request_id: str | None,
        seen: set[str],
        required: tuple[str, ...],
        cursor: Cursor | None = None,
    ) -> Page:
        """The page in ``payload``; raise a one-line service error when it is not a page.

        ``seen`` holds the links followed so far (a link seen again is a server-side loop);
        ``required`` names the columns every row must carry (tombstones excepted); ``cursor``
        the cursor column and the type its values must have when not null.
        """
        ...


class _ODataV4Body(msgspec.Struct):
    """A collection page as read off the wire: the links, and each row still as raw JSON."""

    value: list[msgspec.Raw]
    next_link: str | None = msgspec.field(name="@odata.nextLink", default=None)
    delta_link: str | None = msgspec.field(name="@odata.deltaLink", default=None)


class ODataV4:
    """OData v4 JSON (``value`` / ``@odata.nextLink`` / ``@odata.deltaLink``).

    :meth:`page` is the page contract of every format; a format of another layout says where
    its rows and links are (:meth:`body_parts`, :meth:`json_parts`) and, if its rows need it,
    converts them in :meth:`check_rows`.
    """

    decoder = msgspec.json.Decoder(_ODataV4Body)

    def page(
        self,
        payload: t.Any,
        *,
        table: str | None,
        request_id: str | None,
        seen: set[str],
        required: tuple[str, ...] = (),
        cursor: Cursor | None = None,
    ) -> Page:
        """One page; its rows stay raw JSON until used (see :class:`Rows`), then are checked."""
        if isinstance(payload, msgspec.Struct):  # what the typed decoder made of a page
            raw, next_link, delta_link = self.body_parts(payload)
            check_loop(next_link, table, seen)

            def check(rows: list[t.Any]) -> None:
                self.check_rows(rows, table, request_id, required, cursor)

            return Page(Rows(raw, check), next_link or None, delta_link, request_id)
        # Valid JSON that is not a page: the checks say what is wrong with it.
        records, next_link, delta_link = self.json_parts(payload, table, request_id)
        self.check_rows(records, table, request_id, required, cursor)
        check_loop(next_link, table, seen)
        return Page(records, next_link or None, delta_link, request_id)

    @staticmethod
    def body_parts(body: t.Any) -> tuple[list[msgspec.Raw], str | None, str | None]:
        """A decoded page's raw rows, next link and delta link."""
        return body.value, body.next_link, body.delta_link

    @staticmethod
    def json_parts(payload: t.Any, table: str | None, request_id: str | None) -> tuple[list[t.Any], str | None, str | None]:
        """The rows, next link and delta link of a body of plain JSON, or the error saying why it
        is not a page."""
        records = payload.get("value") if isinstance(payload, dict) else None
        if not isinstance(records, list):
            msg = f"{where(table)}the response has no 'value' list (request id {request_id})"
            raise ServiceError(msg, table=table)
        next_link = payload.get("@odata.nextLink")
        if next_link is not None and not isinstance(next_link, str):
            msg = f"{where(table)}malformed @odata.nextLink in the response"
            raise ServiceError(msg, table=table)
        delta_link = payload.get("@odata.deltaLink")
        return records, next_link, delta_link if isinstance(delta_link, str) else None

    @staticmethod
    def is_tombstone(row: dict[str, t.Any]) -> bool:
        """An OData v4 deleted-entity entry (4.0 ``reason: deleted``, 4.01 ``@removed``)."""
        return row.get("reason") == "deleted" or "@removed" in row

    def check_rows(
        self,
        records: list[t.Any],
        table: str | None,
        request_id: str | None,
        required: tuple[str, ...],
        cursor: Cursor | None = None,
    ) -> None:
        """Rows are JSON objects carrying the required columns (tombstones excepted), and cursor
        values that are null or of the cursor's type (they are compared and bookmarked).

        Runs on every row of every page, so the common case (all good) is checked with C-level
        ``map`` passes; only a page with a problem is walked row by row to name it.
        """
        if not all(map(isinstance, records, repeat(dict))):
            msg = (
                f"{where(table)}the response's 'value' list holds something other than rows "
                f"(JSON objects) (request id {request_id})"
            )
            raise ServiceError(msg, table=table)
        if required and any(None in map(methodcaller("get", name), records) for name in required):
            for number, record in enumerate(records, start=1):
                if self.is_tombstone(record):
                    continue
                missing = [name for name in required if record.get(name) is None]
                if missing:
                    raise malformed_row(table, number, f"has no {', '.join(missing)}", request_id)
        if cursor is not None:
            check_cursor(records, cursor, table, request_id)


class _V2Results(msgspec.Struct):
    results: list[msgspec.Raw]
    next_link: str | None = msgspec.field(name="__next", default=None)


class _ODataV2Body(msgspec.Struct):
    """A v2 collection page: ``d.results`` (each row still raw JSON) and ``d.__next``."""

    d: _V2Results


RowConversion = t.Callable[[dict[str, t.Any]], dict[str, t.Any]]


class ODataV2Verbose(ODataV4):
    """OData v2 verbose JSON (``d.results`` / ``d.__next``; no delta links in v2).

    ``convert`` turns one decoded row into the row the rest of the engine sees (flat columns,
    ISO-8601 dates via :func:`v2_datetime`); it runs when the rows are decoded, before the row
    checks, so cursors and keys are checked as they will be compared and written. One instance
    per table (its conversion); without one, rows pass as served.
    """

    decoder = msgspec.json.Decoder(_ODataV2Body)

    def __init__(self, convert: RowConversion | None = None) -> None:
        self.convert = convert

    @staticmethod
    @override
    def body_parts(body: t.Any) -> tuple[list[msgspec.Raw], str | None, str | None]:
        return body.d.results, body.d.next_link, None

    @staticmethod
    @override
    def json_parts(payload: t.Any, table: str | None, request_id: str | None) -> tuple[list[t.Any], str | None, str | None]:
        inner = payload.get("d") if isinstance(payload, dict) else None
        records = inner.get("results") if isinstance(inner, dict) else None
        if not isinstance(records, list):
            msg = f"{where(table)}the response has no 'd.results' list (request id {request_id})"
            raise ServiceError(msg, table=table)
        next_link = inner.get("__next")  # type: ignore[union-attr]
        if next_link is not None and not isinstance(next_link, str):
            msg = f"{where(table)}malformed __next link in the response"
            raise ServiceError(msg, table=table)
        return records, next_link, None

    @override
    def check_rows(
        self,
        records: list[t.Any],
        table: str | None,
        request_id: str | None,
        required: tuple[str, ...],
        cursor: Cursor | None = None,
    ) -> None:
        """Convert the rows in place (the list is the page's), then check them as v4 rows are."""
        convert = self.convert
        if convert is not None:
            if not all(map(isinstance, records, repeat(dict))):
                super().check_rows(records, table, request_id, required, cursor)  # names the problem
            try:
                records[:] = map(convert, records)
            except (TypeError, ValueError, AttributeError) as exc:
                msg = f"{where(table)}a row of a page cannot be read ({exc}) (request id {request_id}); the response is malformed"
                raise ServiceError(msg, table=table) from None
        super().check_rows(records, table, request_id, required, cursor)


_V2_DATE_RE = re.compile(r"/Date\((-?\d+)(?:[+-]\d{4})?\)/\Z")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def v2_datetime(value: t.Any) -> str | None:
    """An OData v2 ``/Date(<ms since the epoch, UTC>[±hhmm])/`` as ISO-8601 UTC (None stays None).

    Always to the whole second, ``2012-01-01T00:00:00Z``: that is how the Web API writes the same
    value (CRM keeps date-times to the second), and one fixed width is what makes values sort as
    text the way they sort in time (``…00.500Z`` would sort before ``…00Z``: '.' < 'Z'), which
    the cursor's sort check and bookmark rely on. A fraction, should a server send one, is cut
    off rather than rounded: an inclusive ``ge`` bookmark of the cut value still takes the row.
    """
    if value is None:
        return None
    match = _V2_DATE_RE.match(value) if isinstance(value, str) else None
    if match is None:
        msg = f"{str(value)[:40]!r} is not an OData v2 /Date(…)/ value"
        raise ValueError(msg)
    moment = _EPOCH + dt.timedelta(seconds=int(match.group(1)) // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def check_cursor(records: list[dict[str, t.Any]], cursor: Cursor, table: str | None, request_id: str | None) -> None:
    """Cursor values are null or of the cursor's type: a date-time (text) or a whole number.

    Null is a value (such rows are emitted without moving the bookmark); a row without the
    column at all is not what was asked for (``$select`` names it), so it is malformed.
    """
    name, kind = cursor
    if not all(map(contains, records, repeat(name))):
        number = next(i for i, record in enumerate(records, start=1) if name not in record)
        raise malformed_row(table, number, f"has no {name}", request_id)
    values = [value for value in map(methodcaller("get", name), records) if value is not None]
    if kind is str:
        if set(map(type, values)) <= {str} and all(map(DATETIME_RE.match, values)):
            return
        expected = "a date-time"
    else:
        if set(map(type, values)) <= {int}:
            return
        expected = "a whole number"
    for number, record in enumerate(records, start=1):
        value = record.get(name)
        if value is None or (value.__class__ is kind and (kind is not str or DATETIME_RE.match(str(value)))):
            continue
        raise malformed_row(table, number, f"has {name} = {value_text(value)[:40]!r}, which is not {expected}", request_id)


def value_text(value: t.Any) -> str:
    """A row value as text for a message (a number kept as JSON text shows as that text)."""
    return bytes(value).decode() if value.__class__ is msgspec.Raw else str(value)


def malformed_row(table: str | None, number: int, problem: str, request_id: str | None) -> ServiceError:
    """The one line for a row that cannot be emitted as served (it fails its table)."""
    rid = f" (request id {request_id})" if request_id else ""
    msg = f"{where(table)}row {number} of a page {problem}{rid}; the response is malformed"
    return ServiceError(msg, table=table)


def check_loop(next_link: str | None, table: str | None, seen: set[str]) -> None:
    """A next link seen before means the server is looping: stop instead of reading forever."""
    if next_link:
        if next_link in seen:
            msg = f"{where(table)}the server returned a nextLink it had already returned; stopping a pagination loop"
            raise ServiceError(msg, table=table)
        seen.add(next_link)


ODATA_V4 = ODataV4()

__all__ = [
    "DATETIME_RE", "JSON_DECODER", "ODATA_V4", "Cursor", "ODataV2Verbose", "ODataV4", "PageFormat", "RowConversion",
    "check_cursor", "check_loop", "malformed_row", "v2_datetime", "value_text",
]
