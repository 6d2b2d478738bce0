"""Stream schemas from Microsoft Graph v1.0's own metadata (CSDL of the v1.0 endpoint, 2026-11).

Each entity type is written down as Graph's ``$metadata`` declares it — property names, Edm types,
complex types as objects, collections as arrays — in a compact notation: ``name`` is
``Edm.String``, ``name:Type`` names an Edm type (``Boolean``, ``DateTimeOffset``, ``Int32`` …) or
a complex type of the ``microsoft.graph`` namespace (``assignedLicense``), and a leading ``*``
makes it a collection. Navigation properties (``members``, ``manager`` …) are not columns;
``group_members`` is their stream. Properties Graph only returns for a single object
(``aboutMe``, ``skills`` …) or only with extra licences (``signInActivity``: opt-in, see
:mod:`tap_dynamics.config.graph`) are left out of the defaults.

Why written down rather than read from ``$metadata`` at discovery: Graph's v1.0 CSDL is one
document of several megabytes for hundreds of types, the same for every tenant; the few types
a sync reads do not change per tenant, and a catalog must not depend on a 5 MB download.
"""

from __future__ import annotations

import typing as t

# Edm primitive types -> JSON Schema (every value may be null except a key).
EDM: dict[str, dict[str, t.Any]] = {
    "String": {"type": ["string", "null"]},
    "Guid": {"type": ["string", "null"]},
    "Binary": {"type": ["string", "null"], "contentEncoding": "base64"},
    "Boolean": {"type": ["boolean", "null"]},
    "Int32": {"type": ["integer", "null"]},
    "Int64": {"type": ["integer", "null"]},
    "Double": {"type": ["number", "null"]},
    "DateTimeOffset": {"type": ["string", "null"], "format": "date-time"},
    "Date": {"type": ["string", "null"], "format": "date"},
    "Duration": {"type": ["string", "null"]},
}

