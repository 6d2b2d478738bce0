"""Tests of the Microsoft cloud emulator itself, through real HTTPS (no mocking).

Every request passes ``verify=emu.ca_path`` explicitly: REQUESTS_CA_BUNDLE on CI machines
would otherwise override ``Session.verify``.
"""

from __future__ import annotations

import urllib.parse
from decimal import Decimal

import msal
import orjson
import pytest
import requests

from emulator import Emulator

API = "/api/data/v9.2"


@pytest.fixture(scope="module")
def emu():
    e = Emulator(rows={"account": 12345, "contact": 300, "systemuser": 10}, seed=7).start()
    yield e
    e.stop()


def token(emu: Emulator, **form) -> requests.Response:
    data = {"grant_type": "client_credentials", "client_id": emu.client_id,
            "client_secret": emu.client_secret, "scope": f"{emu.org_url}/.default", "client_info": "1"}
    data.update(form)
    data = {k: v for k, v in data.items() if v is not None}
    return requests.post(f"{emu.authority_host}/{emu.tenant_id}/oauth2/v2.0/token", data=data,
                         verify=emu.ca_path, timeout=10)


def get(emu: Emulator, path: str, tok: str | None = "auto", prefer: str | None = None, **kw):
    headers = {"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"}
    if tok == "auto":
        tok = emu.issue_token()
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    if prefer:
        headers["Prefer"] = prefer
    url = path if path.startswith("https://") else emu.org_url + path
    return requests.get(url, headers=headers, verify=emu.ca_path, timeout=30, **kw)


def read_all(emu, path, prefer="odata.maxpagesize=5000"):
    pages, rows, url, last = 0, [], path, None
    while url:
        r = get(emu, url, prefer=prefer)
        assert r.status_code == 200, r.text
        last = r.json()
        rows += last["value"]
        pages += 1
        url = last.get("@odata.nextLink")
    return pages, rows, last


# ---------------------------------------------------------------- TLS + Entra

def test_tls_requires_the_ca(emu):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(emu.org_url + API + "/", verify=True, timeout=10)
    assert requests.get(emu.authority_host + f"/{emu.tenant_id}/v2.0/.well-known/openid-configuration",
                        verify=emu.ca_path, timeout=10).status_code == 200


def test_openid_configuration_and_unknown_tenant(emu):
    r = requests.get(f"{emu.authority_host}/{emu.tenant_id}/v2.0/.well-known/openid-configuration",
                     verify=emu.ca_path, timeout=10)
    cfg = r.json()
    assert cfg["token_endpoint"] == f"{emu.authority_host}/{emu.tenant_id}/oauth2/v2.0/token"
    for k in ("issuer", "authorization_endpoint", "device_authorization_endpoint", "jwks_uri"):
        assert cfg[k].startswith(emu.authority_host + "/")
    r = requests.get(f"{emu.authority_host}/bad-tenant/v2.0/.well-known/openid-configuration",
                     verify=emu.ca_path, timeout=10)
    assert r.status_code == 400 and r.json()["error_codes"] == [90002]


