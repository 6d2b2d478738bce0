"""The connection level of the transport: reading a body whole, naming what went wrong on the wire."""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    import requests


def read_body(response: requests.Response) -> None:
    """Read the whole body in one call and keep it where ``response.content`` finds it.

    Why not ``response.content``: requests reads it in 10 KB chunks and joins them, which for a
    5 MB page costs about a third more CPU and twice the memory while it is read. Errors are
    urllib3's (a cut-off body, a read timeout); on one the connection is closed, not reused.
    """
    try:
        body = response.raw.read(decode_content=True)
    except BaseException:
        response.close()
        raise
    response._content = body  # noqa: SLF001 - what requests itself does once a body is read
    response._content_consumed = True  # type: ignore[attr-defined]  # noqa: SLF001


def short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


__all__ = ["read_body", "short"]
