"""A configuration directory loaded with its plugins and roles: what the CLI commands share.

It lives apart from ``gateway.__main__`` so that the ``cli_*`` modules need not import the
command line's entry module (which imports them): no import cycle.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from gateway.errors import ConfigError, ConfigErrors

if TYPE_CHECKING:
    from gateway.access.policy import Policy
    from gateway.config import Config
    from gateway.plugins import Plugins

DEFAULT_CONFIG_DIR = "conf"


def config_dir(value: str | None) -> str:
    """The configuration directory: the option's value, else ``$CITYGATE_CONFIG``, else ``conf``."""
    return value or os.environ.get("CITYGATE_CONFIG", DEFAULT_CONFIG_DIR)


def load_all(directory: str) -> tuple[Config, Plugins, Policy]:
    """Plugins, the validated configuration and the roles; every mistake reported together."""
    from gateway import config as config_mod
    from gateway.access.policy import load_roles
    from gateway.plugins import load_plugins

    plugins = load_plugins()
    backends = plugins.storage_backends()
    errors: list[ConfigError] = []
    config = policy = None
    try:
        config = config_mod.load(
            directory, vendors=plugins.camera_vendors(), storage_backends=backends or None, mask_filters=plugins.mask_filters(),
            export_formats=plugins.export_formats(), analyzers=plugins.analyzers(), event_sinks=plugins.event_sinks(),
        )
    except ConfigErrors as exc:
        errors += exc.errors
    try:
        policy = load_roles(directory)
    except ConfigErrors as exc:
        errors += exc.errors
    if errors or config is None or policy is None:
        raise ConfigErrors(errors)
    return config, plugins, policy


def load_config_only(directory: str | None) -> Config:
    """For CLI commands that need the config (database URL) but not a running gateway."""
    return load_all(config_dir(directory))[0]
