"""``tap-dynamics check`` and ``tap-dynamics login``: the two commands a person runs by hand.

``check`` answers "will a sync work?" in one line, in the order in which things go wrong in
practice: is the URL a reachable Dynamics org at all (an unauthenticated request must get
Dataverse's ``401`` with a ``Bearer authorization_uri=…`` challenge), does Entra ID issue a token,
and does the environment accept it (``WhoAmI``, then the organisation's name). ``login`` runs
the interactive sign-in for ``auth_scheme`` AzureAD and stores the tokens for scheduled runs.

They live outside the SDK's click command (which owns ``--config/--discover/--about``) and are
dispatched by :func:`tap_dynamics.tap.cli` when the first argument is a subcommand name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing as t

import requests

from tap_dynamics.auth import build_token_provider, sign_in
from tap_dynamics.client import DataverseClient
from tap_dynamics.config import Settings, load_settings
from tap_dynamics.errors import (
    EXIT_OK,
    ConfigError,
    ConnectionProblem,
    TapDynamicsError,
)

SUBCOMMANDS = ("check", "login")


def _load_config(paths: list[str]) -> dict[str, t.Any]:
    """Merge the ``--config`` files like the SDK does (later files win)."""
    config: dict[str, t.Any] = {}
    for path in paths:
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as handle:
                data = json.load(handle)
        except OSError as exc:
            msg = f"cannot read the config file {path} ({exc.strerror or exc}) — check --config"
            raise ConfigError(msg) from None
        except ValueError:
            msg = f"the config file {path} is not valid JSON — fix its syntax"
            raise ConfigError(msg) from None
        if not isinstance(data, dict):
            msg = f"the config file {path} must hold a JSON object of settings"
            raise ConfigError(msg)
        config.update(data)
    return config


def probe_org(settings: Settings) -> None:
    """Make sure ``url`` is a reachable Dynamics org before any credential is used.

    Dataverse answers an unauthenticated Web API request with 401 and a ``WWW-Authenticate:
    Bearer authorization_uri=…`` challenge; anything else means the URL is not an org.
    """
    target = f"{settings.api_base}/"
    try:
        response = requests.get(
            target,
            headers={"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"},
            timeout=min(settings.request_timeout, 30),
            verify=settings.verify,
            allow_redirects=False,
        )
    except requests.exceptions.SSLError:
        msg = (
            f"TLS verification failed for {settings.url} — if a proxy inspects TLS, set ca_bundle "
            "to a PEM file with its CA certificate"
        )
        raise ConnectionProblem(msg) from None
    except requests.exceptions.RequestException as exc:
        msg = (
            f"cannot reach {settings.url} ({type(exc).__name__}) — check url (the org URL as the "
            "browser shows it, e.g. https://myorg.crm.dynamics.com) and the network/proxy"
        )
        raise ConnectionProblem(msg) from None
    challenge = response.headers.get("WWW-Authenticate", "")
    if settings.on_premises and settings.auth_scheme == "NTLM":
        # An Active Directory deployment challenges with Negotiate and NTLM instead of Bearer.
        if response.status_code != 401 or not ("ntlm" in challenge.lower() or "negotiate" in challenge.lower()):
            msg = (
                f"{settings.url} does not look like an on-premises Dynamics server with Windows "
                f"sign-in (HTTP {response.status_code} without an NTLM/Negotiate challenge at "
                f"{settings.api_base}/) — set url to the organization's URL, e.g. "
                "https://crm.contoso.com/contoso, and check api_version"
            )
            raise ConnectionProblem(msg)
        return
    if response.status_code != 401 or "bearer" not in challenge.lower() or "authorization_uri" not in challenge:
        msg = (
            f"{settings.url} does not look like a Dynamics 365 / Dataverse org (HTTP "
            f"{response.status_code} without a Bearer challenge at /api/data/) — set url to the "
            "org URL exactly as the browser shows it, e.g. https://myorg.crm4.dynamics.com"
        )
        raise ConnectionProblem(msg)


def connection_check(settings: Settings, client: DataverseClient | None = None) -> str:
    """Run the whole check and return the success line; raise a one-line error otherwise."""
    probe_org(settings)
    if client is None:
        client = DataverseClient(settings, build_token_provider(settings))
    client.MAX_ATTEMPTS = 2  # a check should answer quickly, not ride out an outage
    whoami, _ = client.get_json(client.url("WhoAmI"))
    orgs, _ = client.get_json(client.url("organizations", {"$select": "name"}))
    values = orgs.get("value") or [{}]
    name = values[0].get("name") or "(unnamed organisation)"
    who = client.tokens.identity()
    user_id = whoami.get("UserId")
    suffix = f", user id {user_id}" if user_id else ""
    return f"connection available: {name} ({settings.url}) as {who}{suffix}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tap-dynamics")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="test the connection: token, WhoAmI, organisation name")
    check.add_argument("--config", action="append", required=True, help="config JSON file(s)")
    login = sub.add_parser("login", help="sign in as a user (auth_scheme AzureAD) and save the tokens")
    login.add_argument("--config", action="append", required=True, help="config JSON file(s)")
    login.add_argument(
        "--device-code", action="store_true", help="sign in on another device (headless servers)"
    )
    return parser


def main(argv: list[str]) -> int:
    """Run a subcommand; return the exit code. Errors are one line on stderr, never a traceback."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(_load_config(args.config))
    except TapDynamicsError as exc:
        prefix = "connection unavailable" if args.command == "check" else "tap-dynamics: error"
        print(f"{prefix}: {exc}", file=sys.stderr)  # noqa: T201
        return exc.exit_code
    if args.command == "check":
        try:
            line = connection_check(settings)
        except TapDynamicsError as exc:
            print(f"connection unavailable: {exc}", file=sys.stderr)  # noqa: T201
            return exc.exit_code
        print(line)  # noqa: T201
        return EXIT_OK
    try:
        line = sign_in(settings, device_code=args.device_code)
    except TapDynamicsError as exc:
        print(f"tap-dynamics: error: {exc}", file=sys.stderr)  # noqa: T201
        return exc.exit_code
    print(f"tap-dynamics: {line}", file=sys.stderr)  # noqa: T201
    return EXIT_OK
