"""Dataverse / Dynamics 365 CE online (Web API v9.x): metadata discovery and table streams."""
