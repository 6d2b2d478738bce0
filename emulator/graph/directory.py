"""A tenant's directory and mailboxes, with the change log that delta queries read.

Every change (an object created, updated, soft-deleted, deleted, restored; a membership added or
removed; an event created, changed or deleted) gets the next sequence number. A delta token holds
the sequence number its round ended at; the next round returns what changed after it, each object
once in its current state (or as ``@removed``), membership changes as ``members@delta``.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from . import model as m


@dataclass
class Change:
    seq: int
    collection: str  # users, groups, …, or "events:<user id>"
    object_id: str
    member_id: str | None = None  # a membership change of group object_id


@dataclass
class Directory:
    """Objects by collection, memberships, events by mailbox and the change log (thread-safe)."""

    counts: dict[str, int]
    seed: int = 42
    domain: str = "contoso.onmicrosoft.com"
    tenant_id: str = ""
    events_per_user: int = 5
    no_mailbox_every: int = 0  # every n-th user has no Exchange Online mailbox (0: none)
    lock: threading.RLock = field(default_factory=threading.RLock)
    seq: int = 0
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    soft_deleted: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    members: dict[str, dict[str, str]] = field(default_factory=dict)  # group -> member -> type
    events: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # user -> id -> event
    mailboxes: set[str] = field(default_factory=set)
    changes: list[Change] = field(default_factory=list)
    static: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        gen = {
            "users": lambda i: m.user(i, rng, self.domain), "groups": lambda i: m.group(i, rng, self.domain),
            "devices": lambda i: m.device(i, rng), "applications": m.application,
            "servicePrincipals": m.service_principal, "directoryRoles": m.directory_role,
        }
        for collection in m.DELTA_COLLECTIONS:
            self.objects[collection] = {}
            self.soft_deleted[collection] = {}
            for i in range(self.counts.get(collection, 0)):
                self.put(collection, gen[collection](i))
        users = list(self.objects["users"])
        for n, group_id in enumerate(self.objects["groups"]):
            self.members[group_id] = {}
            for user_id in users[n % 3:: 3 + n % 4][: 5 + n * 7 % 40]:
                self.add_member(group_id, user_id)
        now = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
        for i, user_id in enumerate(users):
            if self.no_mailbox_every and i % self.no_mailbox_every == self.no_mailbox_every - 1:
                continue
            self.mailboxes.add(user_id)
            self.events[user_id] = {}
            for k in range(self.events_per_user):
                self.put_event(user_id, m.event(user_id, k, rng, now + dt.timedelta(days=rng.randint(-300, 150))))
        self.static = {
            "organization": [{"id": self.tenant_id, "displayName": "Contoso Ltd", "tenantType": "AAD",
                              "countryLetterCode": "US", "city": "Redmond", "preferredLanguage": "en",
                              "verifiedDomains": [{"name": self.domain, "type": "Managed", "isDefault": True,
                                                   "isInitial": True, "capabilities": "Email, OfficeCommunicationsOnline"}],
                              "businessPhones": [], "technicalNotificationMails": [f"admin@{self.domain}"],
                              "createdDateTime": m.iso(m.BASE_TIME)}],
            "domains": [{"id": self.domain, "authenticationType": "Managed", "isDefault": True, "isInitial": True,
                         "isVerified": True, "isRoot": True, "isAdminManaged": True,
                         "supportedServices": ["Email", "OfficeCommunicationsOnline"],
                         "passwordValidityPeriodInDays": 2147483647, "passwordNotificationWindowInDays": 14}],
            "subscribedSkus": [{"id": f"{self.tenant_id}_{m.E5_SKU}", "skuId": m.E5_SKU, "skuPartNumber": "SPE_E5",
                                "capabilityStatus": "Enabled", "consumedUnits": len(users), "appliesTo": "User",
                                "accountId": self.tenant_id, "accountName": "Contoso",
                                "prepaidUnits": {"enabled": len(users) + 25, "suspended": 0, "warning": 0, "lockedOut": 0},
                                "servicePlans": [{"servicePlanId": m.EXCHANGE_PLAN, "servicePlanName": "EXCHANGE_S_ENTERPRISE",
                                                  "provisioningStatus": "Success", "appliesTo": "User"}],
                                "subscriptionIds": [m.stable_id("subscription", 1)]}],
        }

    # ------------------------------------------------------------ changes
    def _log(self, collection: str, object_id: str, member_id: str | None = None) -> None:
        self.seq += 1
        self.changes.append(Change(self.seq, collection, object_id, member_id))

    def put(self, collection: str, row: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (a restore, too)."""
        with self.lock:
            self.soft_deleted[collection].pop(row["id"], None)
            self.objects[collection][row["id"]] = dict(row)
            self._log(collection, row["id"])
            return row

    def update(self, collection: str, object_id: str, values: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            row = self.objects[collection][object_id]
            for key, value in values.items():
                if value is None:
                    row.pop(key, None)
                else:
                    row[key] = value
            self._log(collection, object_id)
            return dict(row)

    def delete(self, collection: str, object_id: str, *, permanent: bool = False) -> None:
        """Delete an object: soft (restorable, ``@removed`` reason ``changed``) or permanent."""
        with self.lock:
            row = self.objects[collection].pop(object_id, None) or self.soft_deleted[collection].pop(object_id)
            if not permanent:
                self.soft_deleted[collection][object_id] = row
            for group_id, group in self.members.items():
                if object_id in group:
                    del group[object_id]
                    self._log("groups", group_id, object_id)
            self._log(collection, object_id)

    def restore(self, collection: str, object_id: str) -> dict[str, Any]:
        with self.lock:
            return self.put(collection, self.soft_deleted[collection][object_id])

    def add_member(self, group_id: str, member_id: str, kind: str = "user") -> None:
        with self.lock:
            self.members.setdefault(group_id, {})[member_id] = kind
            self._log("groups", group_id, member_id)

    def remove_member(self, group_id: str, member_id: str) -> str:
        with self.lock:
            kind = self.members[group_id].pop(member_id)
            self._log("groups", group_id, member_id)
            return kind

    def put_event(self, user_id: str, row: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.events[user_id][row["id"]] = dict(row)
            self._log(f"events:{user_id}", row["id"])
            return row

    def delete_event(self, user_id: str, event_id: str) -> None:
        with self.lock:
            del self.events[user_id][event_id]
            self._log(f"events:{user_id}", event_id)

    # ------------------------------------------------------------ reading
    def state_of(self, collection: str, object_id: str) -> tuple[str, dict[str, Any] | None]:
        """``live`` (with the row), ``changed`` (soft-deleted) or ``deleted``."""
        row = self.objects.get(collection, {}).get(object_id)
        if row is not None:
            return "live", row
        if object_id in self.soft_deleted.get(collection, {}):
            return "changed", None
        return "deleted", None

    def changed_since(self, collection: str, since: int, until: int) -> tuple[list[str], dict[str, list[str]]]:
        """Objects changed in (since, until], in order of their last change, and the members
        changed per group."""
        order: dict[str, int] = {}
        member_changes: dict[str, dict[str, None]] = {}
        with self.lock:
            for change in self.changes:
                if change.seq <= since or change.seq > until or change.collection != collection:
                    continue
                if change.member_id is None:
                    order.pop(change.object_id, None)
                    order[change.object_id] = change.seq
                else:
                    member_changes.setdefault(change.object_id, {})[change.member_id] = None
        return list(order), {group: list(ids) for group, ids in member_changes.items()}

    def truth(self) -> dict[str, Any]:
        """What a full sync must hold, per stream name (and the ids the demo changes)."""
        with self.lock:
            names = {"users": "users", "groups": "groups", "devices": "devices", "applications": "applications",
                     "servicePrincipals": "service_principals", "directoryRoles": "directory_roles"}
            out: dict[str, Any] = {stream: len(self.objects[c]) for c, stream in names.items()}
            out.update({name: len(rows) for name, rows in (("domains", self.static["domains"]),
                        ("organization", self.static["organization"]), ("subscribed_skus", self.static["subscribedSkus"]))})
            out["group_members"] = sum(len(members) for members in self.members.values())
            now = dt.datetime.now(dt.timezone.utc)  # the events stream's default window
            start, end = (m.iso(now - dt.timedelta(days=365))[:19], m.iso(now + dt.timedelta(days=180))[:19])
            out["events"] = sum(1 for events in self.events.values() for row in events.values()
                                if start <= row["start"]["dateTime"][:19] < end)
            out["user_ids"] = sorted(self.objects["users"])
            out["memberships"] = sorted([g, u] for g, members in self.members.items() for u in members)
            return out
