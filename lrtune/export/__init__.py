"""Export a study's winner as a production config, merge it into one, and load it back.

- :mod:`~lrtune.export.from_study`: :func:`export_config` builds the config from the best
  trial of a study (``optimizer``, ``schedule``, ``batch_size``, ``training``,
  ``recommendation``, ``source``), rescaled to another batch size on request;
- :mod:`~lrtune.export.formats`: :func:`dump_config` writes it as YAML, JSON or TOML, and
  :func:`write_config` writes a file atomically (through a symlink to its target);
- :mod:`~lrtune.export.merge`: :func:`merge_into` pulls it into an existing config file,
  replacing only the keys lrtune owns and leaving every other line as it was;
- :mod:`~lrtune.export.load`: :func:`load_config` reads it back as a
  :class:`ProductionConfig` with ``build_optimizer`` and ``build_scheduler``.

None of these import torch until a :class:`ProductionConfig` builds an optimizer.
"""

from __future__ import annotations

from lrtune.export.formats import (
    FORMATS,
    dump_config,
    format_for_path,
    split_target,
    write_config,
)
from lrtune.export.from_study import (
    EXPORTED_FIELDS,
    WARMUP_SCALE_FACTOR,
    build_source,
    export_config,
)
from lrtune.export.load import ProductionConfig, load_config
from lrtune.export.merge import merge_into

__all__ = [
    "EXPORTED_FIELDS",
    "FORMATS",
    "WARMUP_SCALE_FACTOR",
    "ProductionConfig",
    "build_source",
    "dump_config",
    "export_config",
    "format_for_path",
    "load_config",
    "merge_into",
    "split_target",
    "write_config",
]
