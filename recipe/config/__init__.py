"""The experiment config: schema (schema.py), YAML loading and overrides (loading.py), init templates."""
from recipe.config.schema import (IMAGE_MODEL_CHANNELS, LADDER_RUNGS, MAX_YAML_ALIASES, MODEL_KINDS,  # noqa: F401
                                  SECTIONS, CheckOverride, Config, DataConfig, EarlyStopping, EnsembleConfig,
                                  ModelConfig, OverfitConfig, RegularizeConfig, Section, SpaceParam, SplitConfig,
                                  TrainConfig, TuneConfig, digest_json, section_digests)
from recipe.config.loading import json_schema, load, parse_override, read_yaml, validate  # noqa: F401
from recipe.config.templates import MAKEFILE_SNIPPET, STARTER  # noqa: F401
from recipe.errors import ConfigError  # noqa: F401
