"""What the host needs from a service: where it is mounted, which paths it serves, how its
requests are handled and how its faults look on the wire.

A service sees requests relative to its *mount* (the on-premises organization ``/contoso`` is
a mount; online Dataverse and Entra ID are mounted at the root), so the same Dataverse code
serves ``/api/data/v9.2`` online and ``/contoso/api/data/v9.1`` on-premises.

Faults are split in two: the host's pipeline (:mod:`.faults`) decides *whether* a request is
hit (seeded, per URL) and does what a network does to any answer (drop, truncate, a proxy's
page); the service's :class:`FaultAdapter` says what the service itself answers when it is
throttled, unavailable or refuses a token — Dataverse's ``0x80072322`` JSON, Entra ID's
``AADSTS90033`` — and adds the faults only that service has (a forbidden table, a page too big).
"""

from __future__ import annotations

import base64
import random
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

if TYPE_CHECKING:
    from .faults import Faults
    from .host import Host

Response = tuple[int, list[tuple[str, str]], bytes]

NOT_FOUND: Response = (404, [("Content-Type", "text/html")], b"<h2>404 - File or directory not found.</h2>")
INTERNAL_ERROR: Response = (500, [("Content-Type", "application/json")],
                            b'{"error":{"code":"InternalServerError","message":"An unexpected error occurred."}}')


@dataclass
class Request:
    """One request as a service sees it: ``path`` is decoded and relative to the mount."""

    method: str
    target: str  # the raw target relative to the mount: path and query, still encoded
    path: str
    raw_query: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str] = field(default_factory=dict)
    mount: str = ""
    user_id: str | None = None  # the signed-in principal's user id, set by the authentication
    principal: Any = None  # what the service knows of the caller (an Entra ID app), if anything
    caller: str | None = None  # the identity the service's limits count against (token oid)
    # Headers the web server in front adds to the response once the service answered (IIS: the
    # Negotiate mutual-authentication token of a Kerberos sign-in).
    response_headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, method: str, target: str, headers: dict[str, str], body: bytes,
              mount: str = "") -> Request:
        path_raw, _, raw_query = target.partition("?")
        return cls(method, target, urllib.parse.unquote(path_raw), raw_query, headers, body,
                   dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True)), mount)

    def form(self) -> dict[str, str]:
        """The body as an ``application/x-www-form-urlencoded`` form (token endpoints)."""
        return dict(urllib.parse.parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))


class Service:
    """A Microsoft service the host serves on its port.

    Subclasses set ``name`` (the key in ``host.services`` and in the ``fault_targets`` knob),
    ``prefix`` (the service-relative paths they serve) and ``KNOBS`` (their ``emu.set()``
    knobs with defaults), and implement :meth:`handle`.
    """

    name: ClassVar[str] = ""
    prefix: ClassVar[str] = "/"
    KNOBS: ClassVar[dict[str, Any]] = {}
    # Rate faults (throttle_rate, …) hit this service unless the fault_targets knob names others.
    fault_default: ClassVar[bool] = False
    fault_adapter_class: ClassVar[type[FaultAdapter]]  # set below: FaultAdapter

    def __init__(self, host: Host, mount: str = "") -> None:
        self.host = host
        self.mount = mount.rstrip("/")
        self.faults: FaultAdapter = self.fault_adapter_class(self)

    @property
    def base_url(self) -> str:
        """The URL of the mount (nextLinks and ``@odata.context`` are built from it)."""
        return self.host.server_url + self.mount

    @property
    def knobs(self) -> dict[str, Any]:
        return self.host.knobs

    def match(self, path: str) -> str | None:
        """The service-relative path when this service serves ``path`` (decoded), else None.
        The mount compares case-insensitively (IIS does); the prefix exactly."""
        if self.mount:
            if not path.lower().startswith(self.mount.lower() + "/"):
                return None
            path = path[len(self.mount):]
        return path if path.startswith(self.prefix) else None

    def gate(self, req: Request) -> Response | None:
        """The web server in front of the service (Windows sign-in, served versions): None lets
        the request through; an answer here is sent before faults and the service itself."""
        return None

    def received(self, req: Request) -> None:
        """A request passed the gate (counted here even when a fault answers it)."""

    def respond(self, req: Request, response: Response) -> Response:
        """Every answer to a request that passed the gate, faults included, on its way out
        (headers every answer of the service carries)."""
        return response

    def handle(self, req: Request) -> Response:
        raise NotImplementedError

    def internal_error(self) -> Response:
        """The answer when the emulator itself failed (the traceback goes to stderr)."""
        return INTERNAL_ERROR

    def control(self, method: str, parts: list[str], data: Any) -> Response | None:
        """The service's part of the ``/_emulator/`` control API (None: not its endpoint)."""
        return None

    def connection_closed(self, connection_id: str) -> None:
        """A client's TCP connection ended (connection-oriented sign-in forgets it)."""

    def stop(self) -> None:
        """Release what the service holds outside the process (files)."""


