"""Certificate credentials: the ``private_key_jwt`` client assertion Entra ID verifies."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from typing import TYPE_CHECKING

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from . import b64url, b64url_decode

if TYPE_CHECKING:
    from .entra import App, Entra


def verify_assertion(self: Entra, app: App, tenant: str, form: dict[str, str]) -> tuple[int, dict] | None:
    """Verify a private_key_jwt client assertion the way Entra ID does: signature against
    a certificate uploaded for the app (found by x5t / x5t#S256), aud = token endpoint,
    iss = sub = client_id, exp/nbf, and jti not seen before."""
    cid = app.client_id
    if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
        return self.error(50027, reason="client_assertion_type must be jwt-bearer.")
    parts = form.get("client_assertion", "").split(".")
    try:
        header = orjson.loads(b64url_decode(parts[0]))
        claims = orjson.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except Exception:
        return self.error(50027, reason="The assertion is not a JWT.")
    self.assertion_headers.append(dict(header))
    # RFC 7515 says unpadded base64url; MSAL sends it padded. Entra ID accepts both.
    thumb_s256 = str(header.get("x5t#S256") or "").rstrip("=") or None
    thumb_sha1 = str(header.get("x5t") or "").rstrip("=") or None
    shown = thumb_s256 or thumb_sha1 or ""
    cert = None
    for candidate in app.certificates:
        if ((thumb_s256 and b64url(candidate.fingerprint(hashes.SHA256())) == thumb_s256)
                or (thumb_sha1 and b64url(candidate.fingerprint(hashes.SHA1())) == thumb_sha1)):
            cert = candidate
    if shown and len(shown) < 60:  # show it the way Azure shows thumbprints: upper hex
        with contextlib.suppress(Exception):
            shown = b64url_decode(shown).hex().upper()
    if cert is None:
        return self.error(700027, reason="The key was not found.", thumbprint=shown, client_id=cid)
    now = time.time()
    if cert.not_valid_after_utc.timestamp() < now:
        return self.error(700027, reason=(
            "The key used is expired., Found key 'Start=" +
            cert.not_valid_before_utc.strftime("%m/%d/%Y %H:%M:%S") + ", End=" +
            cert.not_valid_after_utc.strftime("%m/%d/%Y %H:%M:%S") + "'"),
            thumbprint=shown, client_id=cid)
    signing_input = (parts[0] + "." + parts[1]).encode()
    alg = header.get("alg")
    key = cert.public_key()
    try:
        if alg == "RS256":
            key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "PS256":
            key.verify(signature, signing_input,
                       padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                   salt_length=padding.PSS.AUTO), hashes.SHA256())
        else:
            return self.error(50027, reason=f"Unsupported signing algorithm '{alg}'.")
    except InvalidSignature:
        return self.error(700027, reason="Signature validation failed.", thumbprint=shown,
                          client_id=cid)
    if claims.get("iss") != claims.get("sub") or str(claims.get("iss", "")).lower() != cid:
        return self.error(700021)
    expected_aud = f"{self.authority_host}/{tenant}/oauth2/v2.0/token".lower()
    if str(claims.get("aud", "")).lower() != expected_aud:
        return self.error(50027, reason=f"Invalid audience '{claims.get('aud')}' (expected the token endpoint).")
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
    if not isinstance(exp, (int, float)) or exp < now - 300 or (nbf or 0) > now + 300:
        fmt = lambda v: dt.datetime.fromtimestamp(v or 0, dt.timezone.utc).strftime("%m/%d/%Y %H:%M:%S")  # noqa: E731
        return self.error(700024, now=fmt(now), nbf=fmt(nbf), exp=fmt(exp if isinstance(exp, (int, float)) else 0))
    # MSAL reuses one assertion for its whole lifetime (create_regenerative_assertion, up to
    # 10 min), so the same assertion again is fine, as Entra ID accepts it; a different
    # assertion with a jti seen before is a replay. Emulator choice: the exact rule is not
    # documented.
    jti = claims.get("jti")
    assertion = form.get("client_assertion", "")
    if not jti or self.used_jti.get(jti, assertion) != assertion:
        return self.error(50027, reason="The assertion's jti was already used (replay).")
    self.used_jti[jti] = assertion
    return None
