"""The F&O environment's data: entities (CSDL types, keys, enums), companies and generated rows.

Reference §2: entity sets are public collection names (``CustomersV3``); company-specific
entities carry ``dataAreaId`` first in their key; enums are ``Microsoft.Dynamics.DataEntities``
enum types rendered as member names; empty dates are stored as ``1900-01-01`` sentinels
(date-times at midnight or at 12:00 UTC, dates as ``1900-01-01``). ``big`` adds synthetic
entities (the discovery benchmark's thousands of entities).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

NS = "Microsoft.Dynamics.DataEntities"
COMPANIES = ("usmf", "usrt", "demf")
DEFAULT_COMPANY = "usmf"
SENTINEL_DATETIME = "1900-01-01T00:00:00Z"
SENTINEL_DATE_NOON = "1900-01-01T12:00:00Z"
SENTINEL_DATE = "1900-01-01"
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)

# enum type -> [(member, value)]; labels per language for the enumerations metadata service
ENUMS: dict[str, list[tuple[str, int]]] = {
    "NoYes": [("No", 0), ("Yes", 1)],
    "SalesStatus": [("None", 0), ("Backorder", 1), ("Delivered", 2), ("Invoiced", 3), ("Canceled", 4)],
    "CustVendorType": [("Organization", 0), ("Person", 1)],
}
LABELS: dict[str, dict[str, str]] = {  # language -> member -> label (a member's label when missing)
    "en-us": {"Backorder": "Open order", "None": "None"},
    "de": {"No": "Nein", "Yes": "Ja", "Backorder": "Offener Auftrag", "Delivered": "Geliefert",
           "Invoiced": "Fakturiert", "Canceled": "Storniert", "Organization": "Organisation", "Person": "Person",
           "None": "Keine"},
}
LANGUAGES = ("en-us", "de")


@dataclass
class Prop:
    name: str
    type: str  # Edm.* or an enum type name (NS-qualified in CSDL)
    nullable: bool = True
    max_length: int | None = None
    sentinel: str | None = None  # how an empty value of this date property is stored

    @property
    def enum(self) -> str | None:
        return self.type if self.type in ENUMS else None


@dataclass
class Entity:
    name: str  # EntityType name
    entity_set: str  # public collection name
    keys: list[str]
    props: list[Prop]
    company: bool  # company-specific (dataAreaId)
    extra_xml: str = ""  # navigation / binary properties, rendered but never data
    rows: dict[tuple, dict[str, Any]] = field(default_factory=dict)

    def prop(self, name: str) -> Prop | None:
        return next((p for p in self.props if p.name == name), None)


def _entities() -> list[Entity]:
    s = "Edm.String"
    return [
        Entity("Company", "Companies", ["DataArea"], [Prop("DataArea", s, False, 4), Prop("Name", s, True, 60)],
               company=False),
        Entity("CustomerV3", "CustomersV3", ["dataAreaId", "CustomerAccount"], [
            Prop("dataAreaId", s, False, 4), Prop("CustomerAccount", s, False, 20),
            Prop("OrganizationName", s, True, 100), Prop("CustomerGroupId", s, True, 10),
            Prop("CreditLimit", "Edm.Decimal", False), Prop("IsOneTimeCustomer", "NoYes", False),
            Prop("CustomerType", "CustVendorType", False), Prop("PartyNumber", "Edm.Int64", False),
            Prop("LastInvoiceDateTime", "Edm.DateTimeOffset", False, sentinel=SENTINEL_DATETIME),
            Prop("PaymentDayDate", "Edm.Date", False, sentinel=SENTINEL_DATE),
            Prop("CreatedDateTime", "Edm.DateTimeOffset", False),
            Prop("ExchangeRateRounding", "Edm.Double", True), Prop("PartyGuid", "Edm.Guid", True),
        ], company=True,
            extra_xml='<Property Name="Image" Type="Edm.Binary" />'
                      '<NavigationProperty Name="CustomerGroup" Type="Microsoft.Dynamics.DataEntities.CustomerGroup" />'),
        Entity("SalesOrderHeaderV2", "SalesOrderHeadersV2", ["dataAreaId", "SalesOrderNumber"], [
            Prop("dataAreaId", s, False, 4), Prop("SalesOrderNumber", s, False, 20),
            Prop("OrderingCustomerAccountNumber", s, True, 20), Prop("SalesOrderStatus", "SalesStatus", False),
            Prop("TotalDiscountPercentage", "Edm.Decimal", False), Prop("LineCount", "Edm.Int32", False),
            Prop("IsEInvoice", "Edm.Boolean", False),
            Prop("RequestedShippingDate", "Edm.DateTimeOffset", False, sentinel=SENTINEL_DATE_NOON),
            Prop("ModifiedDateTime1", "Edm.DateTimeOffset", False),
        ], company=True),
        Entity("Currency", "Currencies", ["CurrencyCode"], [
            Prop("CurrencyCode", s, False, 3), Prop("Name", s, True, 60), Prop("RoundingPrecision", "Edm.Decimal", False),
        ], company=False),
    ]


def synthetic(index: int) -> Entity:
    """One of the discovery benchmark's entities: ~40 properties, a company key, an enum."""
    props = [Prop("dataAreaId", "Edm.String", False, 4), Prop(f"Id{index}", "Edm.String", False, 20)]
    kinds = ["Edm.String", "Edm.Decimal", "Edm.Int32", "Edm.DateTimeOffset", "NoYes", "Edm.Int64", "Edm.Date"]
    props += [Prop(f"Field{j}Value", kinds[j % len(kinds)], True, 60 if j % len(kinds) == 0 else None)
              for j in range(38)]
    props.append(Prop("ModifiedDateTime", "Edm.DateTimeOffset", False))
    return Entity(f"Synthetic{index}Entity", f"Synthetic{index}Entities", ["dataAreaId", f"Id{index}"], props,
                  company=True)