class FaultAdapter:
    """How one service answers when it is hit by a fault; the default is a service that only
    the network can hurt (no throttling shape of its own: a generic 429/503)."""

    KNOBS: ClassVar[dict[str, Any]] = {}
    bearer: ClassVar[bool] = False  # requests carry bearer tokens (token_revoke_after_s applies)
    script_group: ClassVar[str | None] = None  # the group its scripted faults are given for

    def __init__(self, service: Service) -> None:
        self.service = service

    @property
    def knobs(self) -> dict[str, Any]:
        return self.service.host.knobs

    def applies(self, req: Request) -> bool:
        """Whether this request of the service is subject to injected faults at all."""
        return True

    # The codes of the service-protection measures (core/limits.py) in the service's words.
    limit_codes: ClassVar[dict[str, str]] = {"requests": "TooManyRequests", "execution": "TooManyRequests",
                                             "concurrency": "TooManyRequests"}

    def limited(self, code: str, retry_after: int) -> Response:
        """The 429 of a service-protection limit (``code`` from ``limit_codes``)."""
        return _generic(429, code, "Too many requests.", [("Retry-After", str(retry_after))])

    def targeted(self, req: Request) -> bool:
        """Whether the rate faults may hit this request (a service may narrow them down)."""
        return True

    def denied(self, req: Request, faults: Faults) -> Response | None:
        """Service-specific refusals decided per request (before the rate faults)."""
        return None

    def overloaded(self, req: Request, faults: Faults) -> Response | None:
        """Service-specific failures of too large a request (after the rate faults)."""
        return None

    def throttled(self, rng: random.Random, retry_after: str | None) -> tuple[Response, str | None]:
        """The 429 answer (``retry_after``: the header's value, None: no header) and the error
        code it carries."""
        return _generic(429, "TooManyRequests", "Too many requests.", _retry_after(retry_after)), None

    def unavailable(self, retry_after: str | None) -> Response:
        """The service's own 503 (502/504 come from the gateway in front of it)."""
        return _generic(503, "ServiceUnavailable", "Service Unavailable", _retry_after(retry_after))

    def success_filler(self) -> Response:
        """A plausible 200 answer, for the "drop" fault to cut half-way."""
        return 200, [("Content-Type", "application/json")], orjson.dumps({"value": ["x" * 1200]})

    def unauthorized(self) -> Response:
        """A bearer token refused before its expiry (revoked)."""
        return 401, [*std_headers(), ("WWW-Authenticate", 'Bearer error="invalid_token"')], b""


Service.fault_adapter_class = FaultAdapter


def std_headers() -> list[tuple[str, str]]:
    rid = str(uuid.uuid4())
    return [("REQ_ID", rid), ("x-ms-service-request-id", rid)]


def bearer_claims(authorization: str) -> dict[str, Any]:
    """The payload of a bearer JWT ({} when it cannot be read; the signature is not checked)."""
    parts = authorization[7:].strip().split(".") if authorization.lower().startswith("bearer ") else []
    if len(parts) != 3:
        return {}
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except Exception:
        return {}
    return payload if isinstance(payload, dict) else {}


def caller_of(authorization: str) -> str:
    """Who a (validated) bearer token speaks for: its ``oid`` — the application user of an
    app-only token, the signed-in user of a delegated one. Service protection counts per caller."""
    claims = bearer_claims(authorization)
    return str(claims.get("oid") or claims.get("appid") or "anonymous")


def seconds_header(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number == int(number) else str(number)


def _retry_after(value: str | None) -> list[tuple[str, str]]:
    return [] if value is None else [("Retry-After", value)]


def _generic(status: int, code: str, message: str, extra: list | None = None) -> Response:
    return status, [("Content-Type", "application/json"), *(extra or [])], orjson.dumps(
        {"error": {"code": code, "message": message}})