def test_token_success_is_a_jwt_for_the_org(emu):
    r = token(emu)
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    import base64
    payload = body["access_token"].split(".")[1]
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["aud"] == emu.org_url and claims["appid"] == emu.client_id
    assert claims["tid"] == emu.tenant_id and claims["exp"] > claims["iat"]
    # trailing slash before /.default and HTTP Basic client auth are accepted too
    assert token(emu, scope=f"{emu.org_url}//.default").status_code == 200
    r = requests.post(f"{emu.authority_host}/{emu.tenant_id}/oauth2/v2.0/token",
                      data={"grant_type": "client_credentials", "scope": f"{emu.org_url}/.default"},
                      auth=(emu.client_id, emu.client_secret), verify=emu.ca_path, timeout=10)
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("setup", "form", "status", "error", "code"),
    [
        (None, {"client_secret": "wrong"}, 401, "invalid_client", 7000215),
        ("expired", {}, 401, "invalid_client", 7000222),
        (None, {"client_id": "99999999-9999-4999-8999-999999999999"}, 400, "unauthorized_client", 700016),
        (None, {"scope": "https://other.crm.dynamics.com/.default"}, 400, "invalid_resource", 500011),
        ("noconsent", {}, 400, "invalid_grant", 65001),
        (None, {"scope": "not a scope/.default"}, 400, "invalid_scope", 700022),
        (None, {"scope": "foo/.default"}, 400, "invalid_scope", 70011),
    ],
)
def test_token_errors(emu, setup, form, status, error, code):
    if setup == "expired":
        emu.register_app("33333333-3333-4333-8333-333333333333", secret="s3", secret_expired=True)
        form = {"client_id": "33333333-3333-4333-8333-333333333333", "client_secret": "s3"}
    if setup == "noconsent":
        emu.register_app("44444444-4444-4444-8444-444444444444", secret="s4", consent=False)
        form = {"client_id": "44444444-4444-4444-8444-444444444444", "client_secret": "s4"}
    r = token(emu, **form)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error and body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert "\r\nTrace ID: " in body["error_description"] and "\r\nCorrelation ID: " in body["error_description"]
    for k in ("timestamp", "trace_id", "correlation_id", "error_uri"):
        assert body[k]
    if code == 500011:
        assert "The resource principal named https://other.crm.dynamics.com was not found in the tenant" in body["error_description"]


def test_unknown_tenant_token(emu):
    r = requests.post(f"{emu.authority_host}/nope.onmicrosoft.com/oauth2/v2.0/token",
                      data={"grant_type": "client_credentials"}, verify=emu.ca_path, timeout=10)
    assert r.status_code == 400 and r.json()["error_codes"] == [90002]


def test_msal_gets_a_token(emu):
    ca = emu.ca_path

    class Session(requests.Session):
        def request(self, *a, **kw):
            kw["verify"] = ca
            return super().request(*a, **kw)

    app = msal.ConfidentialClientApplication(
        emu.client_id, client_credential=emu.client_secret,
        authority=f"{emu.authority_host}/{emu.tenant_id}", instance_discovery=False,
        http_client=Session(), azure_region=False)
    result = app.acquire_token_for_client(scopes=[f"{emu.org_url}/.default"])
    assert "access_token" in result, result
    assert get(emu, API + "/WhoAmI", tok=result["access_token"]).status_code == 200
    bad = msal.ConfidentialClientApplication(
        emu.client_id, client_credential="wrong", authority=f"{emu.authority_host}/{emu.tenant_id}",
        instance_discovery=False, http_client=Session(), azure_region=False)
    res = bad.acquire_token_for_client(scopes=[f"{emu.org_url}/.default"])
    assert res["error"] == "invalid_client" and 7000215 in res["error_codes"]


# ---------------------------------------------------------------- Dataverse auth

@pytest.mark.parametrize("kind", ["missing", "malformed", "signature", "expired", "audience"])
def test_401_challenge(emu, kind):
    tok = {"missing": None, "malformed": "abc", "signature": emu.issue_token()[:-4] + "AAAA",
           "expired": emu.issue_token(lifetime=-10),
           "audience": emu.issue_token(audience="https://other.crm.dynamics.com")}[kind]
    r = get(emu, API + "/WhoAmI", tok=tok)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == (
        f"Bearer authorization_uri={emu.authority_host}/{emu.tenant_id}/oauth2/authorize, "
        f"resource_id={emu.org_url}/")


def test_no_application_user_is_403(emu):
    emu.register_app("55555555-5555-4555-8555-555555555555", secret="s5", application_user=False)
    r = token(emu, client_id="55555555-5555-4555-8555-555555555555", client_secret="s5")
    assert r.status_code == 200
    r = get(emu, API + "/WhoAmI", tok=r.json()["access_token"])
    assert r.status_code == 403 and r.json()["error"]["code"] == "0x80072560"


