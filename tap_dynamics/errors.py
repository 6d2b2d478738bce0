"""Errors that reach the user, and the exit codes that go with them.

Every failure the user can act on (bad config, rejected credentials, unreachable org, a table the
service refuses) is raised as a :class:`TapDynamicsError` whose ``str()`` is one line that says what
is wrong and how to fix it. The CLI wrapper in :mod:`tap_dynamics.tap` prints that line and exits
with the error's code, never a traceback. Secrets never go into these messages: callers pass only
setting names, URLs and the server's own error text.
"""

from __future__ import annotations

import re
import typing as t

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


class DataverseError(TapDynamicsError):
    """The Web API answered with an error we do not retry (or no longer retry)."""

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


class ServiceUnavailable(DataverseError):
    """The service kept failing (throttling, 5xx, broken responses) beyond the retry budget.

    Distinct from other :class:`DataverseError`\ s because the fix is usually "run again later"
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


# --- Entra ID error catalogue --------------------------------------------------------------------
# AADSTS numbers are the stable part of Entra ID errors; the text changes. For each one we say the
# cause in Dynamics-admin terms and the fix. `{client_id}`, `{tenant_id}`, `{url}` are filled in.
AADSTS_GUIDANCE: dict[str, tuple[str, str]] = {
    "7000215": (
        "the client secret is wrong",
        "set client_secret to the secret's Value (not its Secret ID) from Azure portal > "
        "App registrations > your app > Certificates & secrets",
    ),
    "7000222": (
        "the client secret has expired",
        "create a new secret under App registrations > your app > Certificates & secrets "
        "and update client_secret",
    ),
    "7000218": (
        "no client secret or certificate was sent",
        "set client_secret or certificate_path; for AzureAD without a secret, turn on 'Allow "
        "public client flows' under App registrations > your app > Authentication",
    ),
    "700016": (
        "application {client_id} was not found in tenant {tenant_id}",
        "check client_id (Application (client) ID on the app's Overview page) and tenant_id "
        "(Directory (tenant) ID); a multi-tenant app must be consented in this tenant",
    ),
    "90002": (
        "tenant {tenant_id} was not found",
        "check tenant_id (Directory (tenant) ID in Azure portal > Microsoft Entra ID > Overview) "
        "and that authority_host matches the org's cloud (public, US Government, China)",
    ),
    "500011": (
        "the resource {url} is not a Dynamics org in this tenant",
        "set url to your customer's org URL exactly as the browser shows it "
        "(e.g. https://mycompany.crm4.dynamics.com) and check tenant_id",
    ),
    "65001": (
        "admin consent is missing for the app",
        "in Azure portal > App registrations > your app > API permissions, click "
        "'Grant admin consent for <tenant>' (needs an administrator)",
    ),
    "700027": (
        "Entra ID does not know the certificate the tap signed with",
        "upload the certificate in certificate_path (its public part, .cer/.pem) under App "
        "registrations > your app > Certificates & secrets > Certificates, or point "
        "certificate_path at the certificate that is uploaded there",
    ),
    "700027-expired": (
        "the certificate uploaded for the app has expired",
        "create a new certificate, upload it under App registrations > your app > Certificates "
        "& secrets > Certificates and set certificate_path to it",
    ),
    "700024": (
        "the certificate assertion is outside its valid time range",
        "check that this machine's clock is correct (NTP)",
    ),
    "700021": (
        "the certificate assertion names another application",
        "check client_id: it must be the app the certificate is uploaded to",
    ),
    "50011": (
        "the redirect URI is not registered for the app",
        "add callback_url (default http://localhost:33333) as a Redirect URI under App "
        "registrations > your app > Authentication (platform 'Mobile and desktop applications'), "
        "or set callback_url to the one registered there",
    ),
    "501481": (
        "the sign-in code did not match this login (PKCE check failed)",
        "run `tap-dynamics login` again",
    ),
    "54005": (
        "the sign-in code was already used",
        "run `tap-dynamics login` again",
    ),
    "50173": (
        "the saved sign-in was revoked (password changed or sessions revoked by an administrator)",
        "run `tap-dynamics login` again",
    ),
    "70011": (
        "the requested scope is invalid",
        "check that url is the org URL (the tap requests <url>/.default)",
    ),
    "50076": (
        "multi-factor authentication is now required for this user",
        "run `tap-dynamics login` again interactively and complete the MFA prompt",
    ),
    "700082": (
        "the refresh token has expired",
        "run `tap-dynamics login` again to get a new one",
    ),
    "70008": (
        "the refresh token has expired",
        "run `tap-dynamics login` again to get a new one",
    ),
}

_AADSTS_RE = re.compile(r"AADSTS(\d+)")


def aadsts_code(payload: t.Mapping[str, t.Any]) -> str | None:
    """Return the AADSTS number of an Entra ID error response, if any."""
    codes = payload.get("error_codes")
    if isinstance(codes, list) and codes:
        return str(codes[0])
    match = _AADSTS_RE.search(str(payload.get("error_description") or ""))
    return match.group(1) if match else None


def auth_error_from_response(
    payload: t.Mapping[str, t.Any], *, client_id: str, tenant_id: str, url: str
) -> AuthError:
    """Turn an Entra ID error body into one actionable line.

    The first line of ``error_description`` is kept (it carries Microsoft's own words), without
    the trace/correlation ids that follow it, so that the user can search for it.
    """
    code = aadsts_code(payload)
    description = str(payload.get("error_description") or payload.get("error") or "unknown error")
    first_line = description.strip().splitlines()[0] if description.strip() else description
    if code == "700027" and "expired" in first_line.lower():
        guidance = AADSTS_GUIDANCE["700027-expired"]
    else:
        guidance = AADSTS_GUIDANCE.get(code or "")
    if guidance:
        cause, fix = (
            part.format(client_id=client_id, tenant_id=tenant_id, url=url) for part in guidance
        )
        return AuthError(f"AADSTS{code}: {cause} — {fix}. (Entra ID said: {first_line})", code=code)
    error = payload.get("error") or "error"
    return AuthError(
        f"authentication failed ({error}): {first_line} — check tenant_id, client_id and the "
        "credential settings",
        code=code,
    )


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
