"""The on-premises profile of the Dataverse Web API (Dynamics CRM 2016+/CE 9.x on a customer's server).

An on-premises server from CRM 2016 (v8.0) on speaks the same OData v4 Web API as Dataverse
online, so discovery, paging and every stream are this package's, over the same client. What its
metadata API cannot serve is here; its sign-in (Windows NTLM or Kerberos, AD FS) is ``tap_dynamics.onprem``'s,
its settings (the organization in the URL path, the v9.1 ceiling, ``allow_http``) are validated
with the other settings.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Iterable

# EntityMetadata properties that arrived online with elastic tables, after the last on-premises
# release: an on-premises server answers 400 ("Could not find a property named 'TableType'")
# when a $select names them, so they are left out there; readers default them (TableType
# "Standard").
ONLINE_ONLY_ENTITY_PROPERTIES = frozenset({"TableType", "IsElasticTable"})


def metadata_select(settings: t.Any, names: Iterable[str]) -> str:
    """``$select`` for ``EntityDefinitions``: ``names`` less what the server cannot serve.

    Without ``TableType``, a virtual table (9.0 and later) is still recognisable by its
    ``DataProviderId``, so that is asked for instead; 8.x has no virtual tables (and no such
    property).
    """
    names = list(names)
    if getattr(settings, "on_premises", False):
        wanted_type = "TableType" in names
        names = [name for name in names if name not in ONLINE_ONLY_ENTITY_PROPERTIES]
        if wanted_type and str(getattr(settings, "api_version", "")).startswith("9"):
            names.append("DataProviderId")
    return ",".join(names)
