"""Entra ID's error catalogue (``AADSTS…``) and the error body it sends: ``error``,
``error_description`` with trace and correlation ids, ``error_codes``, ``timestamp``."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

AADSTS = {
    7000215: ("invalid_client", 401,
              "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
              "request is the client secret value, not the client secret ID, for a secret added "
              "to app '{client_id}'."),
    7000222: ("invalid_client", 401,
              "AADSTS7000222: The provided client secret keys for app '{client_id}' are expired. "
              "Visit the Azure portal to create new keys for your app: "
              "https://aka.ms/NewClientSecret, or consider using certificate credentials for "
              "added security: https://aka.ms/certCreds."),
    7000218: ("invalid_client", 401,
              "AADSTS7000218: The request body must contain the following parameter: "
              "'client_assertion' or 'client_secret'."),
    700016: ("unauthorized_client", 400,
             "AADSTS700016: Application with identifier '{client_id}' was not found in the "
             "directory '{tenant}'. This can happen if the application has not been installed "
             "by the administrator of the tenant or consented to by any user in the tenant. You "
             "may have sent your authentication request to the wrong tenant."),
    90002: ("invalid_request", 400,
            "AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct "
            "tenant ID and are signing into the correct cloud. Check with your subscription "
            "administrator, this may happen if there are no active subscriptions for the tenant."),
    500011: ("invalid_resource", 400,
             "AADSTS500011: The resource principal named {resource} was not found in the tenant "
             "named {tenant}. This can happen if the application has not been installed by the "
             "administrator of the tenant or consented to by any user in the tenant. You might "
             "have sent your authentication request to the wrong tenant."),
    65001: ("invalid_grant", 400,
            "AADSTS65001: The user or administrator has not consented to use the application "
            "with ID '{client_id}' named 'tap-dynamics'. Send an interactive authorization "
            "request for this user and resource."),
    70011: ("invalid_scope", 400,
            "AADSTS70011: The provided request must include a 'scope' input parameter. The "
            "provided value for the input parameter 'scope' is not valid. The scope {scope} is "
            "not valid."),
    1002012: ("invalid_scope", 400,
              "AADSTS1002012: The provided value for scope {scope} is not valid. Client "
              "credential flows must have a scope value with /.default suffixed to the resource "
              "identifier (application ID URI)."),
    700022: ("invalid_scope", 400,
             "AADSTS700022: The provided value for the input parameter scope is not valid because "
             "it contains more than one resource. Scope {scope} is not valid."),
    900144: ("invalid_request", 400,
             "AADSTS900144: The request body must contain the following parameter: '{param}'."),
    70003: ("unsupported_grant_type", 400,
            "AADSTS70003: The app requested an unsupported grant type '{grant}'."),
    50049: ("invalid_instance", 400,
            "AADSTS50049: Unknown or invalid instance."),
    # --- certificate credentials (text as Entra ID returns it; reasons vary by case)
    700027: ("invalid_client", 401,
             "AADSTS700027: Client assertion contains an invalid signature. [Reason - {reason}, "
             "Thumbprint of key used by client: '{thumbprint}', Please visit the Azure Portal, "
             "Graph Explorer or directly use MS Graph to see configured keys for app Id "
             "'{client_id}'. Review the documentation at "
             "https://docs.microsoft.com/en-us/graph/api/application-get?view=graph-rest-1.0&tabs=http "
             "to learn how to fetch application keys.]"),
    700024: ("invalid_client", 401,
             "AADSTS700024: Client assertion is not within its valid time range. Current time: "
             "{now}, assertion valid from {nbf}, expiry time of assertion {exp}."),
    700021: ("invalid_client", 401,
             "AADSTS700021: Client assertion application identifier doesn't match 'client_id' "
             "parameter. Review the documentation at https://docs.microsoft.com/en-us/azure/"
             "active-directory/develop/active-directory-certificate-credentials ."),
    # Emulator choice: Entra ID's exact code for a wrong `aud` or a replayed `jti` is not
    # documented; both are rejected as a malformed assertion.
    50027: ("invalid_client", 401,
            "AADSTS50027: JWT token is invalid or malformed. {reason}"),
    # --- user flows
    50011: ("invalid_request", 400,
            "AADSTS50011: The redirect URI '{redirect_uri}' specified in the request does not "
            "match the redirect URIs configured for the application '{client_id}'. Make sure "
            "the redirect URI sent in the request matches one added to your application in the "
            "Azure portal."),
    501481: ("invalid_grant", 400,
             "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the "
             "authorization request."),
    54005: ("invalid_grant", 400,
            "AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a "
            "new valid code or use an existing refresh token."),
    70000: ("invalid_grant", 400,
            "AADSTS70000: The provided value for the 'code' parameter is not valid."),
    9002313: ("invalid_grant", 400,
              "AADSTS9002313: Invalid request. Request is malformed or invalid."),
    700082: ("invalid_grant", 400,
             "AADSTS700082: The refresh token has expired due to inactivity. The token was issued "
             "on {issued} and was inactive for 90.00:00:00."),
    50173: ("invalid_grant", 400,
            "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth "
            "token is needed. The user might have changed or reset their password. The grant was "
            "issued on '{issued}' and the TokensValidFrom date (before which tokens are not valid) "
            "for this user is '{now}'."),
    50076: ("invalid_grant", 400,
            "AADSTS50076: Due to a configuration change made by your administrator, or because "
            "you moved to a new location, you must use multi-factor authentication to access "
            "'{resource}'."),
    70016: ("authorization_pending", 400,
            "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling."),
    70020: ("expired_token", 400,
            "AADSTS70020: The provided value for the input parameter 'device_code' is not valid. "
            "This device code has expired."),
    # --- transient failures of the service itself (token-endpoint faults)
    90033: ("temporarily_unavailable", 503,
            "AADSTS90033: A transient error has occurred. Please try again."),
    90055: ("temporarily_unavailable", 429,
            "AADSTS90055: TenantThrottlingError - There are too many incoming requests. This "
            "exception is thrown for blocked tenants."),
    # Emulator choice: the number Entra ID attaches to slow_down is not documented.
    70019: ("slow_down", 400,
            "AADSTS70019: Slow down: the client is polling too often."),
}


def aadsts_error(authority_host: str, code: int, **fmt: Any) -> tuple[int, dict]:
    """(HTTP status, body) of the error ``code`` as Entra ID sends it."""
    err, status, text = AADSTS[code]
    now = dt.datetime.now(dt.timezone.utc)
    ts = now.strftime("%Y-%m-%d %H:%M:%SZ")
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    fmt.setdefault("client_id", "")
    fmt.setdefault("tenant", "")
    msg = text.format(**fmt)
    body = {
        "error": err,
        "error_description": f"{msg}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\n"
                             f"Timestamp: {now.strftime('%Y-%m-%d %H:%M:%S')}Z",
        "error_codes": [code], "timestamp": ts, "trace_id": trace, "correlation_id": corr,
        "error_uri": f"{authority_host}/error?code={code}",
    }
    if code == 65001:
        body["suberror"] = "consent_required"
    return status, body
