"""A generic OData layer: errors, the ``$filter`` parser and compiler, query options and a
response renderer — what every OData service here (Dataverse today; F&O and Graph next) shares.

- :mod:`.filter`: ``$filter`` text → AST → a predicate over row dicts, with the type rules of
  the service given by a resolver (property → getter and comparison kind).
- :mod:`.query`: ``$select``, ``$orderby``, ``$expand`` and the ``Prefer`` header.
- :mod:`.v4`: OData v4 JSON bodies (``@odata.context``, ``value``, ``@odata.nextLink``) and
  nextLinks that keep the caller's query pieces verbatim. An OData v2 renderer (CRM 2011's
  ``OrganizationData.svc``: ``{"d": {"results": [...], "__next": ...}}``, ``/Date(ms)/``)
  belongs beside it as ``v2.py`` with the same functions.

What is product-specific stays in the product's package (Dataverse's XML paging cookie is in
``emulator/dataverse/paging.py``).
"""

from __future__ import annotations


class ODataError(Exception):
    """An OData error: HTTP status, the service's error code and message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(message: str, code: str = "0x80060888") -> ODataError:
    return ODataError(400, code, message)


__all__ = ["ODataError", "bad_request"]
