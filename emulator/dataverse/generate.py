"""Deterministic row generation for the emulated org's tables.

Row generation is column-wise with one ``random.Random`` per table (seeded from the seed
and the table name), so the same seed always yields the same rows and 200k rows take a
couple of seconds.
"""

from __future__ import annotations

import random
import time
import uuid
from decimal import Decimal

from .schema import BASE_EPOCH, BUSINESS_UNIT_ID, CURRENCY_ID, TableDef
from .tables import CUSTOMER_TYPE, INDUSTRY, REGIONS

# ---------------------------------------------------------------- value formatting

_TS_CACHE: dict[int, str] = {}


def iso_ts(ts: int) -> str:
    """UTC ``YYYY-MM-DDTHH:MM:SSZ`` (whole seconds, as Dataverse serves UserLocal)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def iso_date(ts: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


# ---------------------------------------------------------------- data generation

COMPANY_A = ["Contoso", "Fabrikam", "Litware", "Adventure Works", "Northwind", "Tailspin Toys",
             "Wingtip", "Alpine Ski House", "Coho Winery", "Blue Yonder", "Fourth Coffee",
             "Woodgrove", "Trey Research", "Proseware", "Wide World Importers",
             "Lucerne Publishing", "Margie's Travel", "Humongous Insurance", "City Power & Light",
             "Müller & Söhne", "Café Zürich", "Łódź Logistyka", "東京商事", "Société Générale d'Essai",
             "Ørsted Vind", "São Paulo Têxteis", "Graphic Design Institute", "A. Datum"]
COMPANY_B = ["Inc.", "Ltd", "GmbH", "LLC", "S.A.", "AG", "Corp.", "Group", "Holdings", "Partners",
             "& Co.", "KG", "Sp. z o.o.", "株式会社"]
FIRST = ["Nancy", "Andrew", "Janet", "Margaret", "Steven", "Michael", "Robert", "Laura", "Anne",
         "Yvonne", "Jürgen", "Zoë", "José", "François", "Søren", "Łukasz", "Ana", "Kenji", "Priya",
         "Olga", "Chidi", "Mei", "Ahmed", "Siobhán"]
LAST = ["Davolio", "Fuller", "Leverling", "Peacock", "Buchanan", "Suyama", "King", "Callahan",
        "Dodsworth", "McKay", "Müller", "Kowalski", "García", "Dubois", "Jørgensen", "Tanaka",
        "Patel", "Ivanova", "Okafor", "Chen", "Haddad", "O'Brien", "van der Berg", "Nguyễn"]
CITIES = [("Seattle", "98052", 47.61), ("Redmond", "98053", 47.67), ("London", "EC1A 1BB", 51.51),
          ("München", "80331", 48.14), ("Paris", "75001", 48.86), ("Zürich", "8001", 47.37),
          ("Tokyo", "100-0001", 35.68), ("São Paulo", "01000-000", -23.55),
          ("Sydney", "2000", -33.87), ("Kraków", "30-001", 50.06), ("Toronto", "M5H 2N2", 43.65),
          ("Cape Town", "8001", -33.92), ("Reykjavík", "101", 64.15), ("Dublin", "D02", 53.35)]
COUNTRIES = ["United States", "United Kingdom", "Germany", "France", "Switzerland", "Japan",
             "Brazil", "Australia", "Poland", "Canada", "South Africa", "Iceland", "Ireland"]
JOBS = ["Purchasing Manager", "CEO", "CTO", "Sales Representative", "Buyer", "Owner",
        "Accountant", "Data Engineer", "Operations Lead", None]
WORDS = ["Key account with long-standing relationship.", "Prefers email contact.",
         "Interested in the new product line; follow up in Q3.",
         "Ünïcödé notes — ümlauts, ß, emoji 🚀 and \"quotes\".",
         "Multi-line\nnote with a tab\tand a backslash \\.", "Potential upsell.", ""]


def fast_randint(rng: random.Random):
    """``randint`` without the argument checking (3x faster; fine for test data)."""
    r = rng.random
    return lambda a, b: a + int(r() * (b - a + 1))


def _guids(rng: random.Random, n: int) -> list[str]:
    gb = rng.getrandbits
    return [str(uuid.UUID(int=gb(128), version=4)) for _ in range(n)]


def modified_times(rng: random.Random, n: int, start: int = BASE_EPOCH) -> list[int]:
    """Non-decreasing whole-second timestamps, 5-10 rows sharing each second."""
    out: list[int] = []
    t = start
    ri = fast_randint(rng)
    while len(out) < n:
        out.extend([t] * ri(5, 10))
        t += ri(1, 3)
    return out[:n]


def _pick(rng: random.Random, pool: list, n: int, null_rate: float = 0.0) -> list:
    vals = rng.choices(pool, k=n)
    if null_rate:
        r = rng.random
        vals = [None if r() < null_rate else v for v in vals]
    return vals


def _money(rng: random.Random, n: int, big_every: int = 0, null_rate=0.1) -> list:
    r = rng.random
    ri = fast_randint(rng)
    out = []
    for i in range(n):
        if r() < null_rate:
            out.append(None)
        elif big_every and i % big_every == 3:
            out.append(Decimal("922337203685.4775") - Decimal(i % 1000))  # > 2**53 / 10**4
        else:
            out.append(Decimal(ri(0, 5_000_000_00)) / 100)
    return out


def generate(table: TableDef, n: int, rng: random.Random, ids: dict[str, list[str]],
             pks: list[str]) -> dict[str, list]:
    """Return ``prop -> list of python values`` (length n) for everything except the
    store-stamped columns (createdon, modifiedon, versionnumber)."""
    cols: dict[str, list] = {table.pk: pks}
    contacts, accounts, users = ids.get("contact", []), ids.get("account", []), ids.get("systemuser", [])
    r = rng.random
    ri = fast_randint(rng)
    state = [0 if r() < 0.85 else 1 for _ in range(n)]
    cols["statecode"] = state
    cols["statuscode"] = [1 if st == 0 else 2 for st in state]
    if table.logical == "account":
        a, b = rng.choices(COMPANY_A, k=n), rng.choices(COMPANY_B, k=n)
        cols["name"] = [f"{x} {y}" if i % 7 else f"{x} {y} ({i})" for i, (x, y) in enumerate(zip(a, b, strict=True))]
        cols["accountnumber"] = [None if r() < 0.1 else f"AC-{ri(0, 99999999):08d}" for _ in range(n)]
        cols["telephone1"] = [None if r() < 0.15 else f"+1-425-555-{ri(0, 9999):04d}" for _ in range(n)]
        cols["emailaddress1"] = [
            None if r() < 0.2 else f"info{i}@{x.split()[0].lower().strip(',.')}.example.com"
            for i, x in enumerate(a)]
        cols["websiteurl"] = [None if r() < 0.3 else f"https://www.{x.split()[0].lower()}.example.com"
                              for x in a]
        city = rng.choices(CITIES, k=n)
        cols["address1_city"] = [c[0] for c in city]
        cols["address1_postalcode"] = [c[1] if r() > 0.1 else None for c in city]
        cols["address1_latitude"] = [None if r() < 0.1 else round(c[2] + (r() - 0.5) / 10, 5)
                                     for c in city]
        cols["description"] = _pick(rng, WORDS, n, 0.4)
        rev = _money(rng, n, big_every=50)
        cols["revenue"] = rev
        cols["revenue_base"] = rev
        cols["creditlimit"] = _money(rng, n, null_rate=0.3)
        cols["exchangerate"] = [Decimal("0.1") if i % 3 == 0 else Decimal("1") if i % 3 == 1
                                else Decimal("0.9234567891") for i in range(n)]
        cols["numberofemployees"] = [None if r() < 0.2 else ri(1, 250000) for _ in range(n)]
        cols["donotemail"] = [r() < 0.2 for _ in range(n)]
        cols["creditonhold"] = [r() < 0.05 for _ in range(n)]
        cols["industrycode"] = _pick(rng, [o.value for o in INDUSTRY.options], n, 0.25)
        cols["customertypecode"] = _pick(rng, [o.value for o in CUSTOMER_TYPE.options], n, 0.2)
        cols["accountcategorycode"] = _pick(rng, [1, 2], n, 0.3)
        regions = [o.value for o in REGIONS.options]
        cols["new_regions"] = [
            None if r() < 0.3 else ",".join(str(v) for v in sorted(rng.sample(regions, ri(1, 3))))
            for _ in range(n)]
        cols["new_foundedon"] = [None if r() < 0.2 else iso_date(ri(-1_500_000_000, 1_600_000_000))
                                 for _ in range(n)]
        cols["lastusedincampaign"] = [None if r() < 0.5 else iso_ts(ri(1_600_000_000, BASE_EPOCH))
                                      for _ in range(n)]
        cols["new_localopening"] = [
            None if r() < 0.3 else iso_ts(BASE_EPOCH + ri(0, 365) * 86400 + ri(6, 10) * 3600)
            for _ in range(n)]
        cols["_primarycontactid_value"] = _pick(rng, contacts, n, 0.2) if contacts else [None] * n
        cols["_parentaccountid_value"] = (
            [None if r() < 0.7 else accounts[ri(0, len(accounts) - 1)] for _ in range(n)]
            if accounts else [None] * n)
        cols["_ownerid_value"] = _pick(rng, users, n) if users else [None] * n
        cols["_modifiedby_value"] = _pick(rng, users, n) if users else [None] * n
        cols["_transactioncurrencyid_value"] = [CURRENCY_ID] * n
        cols["new_sourcetable"] = _pick(rng, ["lead", "contact", "opportunity"], n, 0.3)
    elif table.logical == "contact":
        f, l_ = rng.choices(FIRST, k=n), rng.choices(LAST, k=n)
        cols["firstname"] = f
        cols["lastname"] = l_
        cols["fullname"] = [f"{x} {y}" for x, y in zip(f, l_, strict=True)]
        cols["emailaddress1"] = [None if r() < 0.1 else
                                 f"{x.lower()}.{y.lower().replace(' ', '')}{i}@example.org"
                                 for i, (x, y) in enumerate(zip(f, l_, strict=True))]
        cols["telephone1"] = [None if r() < 0.2 else f"+49-89-555-{ri(0, 9999):04d}" for _ in range(n)]
        cols["mobilephone"] = [None if r() < 0.5 else f"+44-7700-{ri(0, 999999):06d}" for _ in range(n)]
        cols["jobtitle"] = _pick(rng, JOBS, n)
        cols["address1_city"] = [c[0] for c in rng.choices(CITIES, k=n)]
        cols["address1_country"] = _pick(rng, COUNTRIES, n, 0.1)
        cols["description"] = _pick(rng, WORDS, n, 0.5)
        cols["birthdate"] = [None if r() < 0.3 else iso_date(ri(-900_000_000, 1_000_000_000))
                             for _ in range(n)]
        cols["gendercode"] = _pick(rng, [1, 2], n, 0.2)
        cols["familystatuscode"] = _pick(rng, [1, 2, 3, 4], n, 0.4)
        cols["donotphone"] = [r() < 0.1 for _ in range(n)]
        cols["numberofchildren"] = [None if r() < 0.5 else ri(0, 5) for _ in range(n)]
        cols["annualincome"] = _money(rng, n, null_rate=0.4)
        pc = []
        for _ in range(n):
            x = r()
            if x < 0.6 and accounts:
                pc.append(accounts[ri(0, len(accounts) - 1)])
            elif x < 0.7 and contacts:
                pc.append(contacts[ri(0, len(contacts) - 1)])
            else:
                pc.append(None)
        cols["_parentcustomerid_value"] = pc
        cols["_ownerid_value"] = _pick(rng, users, n) if users else [None] * n
        cols["_transactioncurrencyid_value"] = [CURRENCY_ID] * n
    elif table.logical == "systemuser":
        f, l_ = rng.choices(FIRST, k=n), rng.choices(LAST, k=n)
        cols["firstname"] = f
        cols["lastname"] = l_
        cols["fullname"] = [f"{x} {y}" for x, y in zip(f, l_, strict=True)]
        dom = [f"{x.lower()}.{y.lower().replace(' ', '')}{i}@contoso.onmicrosoft.com"
               for i, (x, y) in enumerate(zip(f, l_, strict=True))]
        cols["domainname"] = dom
        cols["internalemailaddress"] = dom
        cols["isdisabled"] = [r() < 0.1 for _ in range(n)]
        cols["accessmode"] = [0 if r() < 0.8 else 4 for _ in range(n)]
        cols["_businessunitid_value"] = [BUSINESS_UNIT_ID] * n
        cols["azureactivedirectoryobjectid"] = _guids(rng, n)
        del cols["statecode"], cols["statuscode"]
    return cols
