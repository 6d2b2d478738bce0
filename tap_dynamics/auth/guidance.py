"""Entra ID's errors in the words of the person who must fix them.

AADSTS numbers are the stable part of Entra ID errors; the text changes. For each one this table
says the cause in Dynamics-admin terms and the fix, and :func:`auth_error_from_response` turns an
error body into one line that keeps Microsoft's own first sentence (searchable) and drops the
trace and correlation ids that follow it.
"""

from __future__ import annotations

import re
import typing as t

from tap_dynamics.errors import AuthError

# Said after every message whose fix is a new interactive sign-in (auth_scheme AzureAD).
LOGIN_AGAIN = "run `tap-dynamics login --config …` again to sign in"

# `{client_id}`, `{tenant_id}`, `{url}` are filled in.
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
    # 65001 for a resource whose permission must be added first (Resource.permission)
    "65001-permission": (
        "the app has no admin-consented permission for {url}",
        "in Azure portal > App registrations > your app > API permissions, add {permission}, then "
        "click 'Grant admin consent for <tenant>' (needs an administrator)",
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
    payload: t.Mapping[str, t.Any],
    *,
    client_id: str,
    tenant_id: str,
    url: str,
    wrong_resource: str | None = None,
    permission: str = "",
) -> AuthError:
    """Turn an Entra ID error body into one actionable line.

    ``permission``: the API permission the resource needs (``Resource.permission``), named by
    the line for missing consent (AADSTS65001).

    The first line of ``error_description`` is kept (it carries Microsoft's own words), without
    the trace/correlation ids that follow it, so that the user can search for it.
    ``wrong_resource``: the fix for AADSTS500011 when the resource is not a Dataverse org.
    """
    code = aadsts_code(payload)
    description = str(payload.get("error_description") or payload.get("error") or "unknown error")
    first_line = description.strip().splitlines()[0] if description.strip() else description
    guidance: tuple[str, str] | None
    if code == "700027" and "expired" in first_line.lower():
        guidance = AADSTS_GUIDANCE["700027-expired"]
    elif code == "500011" and wrong_resource:  # not a Dataverse org: the service says what to fix
        guidance = ("the resource {url} is not known in tenant {tenant_id}", wrong_resource)
    elif code == "65001" and permission:
        guidance = AADSTS_GUIDANCE["65001-permission"]
    else:
        guidance = AADSTS_GUIDANCE.get(code or "")
    if guidance:
        cause, fix = (
            part.format(client_id=client_id, tenant_id=tenant_id, url=url, permission=permission)
            for part in guidance
        )
        return AuthError(f"AADSTS{code}: {cause} — {fix}. (Entra ID said: {first_line})", code=code)
    error = payload.get("error") or "error"
    return AuthError(
        f"authentication failed ({error}): {first_line} — check tenant_id, client_id and the "
        "credential settings",
        code=code,
    )
