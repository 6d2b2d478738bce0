"""The emulator's core: a TLS host that routes requests by path to registered services,
counts them, runs the fault pipeline and answers the control API (see host.py)."""

from .host import Host
from .service import NOT_FOUND, FaultAdapter, Request, Response, Service

__all__ = ["NOT_FOUND", "FaultAdapter", "Host", "Request", "Response", "Service"]
