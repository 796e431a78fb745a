"""Merge an export into an existing YAML, JSON or TOML config (``lrtune export --into``)."""

from __future__ import annotations

import difflib
import io
import json
import logging
import re
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from lrtune.errors import UserError
from lrtune.export.formats import (
    _drop_none,
    _key_parts,
    _one_line,
    _plain,
    format_for_path,
    split_target,
    write_config,
)

log = logging.getLogger(__name__)


def merge_into(target: str, config: Mapping[str, Any], *, dry_run: bool) -> str:
    """Merge ``config`` into the YAML, JSON or TOML file ``target`` (``PATH[:dotted.key]``).

    The exported fields go under the dotted key (intermediate tables are created); every
    other key, the key order and (YAML, TOML) the comments are kept. An existing mapping
    under an exported field is updated in place: its keys that the export still has keep
    their position and comments, new ones are appended, stale ones removed. A stale
    ``recommendation`` from an earlier merge is removed. Returns the unified diff of the
    file; writes it atomically unless ``dry_run``.
    """
    path, key = split_target(target)
    fmt = format_for_path(path)
    if fmt is None:
        raise UserError(f"cannot merge into {path}: expected a .yaml, .yml, .json or .toml file")
    if not path.is_file():
        raise UserError(f"cannot merge into {path}: no such file (create it, or use --out)")
    try:
        old = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {_one_line(exc)}") from None
    parts = _key_parts(key)
    fields = _plain(config)
    if fmt == "yaml":
        new = _merge_yaml(old, path, parts, fields)
    elif fmt == "json":
        new = _merge_json(old, path, parts, fields)
    else:
        new = _merge_toml(old, path, parts, _drop_none(fields))
    diff = "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{path} (before)",
            tofile=f"{path} (after)",
        )
    )
    if not dry_run and new != old:
        write_config(new, path)
        log.info("merged the export into %s%s", path, f":{key}" if key else "")
    return diff


def _descend(
    root: MutableMapping[str, Any], parts: list[str], path: Path, make: Any
) -> MutableMapping[str, Any]:
    """The mapping at ``parts`` below ``root``, creating missing ones with ``make()``."""
    node = root
    for i, part in enumerate(parts):
        if part not in node:
            node[part] = make()
        child = node[part]
        if not isinstance(child, MutableMapping):
            where = ".".join(parts[: i + 1])
            raise UserError(
                f"cannot merge into {path}:{'.'.join(parts)}: {where} is a "
                f"{type(child).__name__}, not a table"
            )
        node = child
    return node


def _sync(
    node: MutableMapping[str, Any],
    fields: Mapping[str, Any],
    make: Callable[[], Any],
    *,
    toml: bool = False,
) -> None:
    """Make ``node`` hold ``fields`` while keeping its existing keys' order and comments.

    A mapping already there is updated in place (stale keys removed, new ones appended);
    a new one is built with ``make()``. With ``toml``, a new leaf table ends with a blank
    line so that the table after it stays separated.
    """
    for name, value in fields.items():
        current = node.get(name)
        if isinstance(value, Mapping) and isinstance(current, MutableMapping):
            for stale in [k for k in current if k not in value]:
                del current[stale]
            _sync(current, value, make, toml=toml)
        elif isinstance(value, Mapping):
            table = make()
            _sync(table, value, make, toml=toml)
            if toml and not any(isinstance(v, Mapping) for v in value.values()):
                import tomlkit

                table.add(tomlkit.nl())
            node[name] = table
        else:
            node[name] = value


def _merge_fields(
    node: MutableMapping[str, Any],
    fields: Mapping[str, Any],
    make: Callable[[], Any],
    *,
    toml: bool = False,
) -> None:
    """:func:`_sync` plus dropping a stale ``recommendation`` of an earlier merge."""
    if "recommendation" not in fields and "recommendation" in node:
        del node["recommendation"]
    _sync(node, fields, make, toml=toml)


def _merge_yaml(old: str, path: Path, parts: list[str], fields: dict[str, Any]) -> str:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.util import load_yaml_guess_indent

    try:
        _, indent, block_seq_indent = load_yaml_guess_indent(old) if old.strip() else (None, 2, 0)
        yaml = YAML(typ="rt")
        yaml.preserve_quotes = True
        yaml.width = 4096
        mapping_indent = indent or 2
        yaml.indent(
            mapping=mapping_indent,
            sequence=mapping_indent + (block_seq_indent or 0),
            offset=block_seq_indent or 0,
        )
        doc = yaml.load(old) if old.strip() else None
    except Exception as exc:
        raise UserError(f"cannot parse {path} as YAML: {_one_line(exc)}") from None
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, MutableMapping):
        raise UserError(f"cannot merge into {path}: its top level is not a mapping")
    node = _descend(doc, parts, path, CommentedMap)
    _merge_fields(node, fields, CommentedMap)
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()


def _merge_json(old: str, path: Path, parts: list[str], fields: dict[str, Any]) -> str:
    try:
        doc = json.loads(old) if old.strip() else {}
    except json.JSONDecodeError as exc:
        raise UserError(f"cannot parse {path} as JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UserError(f"cannot merge into {path}: its top level is not an object")
    node = _descend(doc, parts, path, dict)
    _merge_fields(node, fields, dict)
    match = re.search(r"^([ \t]+)\S", old, flags=re.MULTILINE)
    indent: str | int = match.group(1) if match else 2
    text = json.dumps(doc, indent=indent, ensure_ascii=False)
    return text + "\n" if old.endswith("\n") or not old.strip() else text


def _merge_toml(old: str, path: Path, parts: list[str], fields: dict[str, Any]) -> str:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(old)
    except TOMLKitError as exc:
        raise UserError(f"cannot parse {path} as TOML: {_one_line(exc)}") from None
    node = _descend(doc, parts, path, tomlkit.table)
    _merge_fields(node, fields, tomlkit.table, toml=True)
    text = tomlkit.dumps(doc)
    return text.rstrip("\n") + "\n" if text.strip() else text
