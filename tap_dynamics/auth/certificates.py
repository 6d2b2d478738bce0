"""Certificate credentials of an app registration, read before any network call.

A wrong password, a PEM without its private key or a file that is not a certificate is one
clear line here rather than an MSAL traceback at the first token request.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import typing as t

from tap_dynamics.errors import ConfigError

if t.TYPE_CHECKING:
    from tap_dynamics.config.auth import Certificate

LOGGER = logging.getLogger("tap-dynamics.auth")


def client_credential(secret: str, certificate: Certificate | None) -> str | dict[str, t.Any]:
    """What MSAL gets as ``client_credential``: the secret, or a certificate description.

    The certificate file is read here (before any network call) so that a wrong password, a PEM
    without its private key or a file that is not a certificate is one clear line, not an MSAL
    traceback. PFX files go to MSAL by path, which makes it sign with PS256 and send
    ``x5t#S256``; PEM keys go with their SHA-1 thumbprint (RS256 + ``x5t``), which Entra ID
    accepts for every registered certificate.
    """
    if certificate is None:
        return secret
    info = load_certificate(certificate)
    if certificate.kind == "PFXFILE":
        credential: dict[str, t.Any] = {"private_key_pfx_path": certificate.path}
        if certificate.password:
            credential["passphrase"] = certificate.password
        return credential
    return {"private_key": info["private_key_pem"], "thumbprint": info["sha1"]}


def load_certificate(certificate: Certificate) -> dict[str, t.Any]:
    """Read the certificate and key; return thumbprints, expiry and an unencrypted key PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    path = certificate.path
    password = certificate.password.encode() if certificate.password else None
    with open(path, "rb") as handle:
        data = handle.read()
    if certificate.kind == "PFXFILE":
        try:
            key, cert, _extra = pkcs12.load_key_and_certificates(data, password)
        except ValueError:
            hint = "certificate_password is wrong" if password else "the file needs certificate_password"
            msg = (
                f"cannot open the PFX file {path}: {hint} (or it is not a PKCS#12 file — "
                "set certificate_type PEMKEY_FILE for PEM)"
            )
            raise ConfigError(msg) from None
    else:
        cert = None
        key = None
        try:
            certs = x509.load_pem_x509_certificates(data)
            cert = certs[0] if certs else None
        except ValueError:
            cert = None
        key_pem = _pem_block(data, b"PRIVATE KEY")
        if key_pem:
            try:
                key = serialization.load_pem_private_key(key_pem, password)
            except TypeError:
                msg = (
                    f"the private key in {path} is encrypted — set certificate_password"
                    if password is None
                    else f"the private key in {path} is not encrypted — remove certificate_password"
                )
                raise ConfigError(msg) from None
            except ValueError:
                msg = f"cannot read the private key in {path}: certificate_password is wrong or the key is damaged"
                raise ConfigError(msg) from None
        if key is None:
            msg = (
                f"the PEM file {path} has no private key — certificate_path needs the private key "
                "and the certificate in one file (PEMKEY_FILE), or use a PFX file"
            )
            raise ConfigError(msg)
    if cert is None:
        msg = (
            f"the file {path} has no certificate — include the certificate that is uploaded to "
            "the app registration next to the private key"
        )
        raise ConfigError(msg)
    der = cert.public_bytes(serialization.Encoding.DER)
    not_after = cert.not_valid_after_utc
    if not_after < dt.datetime.now(dt.timezone.utc):
        # Entra ID is the judge (and says AADSTS700027 with the reason); say it early in the log.
        LOGGER.warning("The certificate in %s expired on %s", path, not_after.date())
    return {
        "sha1": hashlib.sha1(der).hexdigest().upper(),
        "sha256": base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA256())).rstrip(b"=").decode(),
        "not_after": not_after,
        "private_key_pem": key.private_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    }


def _pem_block(data: bytes, label_suffix: bytes) -> bytes:
    """The first PEM block whose label ends with ``label_suffix`` (e.g. ``PRIVATE KEY``)."""
    for chunk in data.split(b"-----BEGIN ")[1:]:
        label = chunk.split(b"-----", 1)[0]
        if label.endswith(label_suffix):
            end = chunk.index(b"-----END " + label + b"-----") + len(b"-----END " + label + b"-----")
            return b"-----BEGIN " + chunk[:end] + b"\n"
    return b""
