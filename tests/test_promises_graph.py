"""Office 365: a setting a Graph stream cannot take is one line that says what to use instead."""

from __future__ import annotations

from tests.taprun import run_tap
from tests.test_check import error_lines


def test_a_replication_method_graph_lacks_is_one_line_naming_the_fix(make_graph_emulator) -> None:
    emu = make_graph_emulator()
    run = run_tap({**emu.tap_config(), "entities": ["users"], "replication": {"users": "modifiedon"}})
    assert run.returncode == 2
    [line] = [x for x in error_lines(run.stderr) if x.startswith("tap-dynamics: error:")]
    assert "asks for 'modifiedon' on stream users" in line and "use one of them" in line


def test_delegated_sign_in_to_graph(make_graph_emulator, tmp_path) -> None:
    """Issue: "delegated sign-in (`AzureAD`, `tap-dynamics login`) with the same scope" — a user's
    `login` once, then syncs and `check` refresh silently with tokens Graph accepts (the emulator
    refuses a token issued for any other audience)."""
    from tests.taprun import run_command
    from tests.test_auth import USER_APP, delegated, free_port, login

    emu = make_graph_emulator(counts={"users": 30})
    port = free_port()
    emu.entra.register_app(USER_APP, "", redirect_uris=[f"http://localhost:{port}"])
    config = {**delegated(emu.tap_config(), tmp_path, port), "entities": ["users"]}
    login(emu, tmp_path, config)
    run = run_tap({**config, "initiate_oauth": "REFRESH"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert {r["id"] for r in run.records("users")} == set(emu.directory.objects["users"])
    check = run_command(["check"], {**config, "initiate_oauth": "REFRESH"})
    assert check.returncode == 0, check.stderr[-2000:]
    assert "as user alex@contoso.onmicrosoft.com" in check.stdout
    # A user's token carries the app's delegated permissions, granted apart from its application
    # permissions: a refusal names the kind the run uses, and every application permission is no help.
    emu.deny_delegated("User.Read.All", "Directory.Read.All")
    refused = run_tap({**config, "initiate_oauth": "REFRESH"})
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "missing Microsoft Graph delegated permission User.Read.All" in refused.stderr
    assert "Microsoft Graph > Delegated permissions" in refused.stderr
    assert error_lines(refused.stderr)[-1].endswith("failed and were skipped: users (see the warnings above)")
    partial = run_command(["check"], {**config, "initiate_oauth": "REFRESH"})
    assert "missing delegated permissions: users (User.Read.All)" in partial.stdout + partial.stderr
    app_only = run_tap({**emu.tap_config(), "entities": ["users"]})  # application permissions: unaffected
    assert app_only.returncode == 0, app_only.stderr[-2000:]
