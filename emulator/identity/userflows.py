"""Entra ID's user flows as MSAL Python drives them: authorization code with PKCE (the
emulated user is already signed in and consents at once), device code (with scripted
pending/slow_down answers), refresh tokens (with expiry, revocation and MFA knobs)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from . import ISSUED_SECRETS, b64url

if TYPE_CHECKING:
    from .entra import App


class UserFlows:
    """The user-flow endpoints of :class:`~emulator.identity.entra.Entra`."""

    # provided by Entra
    apps: dict[str, App]
    codes: dict[str, dict]
    refresh_tokens: dict[str, dict]
    device_codes: dict[str, dict]
    refresh_token_state: str | None
    single_use_refresh_tokens: bool
    device_interval: int
    device_lifetime: int
    device_script: list[str]
    user: str
    user_oid: str
    authority_host: str
    token_lifetime: int
    default_audience: str

    def error(self, code: int, **fmt: Any) -> tuple[int, dict]:
        raise NotImplementedError

    def known_tenant(self, tenant: str) -> bool:
        raise NotImplementedError

    def resource(self, uri: str) -> str | None:
        raise NotImplementedError

    def authenticate_client(self, app: App, tenant: str, form: dict[str, str], secret: str | None,
                            require: bool) -> tuple[int, dict] | None:
        raise NotImplementedError

    def issue(self, app: App, lifetime: int | None = None, audience: str | None = None,
              user: bool = False) -> str:
        raise NotImplementedError

    def _resource_from_scope(self, scope: str) -> str | None:
        for item in scope.split():
            if item.startswith("https://") or item.startswith("api://"):
                return item.rsplit("/", 1)[0]
        return None

    def authorize(self, tenant: str, query: dict[str, str]) -> tuple[int, list, bytes]:
        """GET /authorize: the emulated user is already signed in and consents at once, so the
        answer is the redirect to ``redirect_uri`` with a code (or an error page)."""
        def page(code: int, **fmt: Any) -> tuple[int, list, bytes]:
            _status, body = self.error(code, **fmt)
            return 400, [("Content-Type", "application/json")], orjson.dumps(body)
        if not self.known_tenant(tenant):
            return page(90002, tenant=tenant)
        app = self.apps.get(query.get("client_id", "").lower())
        if app is None or app.tenant_id != tenant.lower():
            return page(700016, client_id=query.get("client_id", ""), tenant=tenant)
        redirect = query.get("redirect_uri", "")
        if redirect not in app.redirect_uris:
            return page(50011, redirect_uri=redirect, client_id=app.client_id)
        if query.get("response_type") != "code":
            return page(900144, param="response_type=code")
        if not query.get("code_challenge") and app.public_client:
            return page(900144, param="code_challenge")  # PKCE is mandatory for public clients
        code = "0.A" + b64url(secrets.token_bytes(48))
        self.codes[code] = {"client_id": app.client_id, "redirect_uri": redirect,
                            "challenge": query.get("code_challenge"),
                            "method": query.get("code_challenge_method", "plain"),
                            "scope": query.get("scope", ""), "nonce": query.get("nonce"),
                            "expires": time.time() + 600, "used": False}
        ISSUED_SECRETS.add(code)
        params = {"code": code, "state": query.get("state", ""), "session_state": str(uuid.uuid4())}
        location = redirect + ("&" if "?" in redirect else "?") + urllib.parse.urlencode(params)
        return 302, [("Location", location), ("Content-Length", "0")], b""

    def device_authorization(self, tenant: str, form: dict[str, str]) -> tuple[int, dict]:
        if not self.known_tenant(tenant):
            return self.error(90002, tenant=tenant)
        app = self.apps.get(form.get("client_id", "").lower())
        if app is None or app.tenant_id != tenant.lower():
            return self.error(700016, client_id=form.get("client_id", ""), tenant=tenant)
        device_code = "DAQABAAEAAAD" + b64url(secrets.token_bytes(48))
        user_code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(9))
        ISSUED_SECRETS.add(device_code)
        self.device_codes[device_code] = {"client_id": app.client_id, "user_code": user_code,
                                          "scope": form.get("scope", ""), "approved": False,
                                          "declined": False, "used": False,
                                          "expires": time.time() + self.device_lifetime}
        return 200, {"user_code": user_code, "device_code": device_code,
                     "verification_uri": "https://microsoft.com/devicelogin",
                     "expires_in": self.device_lifetime, "interval": self.device_interval,
                     "message": f"To sign in, use a web browser to open the page "
                                f"https://microsoft.com/devicelogin and enter the code {user_code} "
                                f"to authenticate."}

    def approve_device(self, user_code: str, decline: bool = False) -> None:
        """The user enters the code in a browser and signs in (or declines)."""
        for entry in self.device_codes.values():
            if entry["user_code"] == user_code:
                entry["declined" if decline else "approved"] = True
                return
        raise KeyError(user_code)

    def user_token(self, tenant: str, grant: str, form: dict[str, str],
                   headers: dict[str, str]) -> tuple[int, dict]:
        client_id = form.get("client_id", "")
        app = self.apps.get(client_id.lower())
        if app is None or app.tenant_id != tenant.lower():
            return self.error(700016, client_id=client_id, tenant=tenant)
        failed = self.authenticate_client(app, tenant, form, form.get("client_secret"), require=False)
        if failed:
            return failed
        scope = form.get("scope", "")
        issued = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=91)
        if grant == "authorization_code":
            entry = self.codes.get(form.get("code", ""))
            if entry is None or entry["client_id"] != app.client_id or entry["expires"] < time.time():
                return self.error(70000)
            if entry["used"]:
                return self.error(54005)
            if form.get("redirect_uri") != entry["redirect_uri"] or entry["redirect_uri"] not in app.redirect_uris:
                # Also checked against the registration now: removed since the sign-in started.
                return self.error(50011, redirect_uri=form.get("redirect_uri", ""), client_id=app.client_id)
            verifier = form.get("code_verifier", "")
            if entry["challenge"]:
                computed = (b64url(hashlib.sha256(verifier.encode()).digest())
                            if entry["method"] == "S256" else verifier)
                if not verifier or not hmac.compare_digest(computed, entry["challenge"]):
                    return self.error(501481)
            entry["used"] = True
            scope = scope or entry["scope"]
            nonce = entry["nonce"]
        elif grant == "refresh_token":
            rt = form.get("refresh_token", "")
            entry = self.refresh_tokens.get(rt)
            if entry is None or entry["client_id"] != app.client_id or entry["revoked"]:
                return self.error(9002313)
            resource = self._resource_from_scope(scope) or self.default_audience
            state = self.refresh_token_state
            when = issued.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
            if state == "expired":
                return self.error(700082, issued=when)
            if state == "revoked":
                return self.error(50173, issued=when, now=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000Z"))
            if state == "mfa":
                status, body = self.error(50076, resource=resource)
                body["suberror"] = "basic_action"
                return status, body
            if self.single_use_refresh_tokens:
                entry["revoked"] = True
            nonce = None
        else:  # device code: MSAL sends the code as both device_code and code
            code = form.get("device_code") or form.get("code") or ""
            entry = self.device_codes.get(code)
            if entry is None or entry["client_id"] != app.client_id or entry["used"]:
                return self.error(9002313)
            if self.device_script:
                return self.error({"slow_down": 70019, "authorization_pending": 70016}[self.device_script.pop(0)])
            if entry["expires"] < time.time():
                return self.error(70020)
            if entry["declined"]:
                return 400, {"error": "authorization_declined",
                             "error_description": "AADSTS70000: The user declined the sign-in.",
                             "error_codes": [70000]}
            if not entry["approved"]:
                return self.error(70016)
            entry["used"] = True
            scope = scope or entry["scope"]
            nonce = None
        resource = self._resource_from_scope(scope)
        if resource is None:
            return self.error(70011, scope=scope)
        audience = self.resource(resource)
        if audience is None:
            return self.error(500011, resource=resource, tenant=tenant)
        if not app.consented(audience):
            return self.error(65001, client_id=app.client_id)
        return 200, self.user_response(app, audience, nonce)

    def user_response(self, app: App, resource: str, nonce: str | None) -> dict:
        lifetime = int(self.token_lifetime)
        refresh = "1.A" + b64url(secrets.token_bytes(64))
        ISSUED_SECRETS.add(refresh)
        self.refresh_tokens[refresh] = {"client_id": app.client_id, "revoked": False}
        now = int(time.time())
        id_claims = {"aud": app.client_id, "iss": f"{self.authority_host}/{app.tenant_id}/v2.0",
                     "iat": now, "nbf": now, "exp": now + 3600, "name": "Alex Wilber",
                     "oid": self.user_oid, "preferred_username": self.user, "sub": self.user_oid,
                     "tid": app.tenant_id, "ver": "2.0"}
        if nonce:
            id_claims["nonce"] = nonce
        id_token = (b64url(orjson.dumps({"typ": "JWT", "alg": "RS256", "kid": "emulator"})) + "." +
                    b64url(orjson.dumps(id_claims)) + "." + b64url(secrets.token_bytes(64)))
        client_info = b64url(orjson.dumps({"uid": self.user_oid, "utid": app.tenant_id}))
        return {"token_type": "Bearer", "scope": f"{resource}/user_impersonation",
                "expires_in": lifetime, "ext_expires_in": lifetime,
                "access_token": self.issue(app, lifetime, resource, user=True),
                "refresh_token": refresh, "id_token": id_token, "client_info": client_info}