def test_headers_whoami_org_and_counts(emu):
    r = get(emu, API + "/WhoAmI()")
    assert r.status_code == 200
    assert r.headers["OData-Version"] == "4.0"
    assert r.headers["Content-Type"] == "application/json; odata.metadata=minimal"
    assert r.headers["REQ_ID"] == r.headers["x-ms-service-request-id"]
    assert "x-ms-ratelimit-burst-remaining-xrm-requests" in r.headers
    assert set(r.json()) >= {"BusinessUnitId", "UserId", "OrganizationId"}
    assert get(emu, API + "/organizations?$select=name").json()["value"][0]["name"] == "Contoso Emulated"
    r = get(emu, API + "/RetrieveTotalRecordCount(EntityNames=['account','contact'])")
    assert r.json()["EntityRecordCountCollection"]["Values"] == [12345, 300]
    r = get(emu, API + "/accounts/$count")
    assert r.text == "5000" and r.headers["Content-Type"].startswith("text/plain")


# ---------------------------------------------------------------- metadata

def test_service_document_and_csdl(emu):
    names = {v["name"] for v in get(emu, API + "/").json()["value"]}
    assert {"accounts", "contacts", "systemusers"} <= names
    x = get(emu, API + "/$metadata").text
    assert 'Namespace="Microsoft.Dynamics.CRM" Alias="mscrm"' in x
    assert '<EntityType Name="systemuser" BaseType="mscrm.principal">' in x
    su = x.split('<EntityType Name="systemuser"')[1].split("</EntityType>")[0]
    assert "<Key>" not in su
    assert "Org.OData.Capabilities.V1.ChangeTracking" not in x
    xa = get(emu, API + "/$metadata?annotations=true").text
    assert xa.count("Org.OData.Capabilities.V1.ChangeTracking") == 2


def test_entity_definitions(emu):
    r = get(emu, API + "/EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute,"
                       "ChangeTrackingEnabled,TableType&$filter=IsValidForAdvancedFind eq true")
    vals = {v["LogicalName"]: v for v in r.json()["value"]}
    assert set(vals) == {"account", "contact", "systemuser", "new_internalqueueitem",
                         "new_externalorder", "new_sensorreading", "new_account_contact",
                         "new_payrollentry"}
    assert vals["new_externalorder"]["TableType"] == "Virtual"
    assert vals["new_sensorreading"]["TableType"] == "Elastic"
    assert vals["account"]["EntitySetName"] == "accounts" and vals["account"]["MetadataId"]
    assert vals["systemuser"]["ChangeTrackingEnabled"] is False
    assert set(vals["account"]) == {"LogicalName", "EntitySetName", "PrimaryIdAttribute",
                                    "ChangeTrackingEnabled", "TableType", "MetadataId"}
    r = get(emu, API + "/EntityDefinitions?$select=LogicalName&$filter=OwnershipType eq "
                       "Microsoft.Dynamics.CRM.OwnershipTypes'UserOwned' and not (LogicalName eq 'contact')"
                       " and IsCustomEntity eq false")
    assert [v["LogicalName"] for v in r.json()["value"]] == ["account"]
    one = get(emu, API + "/EntityDefinitions(LogicalName='account')").json()
    assert one["DisplayName"]["UserLocalizedLabel"]["Label"] == "Account"
    assert get(emu, API + f"/EntityDefinitions({one['MetadataId']})?$select=LogicalName").json()["LogicalName"] == "account"
    r = get(emu, API + "/EntityDefinitions(LogicalName='nope')")
    assert r.status_code == 404 and r.json()["error"]["message"]


