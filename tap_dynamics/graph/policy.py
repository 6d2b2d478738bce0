"""What is particular to Microsoft Graph, for the engine's transport and the delta strategy.

- the request id is ``request-id`` (and ``client-request-id``);
- ``429`` waits ``Retry-After`` (every thread of the run); ``503``/``504`` are retried and obey
  ``Retry-After`` when Graph sends it (https://learn.microsoft.com/graph/throttling);
- ``410 Gone`` (``resyncRequired``, with a ``Location``) and ``syncStateNotFound`` (the 7-day
  directory token lifetime, or an Outlook sync state evicted) mean "start over": final at any
  status, the stream re-baselines (:class:`GraphDelta`);
- ``403 Authorization_RequestDenied`` on a stream is a permission a person must grant: the
  stream fails naming it (:func:`permission_denied`), the others go on;
- Outlook allows 4 requests at a time per mailbox: requests under ``/users/{id}/calendarView``
  (and other mailbox paths) count against that mailbox's cap besides the global one.
"""

from __future__ import annotations

import re
import typing as t
from itertools import repeat
from operator import contains

from tap_dynamics.engine import override
from tap_dynamics.engine.policy import USER_AGENT, ServicePolicy, Verdict
from tap_dynamics.engine.replication import DELETED_AT
from tap_dynamics.errors import PermissionDenied, ServiceError

if t.TYPE_CHECKING:
    from collections.abc import Sequence

# Codes (and statuses) with which Graph says a delta or skip token can no longer be followed.
RESYNC_CODES = frozenset({"syncStateNotFound", "syncStateInvalid", "resyncRequired", "SyncStateNotFound"})
DENIED_CODES = frozenset({"Authorization_RequestDenied", "ErrorAccessDenied", "AccessDenied", "Forbidden"})
# Outlook's answer for a user without an Exchange Online mailbox (no licence, on-premises, soft-deleted).
NO_MAILBOX_CODES = frozenset({"MailboxNotEnabledForRESTAPI", "ErrorMailboxNotEnabledForRESTAPI", "ResourceNotFound",
                              "ErrorNonExistentMailbox", "ErrorInvalidUser"})
MAILBOX_LIMIT = 4
_MAILBOX_RE = re.compile(r"/users/([^/?]+)/(?:calendarView|calendar|events|mailFolders|messages)", re.IGNORECASE)


class GraphPolicy(ServicePolicy):
    """Microsoft Graph's headers, request ids, retryable statuses and per-mailbox cap."""

    service_name = "Microsoft Graph"
    base_headers: t.ClassVar[t.Mapping[str, str]] = {"Accept": "application/json", "User-Agent": USER_AGENT}
    request_id_headers = ("request-id", "client-request-id")
    per_key_limit = MAILBOX_LIMIT

    @override
    def classify(self, status: int, code: str | None) -> Verdict:
        if code in RESYNC_CODES or status == 410:
            return Verdict.FATAL  # no resend helps: the stream re-baselines
        return super().classify(status, code)

    @override
    def honours_retry_after(self, status: int) -> bool:
        return status in (503, 504)

    @override
    def concurrency_key(self, url: str) -> str | None:
        match = _MAILBOX_RE.search(url)
        return f"mailbox:{match.group(1).lower()}" if match else None


def is_resync(exc: ServiceError) -> bool:
    """Whether ``exc`` says the delta/skip token is no longer valid (start over)."""
    return exc.status == 410 or exc.code in RESYNC_CODES


def is_denied(exc: ServiceError) -> bool:
    """Whether ``exc`` is a refusal for want of a permission (403)."""
    return exc.status == 403 or exc.code in DENIED_CODES


