"""A service policy: what one Microsoft service's HTTP API expects and how it says what went wrong.

The transport (:mod:`tap_dynamics.engine.http`) is the same for every service: origin lock,
concurrency cap, retries, token refresh. What differs per service is injected as a
:class:`ServicePolicy`:

- the headers every request carries (:attr:`ServicePolicy.base_headers`),
- which response headers carry the request id a support case needs,
- how a failed response is to be handled (:meth:`ServicePolicy.classify` → :class:`Verdict`):
  retry with backoff, wait as throttled, retry with a smaller page, refresh the token, or fail,
- proactive pacing from rate-limit headers (none by default),
- the error to raise for a service-specific refusal (e.g. a 403 that means "no such user"),
- how URLs are built (the API root, OData query encoding),
- the page format of its collections.

The Dataverse policy is :class:`tap_dynamics.dataverse.policy.DataversePolicy`.
"""

from __future__ import annotations

import enum
import typing as t
from dataclasses import dataclass
from urllib.parse import quote

import msgspec
import requests

from tap_dynamics.engine.formats import ODATA_V4
from tap_dynamics.engine.pages import JSON_DECODER

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from tap_dynamics.engine.formats import PageFormat

try:
    from importlib.metadata import version as _dist_version

    USER_AGENT = f"tap-dynamics/{_dist_version('tap-dynamics')}"
except Exception:  # pragma: no cover - running from a source tree without metadata
    USER_AGENT = "tap-dynamics/dev"

# Characters left as-is in query values: OData syntax reads better and the services accept them.
_QUERY_SAFE = "$,:'()=/*@"


def encode_query(params: Mapping[str, str]) -> str:
    """Encode OData query options with %20 for spaces (never '+') and readable OData syntax."""
    return "&".join(f"{key}={quote(str(value), safe=_QUERY_SAFE)}" for key, value in params.items())


class Verdict(enum.Enum):
    """What the transport does with a failed response."""

    RETRY = "retry"  # transient: back off (or wait Retry-After) and resend, within the budget
    THROTTLE = "throttle"  # the service asks the client to slow down: every request waits
    SHRINK = "shrink"  # a smaller page may succeed: halve it (else retry like RETRY)
    REFRESH = "refresh"  # the token was rejected: one fresh token and a resend
    FATAL = "fatal"  # no resend can help: a one-line error naming the status and code


@dataclass(frozen=True)
class Pacing:
    """How close the service's rate-limit budget is to empty, read from a response."""

    pressure: float  # 0 = plenty left, 1 = nothing left
    detail: str  # what is left, for the log line (e.g. "150 requests, 20 s of ... left")


def budget_pacing(
    requests_left: float | None, seconds_left: float | None, low_requests: float, low_seconds: float
) -> Pacing | None:
    """Pressure from the rate-limit budget a response reports, or None when there is plenty.

    Microsoft's business-application services count each caller's requests and execution time
    over a 5-minute window and may say what is left (each policy reads its own headers). Below
    ``low_requests`` or ``low_seconds`` the pressure rises towards 1 as the budget nears zero,
    so that the run spreads what is left instead of running into a 429.
    """
    pressure = 0.0
    if requests_left is not None and requests_left < low_requests:
        pressure = max(pressure, 1 - requests_left / low_requests)
    if seconds_left is not None and seconds_left < low_seconds:
        pressure = max(pressure, 1 - seconds_left / low_seconds)
    if pressure <= 0:
        return None
    detail = (
        f"{'?' if requests_left is None else f'{requests_left:.0f}'} requests, "
        f"{'?' if seconds_left is None else f'{seconds_left:.0f}'} s of execution time left in the 5-minute window"
    )
    return Pacing(pressure, detail)


class ServicePolicy:
    """The defaults: an OData v4 JSON API with bearer tokens and no service-specific codes."""

    service_name = "the service"
    base_headers: t.ClassVar[Mapping[str, str]] = {
        "Accept": "application/json",
        "OData-MaxVersion": "4.0",
        "OData-Version": "4.0",
        "User-Agent": USER_AGENT,
    }
    request_id_headers: t.ClassVar[tuple[str, ...]] = ("request-id", "client-request-id")
    page_format: PageFormat = ODATA_V4
    # Requests in flight at once per resource that :meth:`concurrency_key` names.
    per_key_limit: int = 4

    def __init__(self, api_base: str) -> None:
        self.api_base = api_base.rstrip("/")

    def url(self, path: str, params: Mapping[str, str] | None = None) -> str:
        """Absolute URL for ``path`` (relative to the API root) with OData query options."""
        url = f"{self.api_base}/{path.lstrip('/')}"
        return f"{url}?{encode_query(params)}" if params else url

    def concurrency_key(self, url: str) -> str | None:
        """The resource whose own concurrency cap ``url`` counts against (None: only the global cap)."""
        return None

    def request_id(self, response: requests.Response) -> str | None:
        """The id the service gave this request (quoted in errors, for a support case)."""
        headers = response.headers
        for name in self.request_id_headers:
            value = headers.get(name)
            if value:
                return value
        return None

    def error_code_message(self, response: requests.Response) -> tuple[str | None, str | None]:
        """``{"error":{"code","message"}}`` (OData v4 JSON errors) if the body has it."""
        try:
            payload = JSON_DECODER.decode(response.content)
        except (msgspec.DecodeError, requests.exceptions.RequestException):
            return None, None  # not JSON (an HTML error page): no code to read
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            code = error.get("code")
            message = error.get("message")
            if isinstance(message, dict):  # OData v2 verbose JSON: {"lang":…, "value":…}
                message = message.get("value")
            return (str(code) if code else None), (" ".join(str(message).split()) if message else None)
        return None, None

    def classify(self, status: int, code: str | None) -> Verdict:
        """What to do with a non-200, non-redirect response of ``status`` (error ``code``)."""
        if status == 401:
            return Verdict.REFRESH
        if status == 429:
            return Verdict.THROTTLE
        if status in (500, 502, 503, 504):
            return Verdict.RETRY
        return Verdict.FATAL

    def honours_retry_after(self, status: int) -> bool:
        """Whether a ``Retry-After`` on a retried (non-429) response is to be obeyed."""
        return status == 503

    def pacing(self, response: requests.Response) -> Pacing | None:
        """Rate-limit pressure read from a successful response; None: the service says nothing."""
        return None

    def refusal(self, status: int, code: str | None, identity: str, origin: str) -> Exception | None:
        """A service-specific error for a fatal response (e.g. a 403 meaning "no such user")."""
        return None


__all__ = ["USER_AGENT", "Pacing", "ServicePolicy", "Verdict", "budget_pacing", "encode_query"]
