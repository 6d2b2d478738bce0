"""``tap-dynamics check`` and ``tap-dynamics login``: the two commands a person runs by hand.

``check`` answers "will a sync work?" in one line; what it asks is the system's (Dataverse's is
:mod:`tap_dynamics.dataverse.check`). ``login`` runs the interactive sign-in for ``auth_scheme`` AzureAD and stores the tokens
for scheduled runs.

They live outside the SDK's click command (which owns ``--config/--discover/--about``) and are
dispatched by :func:`tap_dynamics.tap.cli` when the first argument is a subcommand name.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import typing as t

from tap_dynamics.auth import sign_in
from tap_dynamics.config import CONFIG_SCHEMA, load_settings
from tap_dynamics.engine.sdk_compat import parse_environment_config
from tap_dynamics.errors import EXIT_OK, ConfigError, TapDynamicsError
from tap_dynamics.systems import system_for

LOGGER = logging.getLogger("tap-dynamics")

SUBCOMMANDS = ("check", "login")
CONFIG_HELP = "config JSON file(s), or ENV for the TAP_DYNAMICS_* variables"


def _load_config(paths: list[str]) -> dict[str, t.Any]:
    """Merge the ``--config`` files like the SDK does (later files win).

    ``ENV``, as for the SDK's own ``--config``, reads the ``TAP_DYNAMICS_<SETTING>`` variables:
    that is how Meltano hands settings to a plugin command (``meltano invoke tap-dynamics:check``),
    so a scheduler can run the check without writing secrets to a file.
    """
    config: dict[str, t.Any] = {}
    for path in paths:
        if path == "ENV":
            config.update(parse_environment_config(CONFIG_SCHEMA, prefix="TAP_DYNAMICS_"))
            continue
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tap-dynamics")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="test the connection: token, WhoAmI, organisation name")
    check.add_argument("--config", action="append", required=True, help=CONFIG_HELP)
    login = sub.add_parser("login", help="sign in as a user (auth_scheme AzureAD) and save the tokens")
    login.add_argument("--config", action="append", required=True, help=CONFIG_HELP)
    login.add_argument(
        "--device-code", action="store_true", help="sign in on another device (headless servers)"
    )
    return parser


def main(argv: list[str]) -> int:
    """Run a subcommand; return the exit code.

    Errors of ``check`` are its answer (``connection unavailable: …``); everything else, and
    every error of ``login``, goes to the top-level handler of :func:`tap_dynamics.tap.cli`,
    the same one a sync has: one line, the documented exit code, never a traceback.
    """
    args = _parser().parse_args(argv)
    if args.command == "check":
        try:
            settings = load_settings(_load_config(args.config))
            line = system_for(settings).connection_check(settings, None)
        except TapDynamicsError as exc:
            print(f"connection unavailable: {exc}", file=sys.stderr)
            return exc.exit_code
        print(line)
        return EXIT_OK
    settings = load_settings(_load_config(args.config))
    print(f"tap-dynamics: {sign_in(settings, device_code=args.device_code)}", file=sys.stderr)
    return EXIT_OK
