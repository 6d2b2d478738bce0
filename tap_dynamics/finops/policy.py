"""What is particular to F&O's OData service (``/data``), for the engine's transport.

- F&O answers an app that has a token but is not registered in F&O (System administration >
  Setup > Microsoft Entra applications) with 401, exactly like a bad token: after one fresh
  token the 401 is that, and the message says which step is missing;
- resource-based throttling is a 429 with ``Retry-After`` (environment-wide: every request of
  the run waits, see the engine's pause); 5xx are retried;
- the request id is ``ms-dyn-aid`` (the activity id a support case asks for);
- URLs are relative to ``<environment>/data``.
"""

from __future__ import annotations

from tap_dynamics.engine import override
from tap_dynamics.engine.policy import ServicePolicy
from tap_dynamics.errors import AuthError

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

    @override
    def refusal(self, status: int, code: str | None, identity: str, origin: str) -> Exception | None:
        if status == 401:
            return not_registered(identity, origin)
        return None


__all__ = ["ENTRA_APPLICATIONS", "FinOpsPolicy", "not_registered"]
