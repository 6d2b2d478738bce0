"""The product-neutral engine under every Microsoft system the tap reads (see README, Development).

``http`` (transport) · ``policy`` (what is particular to one service) · ``formats`` (page bodies)
· ``pages``/``prefetch``/``fastpath`` (the record path) · ``replication`` (strategies) · ``run``
(run context) · ``stream`` (the paged stream base) · ``sdk_compat`` (every private SDK access).
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 12):
    from typing import override
else:  # pragma: no cover - depends on the interpreter
    from typing_extensions import override

__all__ = ["override"]