# Complex types of the microsoft.graph namespace (enum types are strings).
COMPLEX: dict[str, str] = {
    "assignedLicense": "disabledPlans:*Guid skuId:Guid",
    "assignedPlan": "assignedDateTime:DateTimeOffset capabilityStatus service servicePlanId:Guid",
    "provisionedPlan": "capabilityStatus provisioningStatus service",
    "objectIdentity": "issuer issuerAssignedId signInType",
    "licenseAssignmentState": (
        "assignedByGroup disabledPlans:*Guid error lastUpdatedDateTime:DateTimeOffset skuId:Guid state"
    ),
    "onPremisesExtensionAttributes": " ".join(f"extensionAttribute{i}" for i in range(1, 16)),
    "onPremisesProvisioningError": "category occurredDateTime:DateTimeOffset propertyCausingError value",
    "employeeOrgData": "costCenter division",
    "signInActivity": (
        "lastNonInteractiveSignInDateTime:DateTimeOffset lastNonInteractiveSignInRequestId "
        "lastSignInDateTime:DateTimeOffset lastSignInRequestId "
        "lastSuccessfulSignInDateTime:DateTimeOffset lastSuccessfulSignInRequestId"
    ),
    "licenseProcessingState": "state",
    "alternativeSecurityId": "identityProvider key:Binary type:Int32",
    "informationalUrl": "logoUrl marketingUrl privacyStatementUrl supportUrl termsOfServiceUrl",
    "keyCredential": (
        "customKeyIdentifier:Binary displayName endDateTime:DateTimeOffset key:Binary keyId:Guid "
        "startDateTime:DateTimeOffset type usage"
    ),
    "passwordCredential": (
        "customKeyIdentifier:Binary displayName endDateTime:DateTimeOffset hint keyId:Guid secretText "
        "startDateTime:DateTimeOffset"
    ),
    "resourceAccess": "id:Guid type",
    "requiredResourceAccess": "resourceAccess:*resourceAccess resourceAppId",
    "implicitGrantSettings": "enableAccessTokenIssuance:Boolean enableIdTokenIssuance:Boolean",
    "webApplication": "homePageUrl implicitGrantSettings:implicitGrantSettings logoutUrl redirectUris:*String",
    "spaApplication": "redirectUris:*String",
    "publicClientApplication": "redirectUris:*String",
    "appRole": "allowedMemberTypes:*String description displayName id:Guid isEnabled:Boolean origin value",
    "permissionScope": (
        "adminConsentDescription adminConsentDisplayName id:Guid isEnabled:Boolean origin type "
        "userConsentDescription userConsentDisplayName value"
    ),
    "domainState": "lastActionDateTime:DateTimeOffset operation status",
    "privacyProfile": "contactEmail statementUrl",
    "verifiedDomain": "capabilities isDefault:Boolean isInitial:Boolean name type",
    "licenseUnitsDetail": "enabled:Int32 lockedOut:Int32 suspended:Int32 warning:Int32",
    "servicePlanInfo": "appliesTo provisioningStatus servicePlanId:Guid servicePlanName",
    "emailAddress": "address name",
    "recipient": "emailAddress:emailAddress",
    "dateTimeTimeZone": "dateTime timeZone",
    "timeSlot": "end:dateTimeTimeZone start:dateTimeTimeZone",
    "responseStatus": "response time:DateTimeOffset",
    "attendee": "emailAddress:emailAddress proposedNewTime:timeSlot status:responseStatus type",
    "itemBody": "content contentType",
    "physicalAddress": "city countryOrRegion postalCode state street",
    "outlookGeoCoordinates": "accuracy:Double altitude:Double altitudeAccuracy:Double latitude:Double longitude:Double",
    "location": (
        "address:physicalAddress coordinates:outlookGeoCoordinates displayName locationEmailAddress "
        "locationType locationUri uniqueId uniqueIdType"
    ),
    "phone": "number type",
    "onlineMeetingInfo": "conferenceId joinUrl phones:*phone quickDial tollFreeNumbers:*String tollNumber",
    "recurrencePattern": (
        "dayOfMonth:Int32 daysOfWeek:*String firstDayOfWeek index interval:Int32 month:Int32 type"
    ),
    "recurrenceRange": "endDate:Date numberOfOccurrences:Int32 recurrenceTimeZone startDate:Date type",
    "patternedRecurrence": "pattern:recurrencePattern range:recurrenceRange",
}

