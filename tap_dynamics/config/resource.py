"""What a token is for, and which hosts are Microsoft's own identity endpoints.

A credential is always built for one explicit :class:`Resource`: a Dataverse token is for the org
URL, an F&O token for the environment's URL, a Graph token for ``https://graph.microsoft.com``.
"""

from __future__ import annotations

from dataclasses import dataclass

# Hosts MSAL validates itself; for anything else (sovereign proxies, the test emulator) instance
# discovery would call login.microsoftonline.com, so it is turned off. AD FS must be none of them.
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login-us.microsoftonline.com",
        "login.usgovcloudapi.net",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)


@dataclass(frozen=True)
class Resource:
    """What a token is for: the service's audience, given to every credential explicitly.

    A Dataverse token is for the org URL, an F&O token for the environment's URL, a Graph token
    for ``https://graph.microsoft.com``: one sign-in, several audiences, so the credential never
    guesses the audience from the settings.
    """

    audience: str  # the resource URL, no trailing slash (also AD FS's and IMDS's `resource`)
    delegated_scopes: tuple[str, ...] = ()  # what a signed-in user's token asks for
    service: str = "Dataverse"  # the service's name in messages ("Microsoft Graph", …)
    # The fix when Entra ID does not know the resource (AADSTS500011); None: the org URL's.
    wrong_resource: str | None = None
    # The API permission an app registration needs for this resource, as the Azure portal names
    # it (AADSTS65001, missing consent, says to add it); empty: the consent line names none.
    permission: str = ""

    @property
    def app_scopes(self) -> list[str]:
        """The scope of an application (client-credential) token: the resource's ``/.default``."""
        return [f"{self.audience}/.default"]

    @property
    def user_scopes(self) -> list[str]:
        """The scopes of a delegated token (``/.default`` unless the service names its own)."""
        return list(self.delegated_scopes) or self.app_scopes
