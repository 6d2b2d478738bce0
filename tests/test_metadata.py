"""Dataverse attribute metadata -> JSON Schema, type by type, and table selection."""

from __future__ import annotations

import pytest

from tap_dynamics.dataverse.metadata import (
    INT32,
    INT64,
    EntityInfo,
    build_schema,
    column_from_attribute,
    select_entities,
)
from tap_dynamics.errors import ConfigError


def attr(name: str, kind: str, **extra: object) -> dict:
    return {"LogicalName": name, "AttributeType": kind, "IsValidForRead": True,
            "IsValidODataAttribute": True, "AttributeOf": None, **extra}


@pytest.mark.parametrize(
    ("attribute", "name", "schema"),
    [
        (attr("name", "String"), "name", {"type": "string"}),
        (attr("description", "Memo"), "description", {"type": "string"}),
        (attr("returnedtypecode", "EntityName"), "returnedtypecode", {"type": "string"}),
        (attr("accountid", "Uniqueidentifier"), "accountid", {"type": "string", "format": "uuid"}),
        (attr("numberofemployees", "Integer"), "numberofemployees", {"type": "integer", **INT32}),
        (attr("versionnumber", "BigInt"), "versionnumber", {"type": "integer", **INT64}),
        (attr("exchangerate", "Decimal"), "exchangerate", {"type": "number"}),
        (attr("revenue", "Money"), "revenue", {"type": "number"}),
        (attr("latitude", "Double"), "latitude", {"type": "number"}),
        (attr("donotemail", "Boolean"), "donotemail", {"type": "boolean"}),
        (attr("modifiedon", "DateTime"), "modifiedon", {"type": "string", "format": "date-time"}),
        (attr("birthdate", "DateTime"), "birthdate", {"type": "string", "format": "date"}),
        (attr("industrycode", "Picklist"), "industrycode", {"type": "integer", **INT32}),
        (attr("statecode", "State"), "statecode", {"type": "integer", **INT32}),
        (attr("statuscode", "Status"), "statuscode", {"type": "integer", **INT32}),
        (attr("primarycontactid", "Lookup"), "_primarycontactid_value", {"type": "string", "format": "uuid"}),
        (attr("customerid", "Customer"), "_customerid_value", {"type": "string", "format": "uuid"}),
        (attr("ownerid", "Owner"), "_ownerid_value", {"type": "string", "format": "uuid"}),
        (
            attr("new_regions", "Virtual", AttributeTypeName={"Value": "MultiSelectPicklistType"}),
            "new_regions",
            {"type": "array", "items": {"type": "integer", **INT32}},
        ),
    ],
)
def test_type_mapping(attribute: dict, name: str, schema: dict) -> None:
    column = column_from_attribute(attribute, {"birthdate": "DateOnly", "modifiedon": "UserLocal"})
    assert column is not None
    assert column.name == name
    assert column.schema == schema


@pytest.mark.parametrize(
    "attribute",
    [
        attr("primarycontactidname", "String", AttributeOf="primarycontactid"),
        attr("owneridtype", "EntityName", AttributeOf="ownerid"),
        attr("entityimage", "Virtual", AttributeTypeName={"Value": "ImageType"}),
        attr("new_contract", "Virtual", AttributeTypeName={"Value": "FileType"}),
        attr("requiredattendees", "PartyList"),
        attr("calendarrules", "CalendarRules"),
        attr("iscustomizable", "ManagedProperty"),
        attr("secret", "String", IsValidForRead=False),
        attr("logical", "String", IsValidODataAttribute=False),
    ],
)
def test_columns_the_web_api_does_not_return_are_left_out(attribute: dict) -> None:
    assert column_from_attribute(attribute, {}) is None


def test_description_label_goes_into_schema() -> None:
    label = {"UserLocalizedLabel": {"Label": "Type the company name.", "LanguageCode": 1033},
             "LocalizedLabels": []}
    column = column_from_attribute(attr("name", "String", Description=label), {})
    assert column is not None
    assert column.schema["description"] == "Type the company name."


def test_schema_primary_key_not_nullable_and_inherited_key_present() -> None:
    entity = EntityInfo("systemuser", "systemusers", "systemuserid")
    columns = [column_from_attribute(attr("fullname", "String"), {})]
    schema = build_schema(entity, [c for c in columns if c])
    assert schema["properties"]["fullname"]["type"] == ["string", "null"]
    assert schema["properties"]["systemuserid"] == {"type": "string", "format": "uuid"}


def _entities() -> list[EntityInfo]:
    return [
        EntityInfo("account", "accounts", "accountid"),
        EntityInfo("contact", "contacts", "contactid"),
        EntityInfo("new_project", "new_projects", "new_projectid"),
        EntityInfo("new_secret", "new_secrets", "new_secretid", is_private=True),
        EntityInfo("new_virtual", "new_virtuals", "new_virtualid", table_type="Virtual"),
        EntityInfo("teammembership", "teammemberships", "teammembershipid", is_intersect=True),
    ]


def test_select_entities_defaults_skip_special_tables() -> None:
    names = [e.logical_name for e in select_entities(_entities(), None)]
    assert names == ["account", "contact", "new_project"]


def test_select_entities_globs_and_exact_names() -> None:
    names = [e.logical_name for e in select_entities(_entities(), ["new_*", "teammembership"])]
    assert names == ["new_project", "teammembership"]


def test_select_entities_unknown_name_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'acount'.*similar"):
        select_entities(_entities(), ["acount"])
