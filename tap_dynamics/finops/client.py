"""The F&O client: the engine's transport with the F&O policy, and the companies it can see."""

from __future__ import annotations

import threading
import typing as t

from tap_dynamics.errors import ServiceError
from tap_dynamics.finops.policy import FinOpsPolicy
from tap_dynamics.transport import SettingsTransport

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from tap_dynamics.auth import TokenProvider
    from tap_dynamics.config import Settings
    from tap_dynamics.config.finops import FinOpsSettings

COMPANIES_SET = "Companies"


class FinOpsClient(SettingsTransport):
    """Authenticated, retrying, origin-locked client for one F&O environment."""

    def __init__(
        self,
        settings: Settings,
        tokens: TokenProvider,
        on_retry: Callable[[str | None, float], None] | None = None,
    ) -> None:
        super().__init__(FinOpsPolicy(settings.api_base), settings, tokens, on_retry)
        self._companies: tuple[str, ...] | None = None
        self._lock = threading.Lock()

    @property
    def finops(self) -> FinOpsSettings:
        """The F&O setting group."""
        return t.cast("FinOpsSettings", self.settings.service)

    def visible_companies(self) -> tuple[str, ...]:
        """Every company (``dataAreaId``) the identity can see, lower case, sorted (read once)."""
        with self._lock:
            if self._companies is None:
                url = self.url(COMPANIES_SET, {"$select": "DataArea", "cross-company": "true"})
                found: set[str] = set()
                for page in self.iter_pages(url, prefer="odata.maxpagesize=10000", table=COMPANIES_SET):
                    for row in page.records:
                        value = row.get("DataArea")
                        if not isinstance(value, str) or not value:
                            msg = f"table {COMPANIES_SET}: a company without DataArea; the response is malformed"
                            raise ServiceError(msg, table=COMPANIES_SET)
                        found.add(value.lower())
                self._companies = tuple(sorted(found))
            return self._companies

    def companies(self) -> tuple[str, ...] | None:
        """The companies a company-specific entity is read for; None: the default company only."""
        settings = self.finops
        if not settings.cross_company:
            return None
        return settings.companies or self.visible_companies()


__all__ = ["COMPANIES_SET", "FinOpsClient"]
