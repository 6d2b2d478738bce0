"""What is particular to F&O's OData service (``/data``), for the engine's transport.

- F&O answers an app that has a token but is not registered in F&O (System administration >
  Setup > Microsoft Entra applications) with 401, exactly like a bad token: after one fresh
  token the 401 is that, and the message says which step is missing;
- resource-based throttling is a 429 with ``Retry-After`` (environment-wide: every request of
  the run waits, see the engine's pause); 5xx are retried;
- the optional user-based service protection limits (per user, Dataverse's three measures) answer
  429 with ``Retry-After`` like the resource-based ones; where a response reports the budget
  left (Dataverse's ``x-ms-ratelimit-*`` headers), the run slows down near its end as on Dataverse;
- the request id is ``ms-dyn-aid`` (the activity id a support case asks for);
- URLs are relative to ``<environment>/data``.
"""

from __future__ import annotations

import typing as t

from tap_dynamics.engine import override
from tap_dynamics.engine.policy import Pacing, ServicePolicy, budget_pacing
from tap_dynamics.engine.retry import number
from tap_dynamics.errors import AuthError

if t.TYPE_CHECKING:
    import requests

ENTRA_APPLICATIONS = "System administration > Setup > Microsoft Entra applications"


def not_registered(identity: str, url: str) -> AuthError:
    """The one line for an app that Entra ID gives tokens but F&O does not know."""
    return AuthError(
        f"Finance & Operations refused {identity} (401 on {url}/data with a fresh token) — register the "
        f"app inside F&O: {ENTRA_APPLICATIONS}, New, enter the app's client ID and map it to an F&O "
        "user with read access to the entities (and check that url is the environment the token is for)"
    )


class FinOpsPolicy(ServicePolicy):
    """F&O's request id header and its 401 for unregistered apps."""

    service_name = "Finance & Operations"
    request_id_headers = ("ms-dyn-aid", "x-ms-request-id", "request-id")
    # The user-based limits are Dataverse's (6,000 requests, 1,200 s per 5 minutes): the same
    # thresholds of proactive slowdown.
    LOW_BURST_REQUESTS = 200
    LOW_TIME_SECONDS = 60.0

    @override
    def pacing(self, response: requests.Response) -> Pacing | None:
        left = (
            number(response.headers.get("x-ms-ratelimit-burst-remaining-xrm-requests")),
            number(response.headers.get("x-ms-ratelimit-time-remaining-xrm-requests")),
        )
        return budget_pacing(*left, self.LOW_BURST_REQUESTS, self.LOW_TIME_SECONDS)

    @override
    def refusal(self, status: int, code: str | None, identity: str, origin: str) -> Exception | None:
        if status == 401:
            return not_registered(identity, origin)
        return None


__all__ = ["ENTRA_APPLICATIONS", "FinOpsPolicy", "not_registered"]
