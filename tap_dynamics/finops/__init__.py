"""Dynamics 365 Finance & Operations: the ``/data`` OData service as streams, on the shared engine."""
