"""Microsoft cloud emulator for tap-dynamics: a host of Microsoft services on one TLS port.

Tests, the demo and the benchmarks drive the tap over real HTTPS against it; it is not part
of the tap's wheel. The layout:

    core/        the host: TLS server, routing by path prefix to registered services, request
                 statistics, the /_emulator/ control API, the fault pipeline (each service's
                 FaultAdapter says how its faults look on the wire)
    identity/    Entra ID (a registry of resources: each token's aud is one registered
                 resource, each service accepts only its own), AD FS, Windows (NTLM, Kerberos) sign-in
    odata/       the generic OData layer: $filter parser/compiler, query options, v4 renderer
    dataverse/   Dataverse online: tables, generated rows, metadata API, data and change
                 tracking, its faults; deployment.py holds what every Dataverse host adds
    onprem/      on-premises Dynamics 365 / CRM: the org in the path, IIS Windows sign-in or
                 AD FS, v8.x-9.1
    online.py    Emulator: Entra ID + Dataverse online (the default deployment)

Adding a service (F&O at ``/data``, Graph at ``/v1.0``) is a new package beside ``dataverse/``:

1. a :class:`~emulator.core.service.Service` subclass with ``name``, ``prefix`` (``"/data/"``),
   ``KNOBS`` (its ``emu.set()`` knobs), ``handle(req)`` and, for bearer auth, an ``audience``
   property (F&O: the environment URL; Graph: ``https://graph.microsoft.com``) checked with
   ``identity.validate(token, audience)``; render with :mod:`emulator.odata.v4` and filter
   with :mod:`emulator.odata.filter`;
2. a :class:`~emulator.core.service.FaultAdapter` subclass for its own 429/503 bodies and the
   faults only it has (Graph: 410 resync of a delta token), set as ``fault_adapter_class``
   (``fault_default = True`` for a data service);
3. registration in a deployment: list the class in ``service_classes`` (its knobs become
   constructor keywords) and in ``build()`` create it, ``self.register(service)`` and
   ``self.entra.register_resource(service.audience)`` — beside Dataverse on ``Emulator`` or on
   a deployment of its own.

Usage:

    from emulator import Emulator
    with Emulator(rows={"account": 1000}) as emu:
        requests.get(emu.org_url + "/api/data/v9.2/WhoAmI", verify=emu.ca_path, ...)

    python -m emulator --rows account=200000 --latency-ms 300   # out of process
"""

from __future__ import annotations

from .core.faults import DEFAULTS as _CORE_FAULTS
from .dataverse.deployment import DEFAULT_ROWS
from .dataverse.faults import DataverseFaults
from .online import Emulator
from .onprem import OnPremEmulator

# Every fault knob of the Dataverse deployments with its default (resetting all faults).
FAULT_DEFAULTS = {**_CORE_FAULTS, **DataverseFaults.KNOBS}

__all__ = ["DEFAULT_ROWS", "FAULT_DEFAULTS", "Emulator", "OnPremEmulator"]
