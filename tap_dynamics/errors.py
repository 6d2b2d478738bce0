"""Errors that reach the user, and the exit codes that go with them.

Every failure the user can act on (bad config, rejected credentials, unreachable org, a table the
service refuses) is raised as a :class:`TapDynamicsError` whose ``str()`` is one line that says what
is wrong and how to fix it. The CLI wrapper in :mod:`tap_dynamics.tap` prints that line and exits
with the error's code, never a traceback. Secrets never go into these messages: callers pass only
setting names, URLs and the server's own error text.
"""

from __future__ import annotations

# Exit codes, documented in the README. Schedulers (Airflow, Meltano) can branch on them.
EXIT_OK = 0
EXIT_CRASH = 1  # an unexpected bug: the one case where a traceback is useful
EXIT_CONFIG = 2  # configuration or authentication problem: a person must fix settings
EXIT_STREAMS_FAILED = 3  # the run finished, but some tables failed and were skipped
EXIT_SERVICE = 4  # the service kept failing (throttling, outages) beyond the retry budget


class TapDynamicsError(Exception):
    """Base class: an error with a one-line, actionable message and an exit code."""

    exit_code: int = EXIT_CRASH

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # always one line


class ConfigError(TapDynamicsError):
    """A setting is missing, malformed or inconsistent. Raised before any network call."""

    exit_code = EXIT_CONFIG


class AuthError(TapDynamicsError):
    """Entra ID or Dataverse refused our credentials; a person must change something."""

    exit_code = EXIT_CONFIG

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class ConnectionProblem(TapDynamicsError):
    """The org or the authority cannot be reached, or TLS verification failed."""

    exit_code = EXIT_CONFIG


def cannot_reach(url: str, detail: str) -> ConnectionProblem:
    """The one line for an org URL that no connection can be made to (``check`` and a sync)."""
    return ConnectionProblem(
        f"cannot reach {url} ({detail}) — check url (the org URL as the browser shows it, e.g. "
        "https://myorg.crm.dynamics.com) and the network/proxy"
    )


class SecurityError(TapDynamicsError):
    """The tap refused to do something unsafe (e.g. send the token to another host)."""

    exit_code = EXIT_CONFIG


class ServiceError(TapDynamicsError):
    """A service (any system's API) answered with an error we do not retry (or no longer retry)."""

    exit_code = EXIT_SERVICE

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        table: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.request_id = request_id
        self.table = table


class PermissionDenied(ServiceError):
    """The service refused one table for want of a permission that a person must grant.

    The table is skipped and the others go on; the run then exits with :data:`EXIT_CONFIG`,
    because no rerun helps until someone grants the permission the message names.
    """

    exit_code = EXIT_CONFIG


class ServiceUnavailable(ServiceError):
    """The service kept failing (throttling, 5xx, broken responses) beyond the retry budget.

    Distinct from other :class:`ServiceError` errors because the fix is usually "run again later"
    (a scheduler may retry the run), not "change something".
    """

    exit_code = EXIT_SERVICE


class TokenServiceUnavailable(TapDynamicsError):
    """A token endpoint failed transiently (429, 5xx, a proxy's page, a dropped connection).

    The client retries it like any other request (``retry_after`` honoured) within its retry
    budget; only when that is spent, or outside a request (``login``), does it end the run,
    with the exit code of a service that kept failing — not the one of a wrong credential.
    """

    exit_code = EXIT_SERVICE

    def __init__(self, message: str, *, retry_after: float | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.request_id = request_id


class StreamsFailed(TapDynamicsError):
    """Raised at the end of a run in which some tables failed (and were skipped)."""

    exit_code = EXIT_STREAMS_FAILED

    def __init__(self, message: str, *, exit_code: int = EXIT_STREAMS_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Dataverse answers 403 with this code when the token is valid but its service principal has no
# application user in the environment (or the user was disabled).
NOT_A_MEMBER = "0x80072560"


def no_application_user(identity: str, url: str) -> AuthError:
    """The one line for a service principal that Entra ID accepts but the environment does not."""
    return AuthError(
        f"Dataverse refused {identity} (403, not a member of the organization {url}) — create an "
        "application user for the app: Power Platform admin center > Environments > your "
        "environment > Settings > Users + permissions > Application users > New app user, and "
        "give it a security role that can read the tables",
        code=NOT_A_MEMBER,
    )