class Store:
    """Entities and their rows per company; a clock for ModifiedDateTime stamps."""

    def __init__(self, rows: dict[str, int], seed: int = 42, big: int = 0,
                 companies: tuple[str, ...] = COMPANIES) -> None:
        self.lock = threading.RLock()
        self.companies = companies
        self.entities = {e.entity_set: e for e in _entities()}
        for i in range(big):
            e = synthetic(i)
            self.entities[e.entity_set] = e
        self.clock = EPOCH.timestamp() + 86400 * 30
        self.generation = 0  # bumped by every change: the unordered read order depends on it
        self.seq = 0
        rng = random.Random(seed)
        for company in companies:
            self._put("Companies", {"DataArea": company, "Name": f"Contoso {company.upper()}"})
        for code, name in (("USD", "US Dollar"), ("EUR", "Euro"), ("JPY", "Yen")):
            self._put("Currencies", {"CurrencyCode": code, "Name": name, "RoundingPrecision": Decimal("0.01")})
        for entity_set, total in rows.items():
            if entity_set not in ("CustomersV3", "SalesOrderHeadersV2"):
                raise ValueError(f"the F&O emulator generates rows for CustomersV3 and SalesOrderHeadersV2, not {entity_set}")
            for n in range(total):
                company = companies[n % len(companies)]
                self._put(entity_set, self.generate(entity_set, company, n // len(companies), rng))

    # ------------------------------------------------------------------ rows
    def generate(self, entity_set: str, company: str, n: int, rng: random.Random) -> dict[str, Any]:
        stamp = _iso(EPOCH.timestamp() + n * 7 + rng.randrange(5))
        if entity_set == "CustomersV3":
            invoiced = n % 3 != 0
            return {
                "dataAreaId": company, "CustomerAccount": f"{company.upper()}-{n:06d}",
                "OrganizationName": f"Customer {n} of {company}", "CustomerGroupId": f"G{n % 7}",
                "CreditLimit": Decimal(f"{rng.randrange(10**13)}.{rng.randrange(10**4):04d}"),
                "IsOneTimeCustomer": "Yes" if n % 5 == 0 else "No",
                "CustomerType": "Person" if n % 4 == 0 else "Organization",
                "PartyNumber": 5637144576 + n,
                "LastInvoiceDateTime": stamp if invoiced else SENTINEL_DATETIME,
                "PaymentDayDate": stamp[:10] if invoiced else SENTINEL_DATE,
                "CreatedDateTime": stamp, "ExchangeRateRounding": 0.5 if n % 2 else None,
                "PartyGuid": f"{zlib.crc32(f'{company}{n}'.encode()):08x}-0000-4000-8000-{n:012d}",
            }
        return {
            "dataAreaId": company, "SalesOrderNumber": f"SO-{n:07d}",
            "OrderingCustomerAccountNumber": f"{company.upper()}-{n % 50:06d}",
            "SalesOrderStatus": ENUMS["SalesStatus"][n % 5][0],
            "TotalDiscountPercentage": Decimal(f"{n % 100}.{n % 97:02d}"), "LineCount": n % 40,
            "IsEInvoice": n % 2 == 0,
            "RequestedShippingDate": SENTINEL_DATE_NOON if n % 4 == 0 else stamp[:10] + "T12:00:00Z",
            "ModifiedDateTime1": stamp,
        }

    def key(self, entity: Entity, row: dict[str, Any]) -> tuple:
        return tuple(str(row[k]).lower() if isinstance(row[k], str) else row[k] for k in entity.keys)

    def _put(self, entity_set: str, row: dict[str, Any]) -> dict[str, Any]:
        entity = self.entities[entity_set]
        self.seq += 1
        row["@odata.etag"] = f'W/"{zlib.crc32(repr(sorted(row.items())).encode()):x}{self.seq}"'
        entity.rows[self.key(entity, row)] = row
        return row

    def now_iso(self) -> str:
        return _iso(self.clock)

    def upsert(self, entity_set: str, values: dict[str, Any]) -> dict[str, Any]:
        """Insert or update a row by key; ``ModifiedDateTime*`` is stamped with the clock."""
        with self.lock:
            entity = self.entities[entity_set]
            self.clock += 1
            row = dict(entity.rows.get(self.key(entity, values), {}))
            row.pop("@odata.etag", None)
            row.update({k: Decimal(str(v)) if (p := entity.prop(k)) and p.type == "Edm.Decimal" else v
                        for k, v in values.items()})
            for p in entity.props:
                if p.name.startswith("ModifiedDateTime"):
                    row[p.name] = self.now_iso()
            self.generation += 1
            return self._put(entity_set, row)

    def delete(self, entity_set: str, key: tuple) -> None:
        with self.lock:
            entity = self.entities[entity_set]
            entity.rows.pop(tuple(k.lower() if isinstance(k, str) else k for k in key))
            self.generation += 1


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
