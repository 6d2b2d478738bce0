"""A real, throw-away MIT Kerberos KDC for the Kerberos tests (and the ``kdc`` fixture).

The KDC is Debian's ``krb5-kdc`` (``kdb5_util``, ``krb5kdc``; ``kadmin.local`` from
``krb5-admin-server``; ``make test-deps`` installs them when missing). Everything lives in a
fresh temporary directory: the realm's database, its own ``krb5.conf`` (``KRB5_CONFIG``) and
``kdc.conf`` (``KRB5_KDC_PROFILE``), the KDC listening on a free loopback port (TCP and UDP),
a user principal with a password under a lockout policy (so the KDC itself counts failed
password attempts), the emulator's service principal ``HTTP/localhost`` and the keytabs.

The client configuration turns off every DNS lookup (no SRV records for the realm, no reverse
lookup of 127.0.0.1, no canonicalisation of ``localhost``): the tap must ask for the service
principal of the host in its ``url``, whatever the loopback resolver says. Its default ticket
cache is a file in the temporary directory, so a test can prove that a password sign-in never
writes a ticket cache.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = "run `make test-deps` (it installs Debian's krb5-kdc, krb5-admin-server and krb5-user)"
REALM = "TAP-DYNAMICS.TEST"
USER = "svc-tap"
PASSWORD = "Kerberos-Pa55word!onprem"
SERVICE_HOST = "localhost"  # the emulator's host name in the tap's url
UNREACHABLE_REALM = "NO-KDC.TEST"  # a realm whose KDC port nothing listens on
LOCKOUT_AFTER = 5  # failed password attempts before the KDC locks the user out


def tool(name: str) -> str:
    """The path of a Kerberos administration binary, or a loud failure naming the fix."""
    for directory in ("/usr/sbin", "/usr/bin", "/sbin"):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    msg = f"no MIT Kerberos binary {name!r} found; {INSTALL_HINT}"
    raise RuntimeError(msg)


def _free_port() -> int:
    """A loopback port free for both TCP and UDP (the KDC listens on both)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    msg = "no loopback port free for both TCP and UDP"
    raise RuntimeError(msg)


class KerberosRealm:
    """One realm in a temporary directory, its KDC running on loopback until :meth:`stop`."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tap-dynamics-kdc-"))
        self.port = 0
        self.dead_port = 0
        self.krb5_conf = self.root / "krb5.conf"
        self.kdc_conf = self.root / "kdc.conf"
        self.log = self.root / "kdc.log"
        self.service_keytab = self.root / "http.keytab"
        self.user_keytab = self.root / "user.keytab"
        self.default_ccache = self.root / "default-ccache"
        self.proc: subprocess.Popen[bytes] | None = None
        self._dead: socket.socket | None = None

    @property
    def principal(self) -> str:
        return f"{USER}@{REALM}"

    @property
    def service_principal(self) -> str:
        return f"HTTP/{SERVICE_HOST}@{REALM}"

    def env(self, **more: str) -> dict[str, str]:
        """What a process using this realm needs: its krb5.conf (plus ``more``)."""
        return {"KRB5_CONFIG": str(self.krb5_conf), **more}

    def _admin_env(self) -> dict[str, str]:
        return {**os.environ, "KRB5_CONFIG": str(self.krb5_conf), "KRB5_KDC_PROFILE": str(self.kdc_conf)}

    def _write_config(self) -> None:
        self.krb5_conf.write_text(
            f"""[libdefaults]
    default_realm = {REALM}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    default_ccache_name = FILE:{self.default_ccache}
    default_keytab_name = FILE:{self.root}/no-default.keytab
    kdc_timeout = 3000
    max_retries = 1
[realms]
    {REALM} = {{
        kdc = 127.0.0.1:{self.port}
    }}
    {UNREACHABLE_REALM} = {{
        kdc = 127.0.0.1:{self.dead_port}
    }}
[domain_realm]
    {SERVICE_HOST} = {REALM}
""",
            encoding="utf-8",
        )
        self.kdc_conf.write_text(
            f"""[kdcdefaults]
    kdc_listen = 127.0.0.1:{self.port}
    kdc_tcp_listen = 127.0.0.1:{self.port}
