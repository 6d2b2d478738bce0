"""Settings: declared once in JSON Schema, checked up front, typed per concern.

* :mod:`~tap_dynamics.config.values`: applying the schema to config as people write it, and its
  verdict as one line;
* :mod:`~tap_dynamics.config.auth`: sign-in settings shared by every system, with the
  discriminated union on ``auth_scheme``;
* :mod:`~tap_dynamics.config.resource`: what a token is for, and Microsoft's login hosts;
* :mod:`~tap_dynamics.config.common`: HTTP and run settings shared by every system;
* :mod:`~tap_dynamics.config.dataverse`: the Dataverse group (online or on-premises);
* :mod:`~tap_dynamics.config.connection`: the documented connection string;
* :mod:`~tap_dynamics.config.settings`: the composition (``CONFIG_SCHEMA``, :class:`Settings`,
  :func:`load_settings`).
"""

from tap_dynamics.config.settings import CONFIG_SCHEMA, Settings, load_settings, validate_config

__all__ = ["CONFIG_SCHEMA", "Settings", "load_settings", "validate_config"]