# Entity types: the properties a list or delta query returns (key first).
ENTITIES: dict[str, str] = {
    "user": (
        "id accountEnabled:Boolean ageGroup assignedLicenses:*assignedLicense assignedPlans:*assignedPlan "
        "businessPhones:*String city companyName consentProvidedForMinor country "
        "createdDateTime:DateTimeOffset creationType deletedDateTime:DateTimeOffset department displayName "
        "employeeHireDate:DateTimeOffset employeeId employeeOrgData:employeeOrgData employeeType "
        "externalUserState externalUserStateChangeDateTime:DateTimeOffset faxNumber givenName "
        "identities:*objectIdentity imAddresses:*String jobTitle lastPasswordChangeDateTime:DateTimeOffset "
        "legalAgeGroupClassification licenseAssignmentStates:*licenseAssignmentState mail mailNickname "
        "mobilePhone officeLocation onPremisesDistinguishedName onPremisesDomainName "
        "onPremisesExtensionAttributes:onPremisesExtensionAttributes onPremisesImmutableId "
        "onPremisesLastSyncDateTime:DateTimeOffset onPremisesProvisioningErrors:*onPremisesProvisioningError "
        "onPremisesSamAccountName onPremisesSecurityIdentifier onPremisesSyncEnabled:Boolean "
        "onPremisesUserPrincipalName otherMails:*String passwordPolicies postalCode preferredDataLocation "
        "preferredLanguage provisionedPlans:*provisionedPlan proxyAddresses:*String securityIdentifier "
        "showInAddressList:Boolean signInSessionsValidFromDateTime:DateTimeOffset state streetAddress "
        "surname usageLocation userPrincipalName userType"
    ),
    "group": (
        "id assignedLicenses:*assignedLicense classification createdDateTime:DateTimeOffset "
        "deletedDateTime:DateTimeOffset description displayName expirationDateTime:DateTimeOffset "
        "groupTypes:*String isAssignableToRole:Boolean licenseProcessingState:licenseProcessingState mail "
        "mailEnabled:Boolean mailNickname membershipRule membershipRuleProcessingState onPremisesDomainName "
        "onPremisesLastSyncDateTime:DateTimeOffset onPremisesNetBiosName "
        "onPremisesProvisioningErrors:*onPremisesProvisioningError onPremisesSamAccountName "
        "onPremisesSecurityIdentifier onPremisesSyncEnabled:Boolean preferredDataLocation preferredLanguage "
        "proxyAddresses:*String renewedDateTime:DateTimeOffset securityEnabled:Boolean securityIdentifier "
        "theme visibility"
    ),
    "device": (
        "id accountEnabled:Boolean alternativeSecurityIds:*alternativeSecurityId "
        "approximateLastSignInDateTime:DateTimeOffset complianceExpirationDateTime:DateTimeOffset "
        "deletedDateTime:DateTimeOffset deviceCategory deviceId deviceMetadata deviceOwnership "
        "deviceVersion:Int32 displayName enrollmentProfileName enrollmentType isCompliant:Boolean "
        "isManaged:Boolean isRooted:Boolean managementType manufacturer mdmAppId model "
        "onPremisesLastSyncDateTime:DateTimeOffset onPremisesSecurityIdentifier onPremisesSyncEnabled:Boolean "
        "operatingSystem operatingSystemVersion physicalIds:*String profileType "
        "registrationDateTime:DateTimeOffset systemLabels:*String trustType"
    ),
    "application": (
        "id appId appRoles:*appRole applicationTemplateId createdDateTime:DateTimeOffset "
        "deletedDateTime:DateTimeOffset description disabledByMicrosoftStatus displayName "
        "groupMembershipClaims identifierUris:*String info:informationalUrl isDeviceOnlyAuthSupported:Boolean "
        "isFallbackPublicClient:Boolean keyCredentials:*keyCredential notes "
        "passwordCredentials:*passwordCredential publicClient:publicClientApplication publisherDomain "
        "requiredResourceAccess:*requiredResourceAccess serviceManagementReference signInAudience "
        "spa:spaApplication tags:*String tokenEncryptionKeyId:Guid web:webApplication"
    ),
    "servicePrincipal": (
        "id accountEnabled:Boolean alternativeNames:*String appDescription appDisplayName appId "
        "appOwnerOrganizationId:Guid appRoleAssignmentRequired:Boolean appRoles:*appRole "
        "applicationTemplateId deletedDateTime:DateTimeOffset description disabledByMicrosoftStatus "
        "displayName homepage info:informationalUrl keyCredentials:*keyCredential loginUrl logoutUrl notes "
        "notificationEmailAddresses:*String oauth2PermissionScopes:*permissionScope "
        "passwordCredentials:*passwordCredential preferredSingleSignOnMode preferredTokenSigningKeyThumbprint "
        "replyUrls:*String servicePrincipalNames:*String servicePrincipalType signInAudience tags:*String "
        "tokenEncryptionKeyId:Guid"
    ),
    "directoryRole": "id deletedDateTime:DateTimeOffset description displayName roleTemplateId",
    "domain": (
        "id authenticationType availabilityStatus isAdminManaged:Boolean isDefault:Boolean isInitial:Boolean "
        "isRoot:Boolean isVerified:Boolean passwordNotificationWindowInDays:Int32 "
        "passwordValidityPeriodInDays:Int32 state:domainState supportedServices:*String"
    ),
    "organization": (
        "id assignedPlans:*assignedPlan businessPhones:*String city country countryLetterCode "
        "createdDateTime:DateTimeOffset deletedDateTime:DateTimeOffset displayName "
        "marketingNotificationEmails:*String onPremisesLastSyncDateTime:DateTimeOffset "
        "onPremisesSyncEnabled:Boolean postalCode preferredLanguage privacyProfile:privacyProfile "
        "provisionedPlans:*provisionedPlan securityComplianceNotificationMails:*String "
        "securityComplianceNotificationPhones:*String state street technicalNotificationMails:*String "
        "tenantType verifiedDomains:*verifiedDomain"
    ),
    "subscribedSku": (
        "id accountId accountName appliesTo capabilityStatus consumedUnits:Int32 "
        "prepaidUnits:licenseUnitsDetail servicePlans:*servicePlanInfo skuId:Guid skuPartNumber "
        "subscriptionIds:*String"
    ),
    "event": (
        "id allowNewTimeProposals:Boolean attendees:*attendee body:itemBody bodyPreview categories:*String "
        "changeKey createdDateTime:DateTimeOffset end:dateTimeTimeZone hasAttachments:Boolean "
        "hideAttendees:Boolean iCalUId importance isAllDay:Boolean isCancelled:Boolean isDraft:Boolean "
        "isOnlineMeeting:Boolean isOrganizer:Boolean isReminderOn:Boolean lastModifiedDateTime:DateTimeOffset "
        "location:location locations:*location onlineMeeting:onlineMeetingInfo onlineMeetingProvider "
        "onlineMeetingUrl organizer:recipient originalEndTimeZone originalStart:DateTimeOffset "
        "originalStartTimeZone recurrence:patternedRecurrence reminderMinutesBeforeStart:Int32 "
        "responseRequested:Boolean responseStatus:responseStatus sensitivity seriesMasterId showAs "
        "start:dateTimeTimeZone subject transactionId type webLink"
    ),
}
# Opt-in properties per entity type (see tap_dynamics.config.graph.OPT_IN_PROPERTIES).
OPT_IN: dict[str, str] = {"user": "signInActivity:signInActivity"}


