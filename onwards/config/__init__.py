"""Config: the onwards JSON format, validated into an immutable Snapshot.

`load_config_file` / `parse_config_bytes` / `parse_config` are the ways in; every problem
comes out as one ConfigError with a one-line message. The field reference is
docs/configuration.md.
"""

from onwards.config.errors import ConfigError
from onwards.config.model import (
    Check,
    ConcurrencyCheck,
    FallbackSpec,
    HttpPool,
    KeyDefinition,
    LimitsSettings,
    Provider,
    RateCheck,
    Snapshot,
    Target,
)
from onwards.config.parse import content_version, load_config_file, parse_config, parse_config_bytes

__all__ = [
    "Check",
    "ConcurrencyCheck",
    "ConfigError",
    "FallbackSpec",
    "HttpPool",
    "KeyDefinition",
    "LimitsSettings",
    "Provider",
    "RateCheck",
    "Snapshot",
    "Target",
    "content_version",
    "load_config_file",
    "parse_config",
    "parse_config_bytes",
]