def permission_denied(stream: str, permission: str, exc: ServiceError, *, delegated: bool = False) -> PermissionDenied:
    """The one line for a stream Graph refuses: the permission to grant, and where.

    A signed-in user's token (``delegated``) carries the app's delegated permissions, which are
    granted apart from its application permissions: the line names the kind the run uses.
    """
    kind = "delegated" if delegated else "application"
    msg = (
        f"table {stream}: missing Microsoft Graph {kind} permission {permission} "
        f"(HTTP {exc.status} {exc.code or ''}) — add it under Azure portal > App registrations > "
        f"your app > API permissions > Add a permission > Microsoft Graph > {kind.capitalize()} "
        "permissions, then click 'Grant admin consent for <tenant>'"
        + (" (the signed-in user must be allowed to read it too)" if delegated else "")
    )
    return PermissionDenied(msg, status=exc.status, code=exc.code, request_id=exc.request_id, table=stream)


class GraphDelta:
    """Graph's delta rows: ``@removed`` entries become tombstones; replays in a page collapse.

    ``{"id": …, "@removed": {"reason": "changed"}}`` (soft-deleted, restorable) and
    ``"reason": "deleted"`` (gone) both become ``{key: id, _sdc_deleted_at: read_at}``. Graph
    may return the same object more than once, across pages and within one: within a page only
    its last version is kept (a target that upserts by key sees one row per key per page);
    across pages the later one wins in such a target. ``extra`` is added to every row (the
    mailbox a calendar event belongs to).
    """

    def __init__(self, extra: dict[str, t.Any] | None = None) -> None:
        self.extra = extra or {}

    def tombstones(self, rows: Sequence[dict[str, t.Any]], read_at: str) -> tuple[Sequence[dict[str, t.Any]], int]:
        """The page's rows to emit and how many are deletions."""
        extra = self.extra
        if not extra and not any(map(contains, rows, repeat("@removed"))):  # C-level: every page
            return collapse(rows), 0
        out: list[dict[str, t.Any]] = []
        deletes = 0
        for row in rows:
            if "@removed" in row:
                deletes += 1
                row = {"id": row.get("id"), DELETED_AT: read_at}
            if extra:
                row.update(extra)
            out.append(row)
        return collapse(out), deletes

    def expired(self, exc: ServiceError) -> bool:
        """410 Gone or ``syncStateNotFound``: the token must be replaced by a full read."""
        return is_resync(exc)


def collapse(rows: Sequence[dict[str, t.Any]], key: str = "id") -> Sequence[dict[str, t.Any]]:
    """``rows`` with only the last row of each ``key`` value (a replayed object), in order."""
    ids = [row.get(key) for row in rows]
    if len(set(ids)) == len(ids):
        return rows
    last = {value: i for i, value in enumerate(ids)}
    return [row for i, row in enumerate(rows) if last[ids[i]] == i]


class GroupMembersDelta:
    """``groups/delta?$select=id,members``: each ``members@delta`` entry is a membership row.

    ``{"@odata.type": "#microsoft.graph.user", "id": …}`` is a member; with ``@removed`` it is a
    membership removed, emitted as a tombstone of (group, member). A large group's members come
    spread over several pages (the group repeated): each page's entries are emitted as they come.
    """

    def tombstones(self, rows: Sequence[dict[str, t.Any]], read_at: str) -> tuple[Sequence[dict[str, t.Any]], int]:
        """Membership rows from the page's groups, and how many are removals."""
        out: dict[tuple[t.Any, t.Any], dict[str, t.Any]] = {}
        for group in rows:
            group_id = group.get("id")
            for member in group.get("members@delta") or ():
                removed = "@removed" in member
                kind = str(member.get("@odata.type") or "").rpartition(".")[2] or None
                out[(group_id, member.get("id"))] = {
                    "group_id": group_id,
                    "member_id": member.get("id"),
                    "member_type": kind,
                    DELETED_AT: read_at if removed else None,
                }
        rows_out = list(out.values())  # a replayed membership: its last state in the page
        return rows_out, sum(1 for row in rows_out if row[DELETED_AT] is not None)

    def expired(self, exc: ServiceError) -> bool:
        """As for any Graph delta token."""
        return is_resync(exc)


__all__ = [
    "GraphDelta",
    "GraphPolicy",
    "GroupMembersDelta",
    "collapse",
    "is_denied",
    "is_resync",
    "permission_denied",
]
