"""On-premises Dynamics CRM / Dynamics 365 CE (crm_version CRM2011+).

An on-premises server from CRM 2016 (v8.0) on speaks the same OData v4 Web API as Dataverse
online, so discovery, paging and every stream are the Dataverse ones (``tap_dynamics.dataverse``)
over the same :class:`~tap_dynamics.dataverse.client.DataverseClient`. What differs lives here: Windows
(NTLM) and AD FS sign-in instead of Entra ID tokens; what its metadata API cannot serve is
``tap_dynamics.dataverse.onprem``. What differs in the settings (the organization in the
URL path, the v9.1 ceiling, the ``allow_http`` opt-in) is validated in ``tap_dynamics.settings``.
"""
