"""The Kerberos fixtures, shared by every module that signs in with Kerberos: one throw-away MIT
KDC per test session (tests/kdc.py), and an on-premises site whose IIS verifies its tickets.

If the KDC cannot start on a machine, every test using it fails (it never skips): ``make test-deps``
installs what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emulator.onprem import OnPremEmulator
from tests.kdc import KerberosRealm

# The rows of a Kerberos site unless a test asks for others.
SMALL = {"account": 600, "contact": 40, "systemuser": 3}


@pytest.fixture(scope="session")
def kdc() -> Iterator[KerberosRealm]:
    realm = KerberosRealm().start()  # raises, naming the fix, when the KDC cannot start
    try:
        yield realm
    finally:
        realm.stop()


@pytest.fixture
def realm(kdc: KerberosRealm) -> KerberosRealm:
    """The session's realm with the user unlocked and its failure count at zero."""
    kdc.reset_failures()
    return kdc


@pytest.fixture
def make_site(make_emulator, realm: KerberosRealm) -> Callable[..., OnPremEmulator]:
    """An on-premises server whose IIS verifies tickets for HTTP/localhost with the KDC's keytab."""

    def factory(auth: str = "kerberos", rows: dict[str, int] | None = None, **kw) -> OnPremEmulator:
        return make_emulator(SMALL if rows is None else rows, kind=OnPremEmulator, auth=auth,
                             keytab=str(realm.service_keytab), **kw)

    return factory


@pytest.fixture
def krb_env(realm: KerberosRealm, tmp_path: Path) -> dict[str, str]:
    """The tap's Kerberos environment: the realm's krb5.conf and a ticket cache path of its own."""
    return realm.env(KRB5CCNAME=f"FILE:{tmp_path / 'tap-ccache'}")