def test_attributes_and_casts(emu):
    base = API + "/EntityDefinitions(LogicalName='account')/Attributes"
    r = get(emu, base + "?$select=LogicalName,AttributeType,AttributeTypeName,IsValidForRead,"
                        "IsValidODataAttribute,AttributeOf")
    attrs = r.json()["value"]
    readable = [a for a in attrs if a["IsValidForRead"] and a["IsValidODataAttribute"] and not a["AttributeOf"]
                and a["AttributeTypeName"]["Value"] not in ("ImageType", "FileType")]
    assert len(readable) == 35  # includes the standalone EntityName column new_sourcetable
    by = {a["LogicalName"]: a for a in attrs}
    assert by["new_regions"]["AttributeType"] == "Virtual"
    assert by["new_regions"]["AttributeTypeName"]["Value"] == "MultiSelectPicklistType"
    assert by["primarycontactidname"]["AttributeOf"] == "primarycontactid"
    assert by["entityimage"]["AttributeTypeName"]["Value"] == "ImageType"
    assert get(emu, base + "?$select=LogicalName,MaxLength").status_code == 400
    s = get(emu, base + "/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=LogicalName,MaxLength").json()
    assert all("MaxLength" in v for v in s["value"]) and any(v["LogicalName"] == "name" for v in s["value"])
    d = get(emu, base + "/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata?$select=LogicalName,DateTimeBehavior").json()
    beh = {v["LogicalName"]: v["DateTimeBehavior"]["Value"] for v in d["value"]}
    assert beh["new_foundedon"] == "DateOnly" and beh["new_localopening"] == "TimeZoneIndependent"
    lk = get(emu, base + "/Microsoft.Dynamics.CRM.LookupAttributeMetadata?$select=LogicalName,Targets").json()
    assert {v["LogicalName"]: v["Targets"] for v in lk["value"]}["primarycontactid"] == ["contact"]
    p = get(emu, base + "/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName"
                        "&$expand=OptionSet($select=Options),GlobalOptionSet($select=Options)").json()
    ind = next(v for v in p["value"] if v["LogicalName"] == "industrycode")
    labels = ind["OptionSet"]["Options"][0]["Label"]["LocalizedLabels"]
    assert {lab["LanguageCode"] for lab in labels} == {1033, 1031} and ind["GlobalOptionSet"] is None
    f = get(emu, base + "?$select=LogicalName&$filter=AttributeType eq Microsoft.Dynamics.CRM.AttributeTypeCode'Money'").json()
    assert {v["LogicalName"] for v in f["value"]} == {"revenue", "revenue_base", "creditlimit"}


# ---------------------------------------------------------------- data

def test_paging_12345_rows(emu):
    pages, rows, _ = read_all(emu, API + "/accounts")
    assert pages == 3 and len(rows) == 12345
    assert len({r["accountid"] for r in rows}) == 12345
    assert len(rows[0]) == 36  # 35 columns + @odata.etag


def test_cookie_shape_and_verbatim_rule(emu):
    r = get(emu, API + "/accounts?$select=name", prefer="odata.maxpagesize=10")
    assert r.headers["Preference-Applied"] == "odata.maxpagesize=10"
    link = r.json()["@odata.nextLink"]
    assert link.startswith(emu.org_url + API + "/accounts?$select=name&$skiptoken=")
    tok = urllib.parse.unquote(link.split("$skiptoken=")[1])
    assert tok.startswith('<cookie pagenumber="2" pagingcookie="%253ccookie%2520page%253d%25221%2522%253e%253caccountid%2520last%253d%2522%257b')
    assert tok.endswith('" istracking="False" />')
    inner = urllib.parse.unquote(urllib.parse.unquote(tok.split('pagingcookie="')[1].split('"')[0]))
    last = r.json()["value"][-1]["accountid"].upper()
    assert inner.startswith(f'<cookie page="1"><accountid last="{{{last}}}" first="{{')
    r2 = get(emu, link, prefer="odata.maxpagesize=10")
    assert r2.status_code == 200 and r2.json()["value"][0]["accountid"] > r.json()["value"][-1]["accountid"]
    reencoded = link.split("$skiptoken=")[0] + "$skiptoken=" + urllib.parse.quote(link.split("$skiptoken=")[1], safe="")
    assert get(emu, reencoded, prefer="odata.maxpagesize=10").status_code == 400


