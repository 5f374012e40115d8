"""Typed configuration: the schema, YAML loading and `a.b=c` overrides."""

from raytune_llm.config.loader import load_config, validate_files
from raytune_llm.config.schema import RunConfig

__all__ = ["RunConfig", "load_config", "validate_files"]
