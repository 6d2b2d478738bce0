"""CRM 2011-2015's OData v2 endpoint (``XRMServices/2011/OrganizationData.svc``) as a service of the
engine: its policy (headers, request id, page format) and which endpoint a run reads.

The endpoint signs in exactly as the Web API of the same server does (Windows/NTLM, or AD FS on
an internet-facing deployment), so the credential is the run's one; only the policy differs:
WCF Data Services headers (``DataServiceVersion``, no ``Prefer``: pages are a fixed 50 rows) and
verbose JSON pages (the engine's :class:`~tap_dynamics.engine.formats.ODataV2Verbose`, converted
per table by :mod:`tap_dynamics.onprem.v2tables`).

Which endpoint: ``api_version`` 2011 or an ``OrganizationData.svc`` URL ask for this one, a Web
API version for the Web API; with neither, :func:`open_client` asks the server for the Web API's
service document — an IIS 404 without an OData error means there is no Web API (CRM
2011-2015), anything else that it is there. One log line says which endpoint and why.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as t

from tap_dynamics.config.dataverse import AUTO, ODATA_V2, WEB_API
from tap_dynamics.dataverse.client import DataverseClient
from tap_dynamics.engine.formats import ODataV2Verbose
from tap_dynamics.engine.policy import USER_AGENT, ServicePolicy
from tap_dynamics.errors import ServiceError

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from tap_dynamics.auth import TokenProvider
    from tap_dynamics.config import Settings

LOGGER = logging.getLogger("tap-dynamics")


class OrganizationDataPolicy(ServicePolicy):
    """The OData v2 endpoint's headers and page format (errors: v2 JSON, read by the base)."""

    service_name = "the CRM OData v2 endpoint"
    base_headers: t.ClassVar[t.Mapping[str, str]] = {
        "Accept": "application/json",  # verbose JSON; without it the service answers ATOM XML
        "DataServiceVersion": "2.0",
        "MaxDataServiceVersion": "2.0",
        "User-Agent": USER_AGENT,
    }
    request_id_headers = ("REQ_ID",)
    page_format = ODataV2Verbose()


def odata2_client(
    settings: Settings, tokens: TokenProvider, on_retry: Callable[[str | None, float], None] | None
) -> DataverseClient:
    """A client of the OData v2 endpoint (settings, tokens and limits as the Web API's)."""
    return DataverseClient(settings, tokens, on_retry, policy=OrganizationDataPolicy(settings.api_base))


def is_odata2(client: DataverseClient) -> bool:
    """Whether ``client`` reads the OData v2 endpoint."""
    return isinstance(client.policy, OrganizationDataPolicy)


def open_client(
    settings: Settings, tokens: TokenProvider, on_retry: Callable[[str | None, float], None] | None
) -> tuple[Settings, DataverseClient]:
    """The run's client and its settings with the endpoint decided (probing when ``auto``)."""
    dataverse = settings.dataverse
    if dataverse.endpoint == AUTO:
        endpoint, reason = probe(DataverseClient(settings, tokens, on_retry), dataverse.web_api_base)
        dataverse = dataclasses.replace(dataverse, endpoint=endpoint, reason=reason)
        settings = dataclasses.replace(settings, service=dataverse)
    if dataverse.on_premises:
        if dataverse.endpoint == ODATA_V2:
            LOGGER.info("Reading the OData v2 endpoint %s (CRM 2011-2015): %s", dataverse.api_base, dataverse.reason)
        else:
            LOGGER.info("Reading the Web API v%s at %s: %s", dataverse.api_version, dataverse.api_base, dataverse.reason)
    if dataverse.endpoint == ODATA_V2:
        return settings, odata2_client(settings, tokens, on_retry)
    return settings, DataverseClient(settings, tokens, on_retry)


def probe(client: DataverseClient, web_api_base: str) -> tuple[str, str]:
    """Whether the server has a Web API: (endpoint, why) from its service document's answer."""
    try:
        client.get_json(f"{web_api_base}/", max_attempts=3)
    except ServiceError as exc:
        if exc.status == 404 and not exc.code:  # IIS's page: no Web API application at all
            return ODATA_V2, "the server has no Web API (api/data answered 404), so it is CRM 2011-2015"
        if exc.status == 404:  # an OData error: the Web API is there, not in this version
            return WEB_API, f"the server has a Web API (api_version not set: v{client.settings.api_version})"
        raise
    return WEB_API, f"the server has a Web API (api_version not set: v{client.settings.api_version})"


__all__ = ["OrganizationDataPolicy", "is_odata2", "odata2_client", "open_client", "probe"]
