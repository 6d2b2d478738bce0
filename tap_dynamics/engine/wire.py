"""The connection level of the transport: reading a body whole, naming what went wrong on the wire."""

from __future__ import annotations

from dataclasses import dataclass

import requests
import urllib3


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
    response._content = body  # what requests itself does once it has read a body
    response._content_consumed = True  # type: ignore[attr-defined]


def short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def never_connected(exc: requests.exceptions.RequestException) -> bool:
    """Whether the request failed before any connection existed (refused, DNS, no route, proxy).

    requests wraps urllib3's ``MaxRetryError`` whose ``reason`` says what happened; a reset
    after connecting (``ProtocolError``) means the host is there, just flaky.
    """
    if isinstance(exc, requests.exceptions.ProxyError):
        return True
    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", None)
    return isinstance(
        reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
    )


def connect_failure(exc: requests.exceptions.RequestException) -> str:
    """A short, stable reason for a failed connection (no object addresses, no retry text)."""
    if isinstance(exc, requests.exceptions.ProxyError):
        return "the proxy refused or could not be reached"
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return "the host name does not resolve"
    text = str(reason or exc)
    if "refused" in text.lower():
        return "connection refused"
    return "no connection"




@dataclass(frozen=True)
class RawBody:
    """Asks ``HttpTransport.get_json`` for the body as bytes, not JSON (an XML document such as
    an OData ``$metadata``), checking only that its content type names ``kind``."""

    kind: str


__all__ = ["RawBody", "connect_failure", "never_connected", "read_body", "short"]
