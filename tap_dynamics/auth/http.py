"""The HTTP client MSAL gets, and what a failed call to an identity endpoint means.

MSAL makes its own HTTP calls (tenant discovery, token requests). It is given a session that
passes ``verify=`` on every call: requests merges ``REQUESTS_CA_BUNDLE`` into every call that does
not pass ``verify`` itself, overriding ``Session.verify``, and MSAL never passes it — so a plain
session would let the environment beat the ``ca_bundle`` setting.
"""

from __future__ import annotations

import sys
import typing as t

import requests

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

from tap_dynamics.errors import ConnectionProblem, TapDynamicsError


class VerifyingSession(requests.Session):
    """A session that always sends its own ``verify`` and timeout."""

    def __init__(self, verify: str | bool, timeout: float | tuple[float, float]) -> None:
        super().__init__()
        self._verify = verify
        self._timeout = timeout

    @override
    def request(self, method: str | bytes, url: str | bytes, *args: t.Any, **kwargs: t.Any) -> requests.Response:
        """Send with the configured CA bundle and a timeout, whatever the caller passed."""
        kwargs["verify"] = self._verify
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


def network_error(authority_host: str, exc: Exception) -> TapDynamicsError:
    """One line for an identity endpoint that cannot be reached or whose TLS does not verify."""
    if isinstance(exc, requests.exceptions.SSLError):
        return ConnectionProblem(
            f"TLS verification failed for the authority host {authority_host} — if a proxy "
            "inspects TLS, set ca_bundle to a PEM file with its CA certificate"
        )
    return ConnectionProblem(
        f"cannot reach the authority host {authority_host} ({type(exc).__name__}) — check "
        "authority_host and the network/proxy settings"
    )
