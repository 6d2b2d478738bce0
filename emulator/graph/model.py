"""The Graph v1.0 entity types the emulator serves: their property names (for ``$select``
validation, as Graph's ``$metadata`` declares them) and generated values for a tenant.

Rows are plain dicts of every property; a property without a value is absent (``$select`` of it
answers null on a list, nothing on a delta page — Graph omits properties never set there).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

# Property names per entity type (structural properties of Graph v1.0's CSDL that list and
# delta queries return; navigation properties such as members are handled by the service).
PROPERTIES: dict[str, frozenset[str]] = {
    name: frozenset(text.split())
    for name, text in {
        "user": (
            "id accountEnabled ageGroup assignedLicenses assignedPlans businessPhones city companyName "
            "consentProvidedForMinor country createdDateTime creationType deletedDateTime department "
            "displayName employeeHireDate employeeId employeeOrgData employeeType externalUserState "
            "externalUserStateChangeDateTime faxNumber givenName identities imAddresses jobTitle "
            "lastPasswordChangeDateTime legalAgeGroupClassification licenseAssignmentStates mail "
            "mailNickname mobilePhone officeLocation onPremisesDistinguishedName onPremisesDomainName "
            "onPremisesExtensionAttributes onPremisesImmutableId onPremisesLastSyncDateTime "
            "onPremisesProvisioningErrors onPremisesSamAccountName onPremisesSecurityIdentifier "
            "onPremisesSyncEnabled onPremisesUserPrincipalName otherMails passwordPolicies postalCode "
            "preferredDataLocation preferredLanguage provisionedPlans proxyAddresses securityIdentifier "
            "showInAddressList signInSessionsValidFromDateTime state streetAddress surname usageLocation "
            "userPrincipalName userType signInActivity"
        ),
        "group": (
            "id assignedLicenses classification createdDateTime deletedDateTime description displayName "
            "expirationDateTime groupTypes isAssignableToRole licenseProcessingState mail mailEnabled "
            "mailNickname membershipRule membershipRuleProcessingState onPremisesDomainName "
            "onPremisesLastSyncDateTime onPremisesNetBiosName onPremisesProvisioningErrors "
            "onPremisesSamAccountName onPremisesSecurityIdentifier onPremisesSyncEnabled "
            "preferredDataLocation preferredLanguage proxyAddresses renewedDateTime securityEnabled "
            "securityIdentifier theme visibility"
        ),
        "device": (
            "id accountEnabled alternativeSecurityIds approximateLastSignInDateTime "
            "complianceExpirationDateTime deletedDateTime deviceCategory deviceId deviceMetadata "
            "deviceOwnership deviceVersion displayName enrollmentProfileName enrollmentType isCompliant "
            "isManaged isRooted managementType manufacturer mdmAppId model onPremisesLastSyncDateTime "
            "onPremisesSecurityIdentifier onPremisesSyncEnabled operatingSystem operatingSystemVersion "
            "physicalIds profileType registrationDateTime systemLabels trustType"
        ),
        "application": (
            "id appId appRoles applicationTemplateId createdDateTime deletedDateTime description "
            "disabledByMicrosoftStatus displayName groupMembershipClaims identifierUris info "
            "isDeviceOnlyAuthSupported isFallbackPublicClient keyCredentials notes passwordCredentials "
            "publicClient publisherDomain requiredResourceAccess serviceManagementReference "
            "signInAudience spa tags tokenEncryptionKeyId web"
        ),
        "servicePrincipal": (
            "id accountEnabled alternativeNames appDescription appDisplayName appId appOwnerOrganizationId "
            "appRoleAssignmentRequired appRoles applicationTemplateId deletedDateTime description "
            "disabledByMicrosoftStatus displayName homepage info keyCredentials loginUrl logoutUrl notes "
            "notificationEmailAddresses oauth2PermissionScopes passwordCredentials "
            "preferredSingleSignOnMode preferredTokenSigningKeyThumbprint replyUrls "
            "servicePrincipalNames servicePrincipalType signInAudience tags tokenEncryptionKeyId"
        ),
        "directoryRole": "id deletedDateTime description displayName roleTemplateId",
        "domain": (
            "id authenticationType availabilityStatus isAdminManaged isDefault isInitial isRoot isVerified "
            "passwordNotificationWindowInDays passwordValidityPeriodInDays state supportedServices"
        ),
        "organization": (
            "id assignedPlans businessPhones city country countryLetterCode createdDateTime deletedDateTime "
            "displayName marketingNotificationEmails onPremisesLastSyncDateTime onPremisesSyncEnabled "
            "postalCode preferredLanguage privacyProfile provisionedPlans "
            "securityComplianceNotificationMails securityComplianceNotificationPhones state street "
            "technicalNotificationMails tenantType verifiedDomains"
        ),
        "subscribedSku": (
            "id accountId accountName appliesTo capabilityStatus consumedUnits prepaidUnits servicePlans "
            "skuId skuPartNumber subscriptionIds"
        ),
    }.items()
}

# Collection -> (entity type, the set of a directory object's type for @odata.type)
COLLECTIONS = {
    "users": "user", "groups": "group", "devices": "device", "applications": "application",
    "servicePrincipals": "servicePrincipal", "directoryRoles": "directoryRole",
    "domains": "domain", "organization": "organization", "subscribedSkus": "subscribedSku",
}
DELTA_COLLECTIONS = ("users", "groups", "devices", "applications", "servicePrincipals", "directoryRoles")
E5_SKU = "06ebc4ee-1bb5-47dd-8120-11324bc54e06"
EXCHANGE_PLAN = "efb87545-963c-4e0d-99df-69c6916d9eb0"
FIRST = ["Adele", "Alex", "Diego", "Grady", "Isaiah", "Johanna", "Joni", "Lee", "Lidia", "Lynne",
         "Megan", "Miriam", "Nestor", "Patti", "Pradeep", "Cameron"]
LAST = ["Vance", "Wilber", "Siciliani", "Archie", "Langer", "Lorenz", "Sherman", "Gu", "Holloway",
        "Robbins", "Bowen", "Graham", "Wilke", "Fernandez", "Gupta", "White"]
DEPARTMENTS = ["Finance", "Sales", "Marketing", "Engineering", "Operations", "Legal", None]


def stable_id(*parts: Any) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "graph:" + ":".join(map(str, parts))))


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


BASE_TIME = dt.datetime(2024, 1, 15, 9, 0, tzinfo=dt.timezone.utc)


def user(i: int, rng: random.Random, domain: str) -> dict[str, Any]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    nick = f"{first.lower()}.{last.lower()}{i}"
    row: dict[str, Any] = {
        "id": stable_id("user", i), "accountEnabled": rng.random() > 0.05, "displayName": f"{first} {last}",
        "givenName": first, "surname": last, "mailNickname": nick, "userPrincipalName": f"{nick}@{domain}",
        "mail": f"{nick}@{domain}", "userType": "Member", "creationType": None,
        "createdDateTime": iso(BASE_TIME + dt.timedelta(hours=7 * i)), "jobTitle": rng.choice(["Analyst", "Manager", "Engineer", None]),
        "department": rng.choice(DEPARTMENTS), "city": rng.choice(["Seattle", "Berlin", "Lyon", None]),
        "country": rng.choice(["US", "DE", "FR"]), "usageLocation": "US", "preferredLanguage": "en-US",
        "businessPhones": [f"+1 425 555 {i % 10000:04d}"], "otherMails": [], "imAddresses": [],
        "proxyAddresses": [f"SMTP:{nick}@{domain}"], "showInAddressList": True,
        "assignedLicenses": [{"disabledPlans": [], "skuId": E5_SKU}],
        "assignedPlans": [{"assignedDateTime": iso(BASE_TIME), "capabilityStatus": "Enabled",
                           "service": "exchange", "servicePlanId": EXCHANGE_PLAN}],
        "identities": [{"signInType": "userPrincipalName", "issuer": domain, "issuerAssignedId": f"{nick}@{domain}"}],
        "onPremisesExtensionAttributes": {f"extensionAttribute{n}": None for n in range(1, 16)},
        "onPremisesSyncEnabled": None, "employeeOrgData": {"costCenter": str(1000 + i % 50), "division": None},
        "signInActivity": {"lastSignInDateTime": iso(BASE_TIME + dt.timedelta(days=300, minutes=i)),
                           "lastSignInRequestId": stable_id("signin", i)},
    }
    return {k: v for k, v in row.items() if v is not None}


def group(i: int, rng: random.Random, domain: str) -> dict[str, Any]:
    unified = i % 3 == 0
    nick = f"group{i}"
    row = {
        "id": stable_id("group", i), "displayName": f"Team {i}", "description": f"Team {i} of the tenant",
        "mailNickname": nick, "mailEnabled": unified, "securityEnabled": not unified,
        "groupTypes": ["Unified"] if unified else [], "visibility": "Private" if unified else None,
        "createdDateTime": iso(BASE_TIME + dt.timedelta(days=i)), "mail": f"{nick}@{domain}" if unified else None,
        "proxyAddresses": [f"SMTP:{nick}@{domain}"] if unified else [], "isAssignableToRole": False,
    }
    return {k: v for k, v in row.items() if v is not None}


def device(i: int, rng: random.Random) -> dict[str, Any]:
    os_name = rng.choice(["Windows", "iOS", "Android", "MacMDM"])
    return {"id": stable_id("device", i), "deviceId": stable_id("deviceid", i), "displayName": f"DEVICE-{i:04d}",
            "accountEnabled": True, "operatingSystem": os_name, "operatingSystemVersion": "10.0.22631",
            "isCompliant": rng.random() > 0.2, "isManaged": True, "trustType": "AzureAd",
            "registrationDateTime": iso(BASE_TIME + dt.timedelta(hours=i)), "physicalIds": [],
            "systemLabels": [], "alternativeSecurityIds": [{"type": 2, "identityProvider": None, "key": "Zm9v"}]}


def application(i: int) -> dict[str, Any]:
    return {"id": stable_id("application", i), "appId": stable_id("appid", i), "displayName": f"App {i}",
            "signInAudience": "AzureADMyOrg", "createdDateTime": iso(BASE_TIME + dt.timedelta(days=i)),
            "identifierUris": [f"api://{stable_id('appid', i)}"], "tags": [], "appRoles": [],
            "keyCredentials": [], "passwordCredentials": [], "requiredResourceAccess": [
                {"resourceAppId": "00000003-0000-0000-c000-000000000000",
                 "resourceAccess": [{"id": "df021288-bdef-4463-88db-98f22de89214", "type": "Role"}]}],
            "web": {"redirectUris": [], "homePageUrl": None, "logoutUrl": None,
                    "implicitGrantSettings": {"enableAccessTokenIssuance": False, "enableIdTokenIssuance": False}},
            "info": {"logoUrl": None, "marketingUrl": None, "privacyStatementUrl": None, "supportUrl": None,
                     "termsOfServiceUrl": None}}


def service_principal(i: int) -> dict[str, Any]:
    return {"id": stable_id("sp", i), "appId": stable_id("appid", i), "displayName": f"App {i}",
            "appDisplayName": f"App {i}", "accountEnabled": True, "servicePrincipalType": "Application",
            "servicePrincipalNames": [stable_id("appid", i)], "tags": [], "appRoles": [],
            "oauth2PermissionScopes": [], "replyUrls": [], "alternativeNames": [], "keyCredentials": [],
            "passwordCredentials": [], "notificationEmailAddresses": [], "appRoleAssignmentRequired": False}


ROLES = [("62e90394-69f5-4237-9190-012177145e10", "Global Administrator"),
         ("fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator"),
         ("f2ef992c-3afb-46b9-b7cf-a126ee74c451", "Global Reader")]


def directory_role(i: int) -> dict[str, Any]:
    template, name = ROLES[i % len(ROLES)]
    return {"id": stable_id("role", i), "roleTemplateId": template, "displayName": name,
            "description": f"{name} role"}


def event(user_id: str, i: int, rng: random.Random, start: dt.datetime) -> dict[str, Any]:
    end = start + dt.timedelta(minutes=rng.choice([30, 60, 90]))
    event_id = "AAMk" + stable_id("event", user_id, i).replace("-", "")
    return {
        "@odata.etag": f'W/"{stable_id("etag", event_id)[:12]}"', "id": event_id,
        "subject": rng.choice(["Weekly sync", "1:1", "Planning", "Review", "Customer call"]),
        "bodyPreview": "", "body": {"contentType": "html", "content": "<html></html>"},
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
        "end": {"dateTime": end.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
        "isAllDay": False, "isCancelled": False, "isOrganizer": True, "showAs": "busy", "type": "singleInstance",
        "importance": "normal", "sensitivity": "normal", "createdDateTime": iso(start - dt.timedelta(days=3)),
        "lastModifiedDateTime": iso(start - dt.timedelta(days=2)), "categories": [], "attendees": [],
        "location": {"displayName": "Room 1", "locationType": "default", "uniqueIdType": "unknown"},
        "locations": [], "organizer": {"emailAddress": {"name": "Organizer", "address": "organizer@contoso.com"}},
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
        "iCalUId": "040000008200E00074C5B7101A82E008" + event_id[-16:], "changeKey": event_id[-8:],
    }
