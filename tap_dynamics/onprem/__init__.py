"""On-premises Dynamics CRM / Dynamics 365 CE (crm_version CRM2011+).

An on-premises server from CRM 2016 (v8.0) on speaks the same OData v4 Web API as Dataverse
online, so discovery, paging and every stream are the Dataverse ones (``tap_dynamics.dataverse``)
over the same :class:`~tap_dynamics.dataverse.client.DataverseClient`. What its metadata API cannot serve is
``tap_dynamics.dataverse.onprem``; the Windows (NTLM, Kerberos) and AD FS sign-in is in ``tap_dynamics.auth.windows``,
``tap_dynamics.auth.kerberos`` and ``tap_dynamics.auth.adfs``; the settings (the organization in the URL path, the v9.1 ceiling, the
``allow_http`` opt-in) are declared and checked in ``tap_dynamics.config.dataverse``.
"""
