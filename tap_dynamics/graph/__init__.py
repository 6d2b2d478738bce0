"""Microsoft Graph v1.0 (Office 365's directory and calendars) as a system on the shared engine."""
