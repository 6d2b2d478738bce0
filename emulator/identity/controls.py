"""The token-endpoint fault controls tests reach as ``emu.entra.…``.

They act on every token endpoint of the host (Entra ID's, managed identity's, AD FS's) through
the host's fault pipeline (:meth:`~emulator.core.faults.Faults.script`,
:meth:`~emulator.core.faults.Faults.spend`): an on-premises deployment has no Entra ID, yet its
AD FS fails and revokes tokens under the same calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.faults import ScriptedFault
    from ..core.host import Host


class TokenFaultControls:
    host: Host

    def fail_token_requests(self, kind: str, count: int = 1, after: int = 0,
                            retry_after: float | None = 1, retry_after_form: str = "seconds") -> None:
        """Make token requests fail: ``count`` of them with ``kind`` ("429", "503",
        "proxy_html", "drop"), after ``after`` that are answered normally (``after=1``: the
        run's first token works, a refresh fails)."""
        self.host.faults.script(kind, count, after, retry_after, retry_after_form, group="token")

    @property
    def token_faults(self) -> list[ScriptedFault]:
        """The scripted token faults still to come."""
        return self.host.faults.pending("token")

    @property
    def token_fault_log(self) -> list[str]:
        """The kind of every token fault injected, in order."""
        return self.host.faults.script_log

    @property
    def revoke_after_uses(self) -> int | None:
        """Access tokens stop working after this many uses (None: at expiry only)."""
        return self.host.faults.revoke_after_uses

    @revoke_after_uses.setter
    def revoke_after_uses(self, uses: int | None) -> None:
        self.host.faults.revoke_after_uses = uses

    @property
    def revoked_uses(self) -> int:
        """Requests refused because their token was revoked by use count."""
        return self.host.faults.revoked_uses


class IdentityControls(TokenFaultControls):
    """The controls on their own, for a deployment without Entra ID (on-premises)."""

    def __init__(self, host: Host) -> None:
        self.host = host
