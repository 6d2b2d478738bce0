"""Singer tap for Microsoft Dynamics 365 and Dataverse."""