def test_rejected_options_and_errors(emu):
    r = get(emu, API + "/accounts?$skip=10")
    assert r.status_code == 400 and r.json() == {"error": {"code": "0x80060888", "message": "Skip Clause is not supported in CRM"}}
    assert get(emu, API + "/accounts?$search=x").status_code == 400
    assert get(emu, API + "/accounts?$format=json").status_code == 400
    r = get(emu, API + "/accounts?$select=nme")
    assert r.status_code == 400 and r.json()["error"]["message"] == \
        "Could not find a property named 'nme' on type 'Microsoft.Dynamics.CRM.account'."
    r = get(emu, API + "/acounts")
    assert r.status_code == 404 and r.json()["error"]["message"] == "Resource not found for the segment 'acounts'."
    r = get(emu, API + "/accounts(00000000-0000-0000-0000-000000000001)")
    assert r.status_code == 404 and r.json()["error"]["code"] == "0x80040217"


def test_top_count_single_and_select(emu):
    r = get(emu, API + "/accounts?$top=7&$select=name,revenue", prefer="odata.maxpagesize=3")
    body = r.json()
    assert len(body["value"]) == 7 and "@odata.nextLink" not in body
    assert set(body["value"][0]) == {"@odata.etag", "accountid", "name", "revenue", "_transactioncurrencyid_value"}
    r = get(emu, API + "/accounts?$count=true&$select=name", prefer='odata.maxpagesize=1,odata.include-annotations='
            '"Microsoft.Dynamics.CRM.totalrecordcount,Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"')
    b = r.json()
    assert b["@odata.count"] == 5000 and b["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] is True
    row = emu.rows("account")[0]
    one = get(emu, API + f"/accounts({row['accountid']})?$select=name").json()
    assert one["name"] == row["name"] and one["@odata.context"].endswith("$metadata#accounts(name)/$entity")


def test_values_and_annotations(emu):
    truth = emu.rows("account")
    assert any(isinstance(r["revenue"], Decimal) and r["revenue"] > Decimal(2**53) / 10**4 for r in truth)
    assert any(r["exchangerate"] == Decimal("0.1") for r in truth)
    raw = get(emu, API + "/accounts?$top=5000").content
    assert b'"exchangerate":0.1000000000' in raw and b'"revenue":922337203' in raw
    r = get(emu, API + "/accounts?$top=50", prefer='odata.include-annotations="*"').json()["value"]
    row = next(x for x in r if x["industrycode"] is not None and x["_ownerid_value"])
    assert row["statecode@OData.Community.Display.V1.FormattedValue"] in ("Active", "Inactive")
    assert row["industrycode@OData.Community.Display.V1.FormattedValue"]
    assert row["_ownerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "systemuser"
    assert row["_ownerid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"] == "ownerid"
    plain = get(emu, API + "/accounts?$top=5").json()["value"][0]
    assert not any("@OData" in k for k in plain)


def test_filters(emu):
    truth = emu.rows("account")
    boundary = sorted(r["modifiedon"] for r in truth)[6000]
    _, rows, _ = read_all(emu, API + f"/accounts?$select=modifiedon&$filter=modifiedon ge {boundary}")
    expected = [r for r in truth if r["modifiedon"] >= boundary]
    assert len(rows) == len(expected) and sum(r["modifiedon"] == boundary for r in rows) >= 2
    off = boundary.replace("Z", "%2B02:00")  # same wall time at +02:00 = two hours earlier
    _, rows2, _ = read_all(emu, API + f"/accounts?$select=modifiedon&$filter=modifiedon ge {off}")
    assert len(rows2) > len(rows)
    name = truth[0]["name"]
    q = urllib.parse.quote(name.upper().replace("'", "''"))
    _, rows, _ = read_all(emu, API + f"/accounts?$select=name&$filter=name eq '{q}'")
    assert rows and all(r["name"].casefold() == name.casefold() for r in rows)
    pk = truth[5]["accountid"]
    _, rows, _ = read_all(emu, API + f"/accounts?$filter=accountid eq {pk}")
    assert [r["accountid"] for r in rows] == [pk]
    _, rows, _ = read_all(emu, API + "/accounts?$select=name&$filter=(startswith(name,'contoso') or "
                                     "contains(name,'zürich')) and not (statecode eq 1) and accountnumber ne null")
    exp = [r for r in truth if (r["name"].lower().startswith("contoso") or "zürich" in r["name"].lower())
           and r["statecode"] != 1 and r["accountnumber"] is not None]
    assert len(rows) == len(exp) > 0
    _, rows, _ = read_all(emu, API + "/accounts?$select=name&$filter=numberofemployees gt 200000 and donotemail eq true")
    assert len(rows) == sum(1 for r in truth if (r["numberofemployees"] or 0) > 200000 and r["donotemail"])


def test_orderby_modifiedon_pk_paging(emu):
    pages, rows, _ = read_all(emu, API + "/accounts?$select=modifiedon&$orderby=modifiedon asc,accountid asc",
                              prefer="odata.maxpagesize=1000")
    assert pages == 13 and len(rows) == 12345
    keys = [(r["modifiedon"], r["accountid"]) for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == 12345
    _, rows, _ = read_all(emu, API + "/accounts?$select=name&$orderby=name desc", prefer="odata.maxpagesize=700")
    assert len({r["accountid"] for r in rows}) == 12345
    names = [r["name"].casefold() for r in rows]
    assert names == sorted(names, reverse=True)


# ---------------------------------------------------------------- mutations + change tracking

def test_mutations_and_clock(make_emulator):
    emu = make_emulator(rows={"account": 50, "contact": 20, "systemuser": 3})
    before = emu.rows("account")
    emu.advance_clock(3600)
    new = emu.insert("account", {"name": "Brand New Ltd", "revenue": "12.5"})
    assert new["name"] == "Brand New Ltd" and new["revenue"] == Decimal("12.5000")
    assert new["modifiedon"] > max(r["modifiedon"] for r in before)
    up = emu.update("account", before[0]["accountid"], {"telephone1": "+1-555"})
    assert up["versionnumber"] > new["versionnumber"] and up["telephone1"] == "+1-555"
    emu.delete("account", before[1]["accountid"])
    after = {r["accountid"]: r for r in emu.rows("account")}
    assert len(after) == 50 and before[1]["accountid"] not in after
    r = get(emu, API + f"/accounts({before[0]['accountid']})?$select=telephone1").json()
    assert r["telephone1"] == "+1-555" and r["@odata.etag"] == f'W/"{up["versionnumber"]}"'
    _, rows, _ = read_all(emu, API + "/accounts")
    assert {r["accountid"] for r in rows} == set(after)
    # control API
    c = requests.post(emu.org_url + "/_emulator/tables/account/rows", json={"name": "Via HTTP"},
                      verify=emu.ca_path, timeout=10)
    assert c.status_code == 201 and c.json()["name"] == "Via HTTP"
    assert requests.get(emu.org_url + "/_emulator/stats", verify=emu.ca_path, timeout=10).json()["data_pages"] >= 1


def test_change_tracking(make_emulator):
    emu = make_emulator(rows={"account": 120, "contact": 10, "systemuser": 2})
    pages, rows, last = read_all(emu, API + "/accounts?$select=name,telephone1",
                                 prefer="odata.track-changes,odata.maxpagesize=50")
    assert pages == 3 and len(rows) == 120
    delta = last["@odata.deltaLink"]
    assert "$deltatoken=" in delta and "%21" in delta
    r = get(emu, delta)
    assert r.json()["value"] == [] and r.json()["@odata.context"].endswith("/$delta")
    emu.advance_clock(10)
    ids = [x["accountid"] for x in rows]
    emu.update("account", ids[0], {"telephone1": "999"})
    new = emu.insert("account", {"name": "Delta Inc."})
    emu.delete("account", ids[1])
    body = get(emu, delta).json()
    vals = body["value"]
    assert [v.get("accountid") for v in vals[:2]] == [ids[0], new["accountid"]]
    assert vals[2] == {"@odata.context": f"{emu.org_url}{API}/$metadata#accounts/$deletedEntity",
                       "id": ids[1], "reason": "deleted"}
    assert get(emu, body["@odata.deltaLink"]).json()["value"] == []
    # paging of changes
    for i in range(7):
        emu.update("account", ids[10 + i], {"telephone1": str(i)})
    pages, changes, last2 = read_all(emu, body["@odata.deltaLink"], prefer="odata.maxpagesize=3")
    assert pages == 3 and len(changes) == 7 and "@odata.deltaLink" in last2
    # rejections and expiry
    r = get(emu, API + "/accounts?$filter=name eq 'x'", prefer="odata.track-changes")
    assert r.status_code == 400 and "isn't supported when Change Tracking is enabled" in r.json()["error"]["message"]
    assert get(emu, API + "/systemusers", prefer="odata.track-changes").status_code == 400
    emu.set(change_tracking_expiry_seconds=60)
    emu.advance_clock(120)
    r = get(emu, last2["@odata.deltaLink"])
    assert r.status_code == 400 and r.json()["error"]["message"] == \
        "Version stamp associated with the client has expired. Please perform a full sync."


def test_same_seed_same_data(make_emulator):
    a = make_emulator(rows={"account": 30, "contact": 5, "systemuser": 2}, seed=3)
    b = make_emulator(rows={"account": 30, "contact": 5, "systemuser": 2}, seed=3)
    assert a.rows("account") == b.rows("account")


def test_stats_integrate_requests_in_flight_over_time(make_emulator):
    """``in_flight_seconds`` is what the benchmark divides by ``data_seconds`` (concurrency)."""
    from concurrent.futures import ThreadPoolExecutor

    e = make_emulator(rows={"account": 40, "contact": 1, "systemuser": 1}, latency_ms=200, latency_scope="pages")
    tok = token(e).json()["access_token"]
    e.reset_stats()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: get(e, f"{API}/accounts?$top=5", tok), range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    stats = e.stats()
    # Four requests each served for at least 200 ms: at least 0.8 request-seconds in flight.
    assert stats["in_flight_seconds"] >= 0.8
    assert stats["in_flight"] == 0


# ---------------------------------------------------------------- the host: services, audiences, faults

def test_each_service_accepts_only_tokens_for_its_own_audience(make_emulator):
    """Entra ID issues tokens for any registered resource; Dataverse takes only its own."""
    emu = make_emulator(rows={"account": 3, "contact": 1, "systemuser": 1})
    graph = emu.entra.register_resource("https://graph.microsoft.com/")
    r = token(emu, scope=f"{graph}/.default")
    assert r.status_code == 200, r.text
    other = r.json()["access_token"]
    payload = other.split(".")[1]
    import base64
    assert orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["aud"] == graph
    denied = get(emu, API + "/WhoAmI", tok=other)
    assert denied.status_code == 401 and "Bearer authorization_uri=" in denied.headers["WWW-Authenticate"]
    own = token(emu).json()["access_token"]
    assert get(emu, API + "/WhoAmI", tok=own).status_code == 200
    # An unregistered resource is refused by Entra ID itself.
    r = token(emu, scope="https://contoso.operations.dynamics.com/.default")
    assert r.status_code == 400 and r.json()["error_codes"] == [500011]


def test_rate_faults_hit_the_data_service_by_default_and_the_token_endpoint_when_targeted(make_emulator):
    emu = make_emulator(rows={"account": 3, "contact": 1, "systemuser": 1}, throttle_rate=1.0,
                        retry_after=2, error_5xx_retry_after=2, fault_max_per_request=100)
    assert token(emu).status_code == 200  # identity is not a target by default
    r = get(emu, API + "/accounts")
    assert r.status_code == 429 and r.json()["error"]["code"].startswith("0x8007232")
    emu.set(fault_targets=["entra"])
    assert get(emu, API + "/accounts").status_code == 200
    r = token(emu)
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    body = r.json()
    assert body["error_codes"] == [90055] and body["error_description"].startswith("AADSTS90055: ")
    assert emu.faults.counts()["throttle"] == 2
    assert emu.stats()["token_requests"] == 2  # a throttled token request still counts as one
    emu.set(throttle_rate=0.0, error_5xx_rate=1.0)
    answers = [token(emu) for _ in range(12)]  # seeded: the same statuses on every run
    assert {r.status_code for r in answers} == {502, 503, 504}
    for r in answers:  # a 503 is Entra ID's own transient error; 502/504 a gateway's page
        if r.status_code == 503:
            assert r.json()["error_codes"] == [90033] and r.headers["Retry-After"] == "2"
        else:
            assert r.headers["Content-Type"].startswith("text/html")


def test_scripted_token_faults_and_revocation_by_use(make_emulator):
    emu = make_emulator(rows={"account": 3, "contact": 1, "systemuser": 1})
    emu.entra.fail_token_requests("503", count=1, after=1, retry_after=3)
    assert token(emu).status_code == 200  # "after": the first one is answered
    r = token(emu)
    assert r.status_code == 503 and r.headers["Retry-After"] == "3"
    assert r.json()["error_codes"] == [90033]
    assert token(emu).status_code == 200 and emu.entra.token_fault_log == ["503"]
    assert not emu.entra.token_faults
    emu.entra.fail_token_requests("drop")
    with pytest.raises(requests.exceptions.RequestException):
        token(emu)
    emu.entra.revoke_after_uses = 2
    tok = token(emu).json()["access_token"]
    assert [get(emu, API + "/WhoAmI", tok=tok).status_code for _ in range(3)] == [200, 200, 401]
    assert emu.entra.revoked_uses == 1


def test_scripted_token_faults_reach_ad_fs_on_premises(make_emulator):
    from emulator import OnPremEmulator

    emu = make_emulator(rows={"account": 3, "contact": 1, "systemuser": 1}, kind=OnPremEmulator, auth="adfs")
    cfg = emu.tap_config()
    form = {"grant_type": "client_credentials", "client_id": cfg["client_id"],
            "client_secret": cfg["client_secret"], "resource": emu.server_url}
    url = f"{emu.authority_host}/adfs/oauth2/token/"
    emu.entra.fail_token_requests("429", retry_after=5)
    r = requests.post(url, data=form, verify=emu.ca_path, timeout=10)
    assert r.status_code == 429 and r.headers["Retry-After"] == "5"
    r = requests.post(url, data=form, verify=emu.ca_path, timeout=10)
    assert r.status_code == 200 and emu.adfs_token_requests == 2
    # AD FS tokens are for the server (the relying party), and only there.
    tok = r.json()["access_token"]
    ok = requests.get(f"{emu.org_url}/api/data/v9.1/WhoAmI", headers={"Authorization": f"Bearer {tok}"},
                      verify=emu.ca_path, timeout=10)
    assert ok.status_code == 200
    r = requests.post(url, data={**form, "resource": "https://elsewhere.contoso.com"}, verify=emu.ca_path,
                      timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_resource"
