"""What is particular to the Dataverse Web API (online and on-premises), for the engine's transport.

- every request carries ``If-None-Match: null`` (Microsoft's advice for Web API reads: no cached
  ``304`` for a collection) and the OData 4.0 version headers;
- the request id is ``x-ms-service-request-id`` (online) or ``REQ_ID`` (on-premises);
- ``0x80044352`` (an expired change-tracking token) is final at any status: the stream
  re-baselines instead of retrying;
- ``0x80040216`` on a 500 is Dataverse's generic "unexpected error", also how it reports a page it
  could not build in time or too big a response: a smaller page is the cure;
- ``0x80072560`` on a 403 means the identity is no user of the environment (no application user
  for the app registration): a credentials/privileges problem, exit 2, with the fix;
- the service-protection budget left in the 5-minute window comes in
  ``x-ms-ratelimit-burst-remaining-xrm-requests`` (requests) and
  ``x-ms-ratelimit-time-remaining-xrm-requests`` (seconds of execution time): near zero, a
  short pause per request spreads what is left instead of running into a 429;
- URLs are relative to ``/api/data/vX.Y`` of the org.
"""

from __future__ import annotations

import typing as t

from tap_dynamics.engine import override
from tap_dynamics.engine.policy import USER_AGENT, Pacing, ServicePolicy, Verdict, budget_pacing
from tap_dynamics.engine.retry import number
from tap_dynamics.errors import NOT_A_MEMBER, no_application_user

if t.TYPE_CHECKING:
    import requests

# Dataverse's generic "unexpected error" code, also returned for timeouts and oversized responses.
TOO_LARGE_CODE = "0x80040216"
# An expired change-tracking token: final whatever the status (the stream re-baselines).
EXPIRED_TOKEN_CODE = "0x80044352"

# Headers Microsoft recommends on every Web API call (compose-http-requests-handle-errors).
BASE_HEADERS = {
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "If-None-Match": "null",
    "User-Agent": USER_AGENT,
}


def budget_left(response: requests.Response) -> tuple[float | None, float | None]:
    """The requests and execution seconds left in the caller's window, as the headers say."""
    return (
        number(response.headers.get("x-ms-ratelimit-burst-remaining-xrm-requests")),
        number(response.headers.get("x-ms-ratelimit-time-remaining-xrm-requests")),
    )


class DataversePolicy(ServicePolicy):
    """The Dataverse Web API's headers, error codes, rate-limit headers and URLs."""

    service_name = "Dataverse"
    base_headers = BASE_HEADERS
    request_id_headers = ("x-ms-service-request-id", "REQ_ID")
    # Proactive slowdown: below these remaining budgets every request of the run waits a little,
    # more the closer the budget is to zero.
    LOW_BURST_REQUESTS = 200
    LOW_TIME_SECONDS = 60.0

    @override
    def classify(self, status: int, code: str | None) -> Verdict:
        if status == 500 and code == TOO_LARGE_CODE:
            return Verdict.SHRINK
        if status in (500, 502, 503, 504) and code == EXPIRED_TOKEN_CODE:
            return Verdict.FATAL  # no resend helps: the stream re-baselines
        return super().classify(status, code)

    @override
    def pacing(self, response: requests.Response) -> Pacing | None:
        return budget_pacing(*budget_left(response), self.LOW_BURST_REQUESTS, self.LOW_TIME_SECONDS)

    @override
    def refusal(self, status: int, code: str | None, identity: str, origin: str) -> Exception | None:
        if status == 403 and code == NOT_A_MEMBER:
            return no_application_user(identity, origin)
        return None


__all__ = ["BASE_HEADERS", "EXPIRED_TOKEN_CODE", "TOO_LARGE_CODE", "DataversePolicy"]