def parse(declaration: str) -> list[tuple[str, str, bool]]:
    """``"id city:String tags:*String"`` -> ``[(name, type, is_collection), …]``."""
    out = []
    for item in declaration.split():
        name, _, kind = item.partition(":")
        many = kind.startswith("*")
        out.append((name, kind.lstrip("*") or "String", many))
    return out


def type_schema(kind: str, many: bool = False) -> dict[str, t.Any]:
    """The JSON Schema of an Edm or complex type (a collection: an array of it)."""
    if kind in EDM:
        one = dict(EDM[kind])
    elif kind in COMPLEX:
        one = {"type": ["object", "null"], "properties": properties(COMPLEX[kind])}
    else:
        msg = f"unknown Graph type {kind!r}"
        raise KeyError(msg)
    if not many:
        return one
    item = dict(one)
    item["type"] = [x for x in one["type"] if x != "null"]
    return {"type": ["array", "null"], "items": item}


def properties(declaration: str) -> dict[str, dict[str, t.Any]]:
    """The JSON Schema properties of a declaration (see :func:`parse`)."""
    return {name: type_schema(kind, many) for name, kind, many in parse(declaration)}


def entity_schema(entity: str, opt_in: t.Iterable[str] = ()) -> dict[str, t.Any]:
    """The schema of an entity type, with the opt-in properties asked for; ``id`` is the key."""
    declared = ENTITIES[entity]
    extra = [item for item in OPT_IN.get(entity, "").split() if item.partition(":")[0] in set(opt_in)]
    props = properties(" ".join([declared, *extra]))
    props["id"] = {"type": "string"}
    return {"type": "object", "properties": props}


__all__ = ["COMPLEX", "EDM", "ENTITIES", "OPT_IN", "entity_schema", "parse", "properties", "type_schema"]
