"""The HTTP client MSAL gets, and what a failed call to an identity endpoint means.

MSAL makes its own HTTP calls (tenant discovery, token requests). It is given a session that
passes ``verify=`` on every call: requests merges ``REQUESTS_CA_BUNDLE`` into every call that does
not pass ``verify`` itself, overriding ``Session.verify``, and MSAL never passes it — so a plain
session would let the environment beat the ``ca_bundle`` setting. The same session turns a busy
token endpoint (429, 5xx, a proxy's page, a dropped connection) into :class:`TokenEndpointBusy`
before MSAL misreads or caches the answer; credentials turn that into
:class:`~tap_dynamics.errors.TokenServiceUnavailable`, which the transport retries.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import typing as t
from urllib.parse import urlsplit

import requests
import urllib3

from tap_dynamics.auth.guidance import AADSTS_GUIDANCE
from tap_dynamics.engine import override
from tap_dynamics.errors import ConnectionProblem, TapDynamicsError, TokenServiceUnavailable



class TokenEndpointBusy(requests.exceptions.RequestException):
    """A transient failure of a token endpoint, raised inside MSAL's HTTP client.

    Raised from :class:`VerifyingSession` rather than letting MSAL see the answer, because MSAL
    turns a 5xx into a bare ``MsalServiceError``, a 429 with a JSON body into an ``error`` dict
    that looks like a wrong credential, and an HTML page into a ``ValueError`` — and it caches
    429/5xx answers for their ``Retry-After``, so a retry would be answered from that cache. An
    exception is never cached, and being a ``RequestException`` lets MSAL fall back to a still
    valid cached token during a proactive refresh. Providers turn it into
    :class:`TokenServiceUnavailable`, which the client retries like any other request.
    """

    def __init__(self, reason: str, retry_after: float | None = None, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.request_id = request_id


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP-date (RFC 9110 allows both)."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when no connection was made (DNS, refused, connect timeout): the host is wrong or
    unreachable, a setting to fix. False when it dropped after the request was sent."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def _is_permanent(response: requests.Response) -> bool:
    """A 5xx that carries a known Entra ID error (App Service's managed identity endpoint
    answers a wrong resource with 500 + AADSTS500011): a setting to fix, not a busy service."""
    code = _AADSTS_IN_TEXT.search(response.text[:4000])
    return code is not None and code.group(1) in AADSTS_GUIDANCE


_AADSTS_IN_TEXT = re.compile(r"AADSTS(\d+)")


class VerifyingSession(requests.Session):
    """MSAL's HTTP client: always sends its own ``verify`` and timeout; raises on a busy service.

    requests merges ``REQUESTS_CA_BUNDLE`` into every call that does not pass ``verify`` itself,
    overriding ``Session.verify``; MSAL never passes it. Passing it here makes the setting win.
    Transient answers (429, 5xx, a proxy's HTML page, a connection dropped mid-answer) raise
    :class:`TokenEndpointBusy` here, before MSAL misreads or caches them.
    """

    def __init__(self, verify: str | bool, timeout: float | tuple[float, float]) -> None:
        super().__init__()
        self._verify = verify
        self._timeout = timeout

    @override
    def request(self, method: str | bytes, url: str | bytes, *args: t.Any, **kwargs: t.Any) -> requests.Response:
        """Send with the configured CA bundle and a timeout, whatever the caller passed."""
        kwargs["verify"] = self._verify
        kwargs.setdefault("timeout", self._timeout)
        parts = urlsplit(url if isinstance(url, str) else url.decode())
        where = f"the token request to {parts.scheme}://{parts.netloc}"
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.exceptions.SSLError:
            raise
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                raise
            raise TokenEndpointBusy(f"{where} lost its connection ({type(exc).__name__})") from None
        except requests.exceptions.Timeout:
            raise TokenEndpointBusy(f"{where} got no answer within the request timeout") from None
        except requests.exceptions.RequestException as exc:  # body cut off, bad encoding
            raise TokenEndpointBusy(f"{where} got a cut-off answer ({type(exc).__name__})") from None
        status = response.status_code
        request_id = response.headers.get("x-ms-request-id") or response.headers.get("client-request-id")
        content_type = response.headers.get("Content-Type", "")
        if status == 429 or (status >= 500 and not _is_permanent(response)):
            detail = _first_error_line(response) if "json" in content_type else ""
            if not detail:
                detail = f"{content_type.split(';')[0] or 'no content type'} page, probably from a proxy"
            raise TokenEndpointBusy(
                f"{where} got HTTP {status} ({detail})",
                retry_after_seconds(response.headers.get("Retry-After")),
                request_id,
            )
        if status == 200 and "json" not in content_type:
            raise TokenEndpointBusy(
                f"{where} got a {content_type.split(';')[0] or 'no content type'} page instead of "
                "JSON (a proxy or gateway usually sends those)",
                request_id=request_id,
            )
        return response


def _first_error_line(response: requests.Response) -> str:
    """The first line of an OAuth error body's description (no trace ids), for messages."""
    try:
        payload = response.json()
    except ValueError:
        return ""
    if not isinstance(payload, dict):
        return ""
    text = str(payload.get("error_description") or payload.get("message") or payload.get("error") or "")
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def busy(exc: TokenEndpointBusy) -> TokenServiceUnavailable:
    """The error the transport retries (``Retry-After`` honoured) for a busy token endpoint."""
    return TokenServiceUnavailable(exc.reason, retry_after=exc.retry_after, request_id=exc.request_id)


def network_error(authority_host: str, exc: Exception) -> TapDynamicsError:
    """One line for an identity endpoint that is busy, cannot be reached, or fails TLS."""
    if isinstance(exc, TokenEndpointBusy):
        return busy(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return ConnectionProblem(
            f"TLS verification failed for the authority host {authority_host} — if a proxy "
            "inspects TLS, set ca_bundle to a PEM file with its CA certificate"
        )
    return ConnectionProblem(
        f"cannot reach the authority host {authority_host} ({type(exc).__name__}) — check "
        "authority_host and the network/proxy settings"
    )