[realms]
    {REALM} = {{
        database_name = {self.root}/principal
        key_stash_file = {self.root}/stash
        acl_file = {self.root}/kadm5.acl
        max_life = 10h
        max_renewable_life = 1d
        default_principal_flags = +preauth
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }}
[logging]
    kdc = FILE:{self.log}
""",
            encoding="utf-8",
        )
        (self.root / "kadm5.acl").write_text("", encoding="utf-8")

    def _run(self, argv: list[str], what: str, env: dict[str, str]) -> str:
        """Run one Kerberos tool; its output, or a loud failure with what it said."""
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0 or "error" in result.stderr.lower():
            msg = f"{what} failed: {result.stderr.strip() or result.stdout.strip()}"
            raise RuntimeError(msg)
        return result.stdout

    def kadmin(self, query: str) -> str:
        """Run one ``kadmin.local`` query against the realm's database; its output."""
        return self._run([tool("kadmin.local"), "-r", REALM, "-q", query], f"kadmin.local {query.split()[0]}",
                         self._admin_env())

    def start(self) -> KerberosRealm:
        self.port = _free_port()
        # The unreachable realm's "KDC": a TCP port held bound but never listening (connections
        # are refused at once, and nothing else can take the port while the realm lives).
        self._dead = socket.socket()
        self._dead.bind(("127.0.0.1", 0))
        self.dead_port = self._dead.getsockname()[1]
        self._write_config()
        self._run([tool("kdb5_util"), "create", "-s", "-r", REALM, "-P", "throw-away-master-key"],
                  "kdb5_util create (the realm's database)", self._admin_env())
        self.kadmin(f"addpol -maxfailure {LOCKOUT_AFTER} -failurecountinterval 0 -lockoutduration 0 lockout")
        self.kadmin(f"addprinc -policy lockout -pw {PASSWORD} {self.principal}")
        self.kadmin(f"addprinc -randkey {self.service_principal}")
        self.kadmin(f"ktadd -k {self.service_keytab} {self.service_principal}")
        self.kadmin(f"ktadd -norandkey -k {self.user_keytab} {self.principal}")
        self.proc = subprocess.Popen(
            [tool("krb5kdc"), "-n", "-r", REALM],
            env=self._admin_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_until_listening()
        return self

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                msg = f"krb5kdc exited at start ({self.proc.returncode}): {err.strip()}; see {self.log}"
                raise RuntimeError(msg)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        msg = f"krb5kdc did not listen on 127.0.0.1:{self.port} within 60 s"
        raise RuntimeError(msg)

    def failed_attempts(self, principal: str | None = None) -> int:
        """The KDC's own count of failed password attempts of ``principal`` (the user)."""
        out = self.kadmin(f"getprinc {principal or self.principal}")
        match = re.search(r"Failed password attempts: (\d+)", out)
        if match is None:
            msg = f"kadmin.local getprinc printed no failure count: {out}"
            raise RuntimeError(msg)
        return int(match.group(1))

    def reset_failures(self) -> None:
        """Unlock the user and zero its failure count (between tests)."""
        self.kadmin(f"modprinc -unlock {self.principal}")

    def as_requests(self) -> list[str]:
        """The KDC log lines of initial ticket (AS) requests, one per attempt."""
        if not self.log.exists():
            return []
        return [line for line in self.log.read_text(errors="replace").splitlines() if "AS_REQ" in line]

    def tgs_requests(self) -> list[str]:
        """The KDC log lines of service ticket (TGS) requests."""
        if not self.log.exists():
            return []
        return [line for line in self.log.read_text(errors="replace").splitlines() if "TGS_REQ" in line]

    def kinit_from_keytab(self, ccache: Path) -> None:
        """Put a ticket of the user into ``ccache`` the way an operator does (``kinit -k -t``)."""
        self._run([tool("kinit"), "-k", "-t", str(self.user_keytab), "-c", f"FILE:{ccache}", self.principal],
                  "kinit -k", {**os.environ, **self.env()})

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        if self._dead is not None:
            self._dead.close()
        shutil.rmtree(self.root, ignore_errors=True)
