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

from lrtune.errors import UserError, one_line
from lrtune.export.formats import (
    drop_none,
    format_for_path,
    holds_optimizer,
    key_parts,
    plain,
    split_target,
    write_config,
)

log = logging.getLogger(__name__)


def merge_into(target: str, config: Mapping[str, Any], *, dry_run: bool) -> str:
    """Merge ``config`` into the YAML, JSON or TOML file ``target`` (``PATH[:dotted.key]``).

    The exported fields go under the dotted key (intermediate tables are created); every
    other key, the key order and (YAML, TOML) the comments are kept, and in YAML every line
    that does not change stays byte for byte. An existing mapping under an exported field
    is updated in place: its keys that the export still has keep their position (and their
    comments, unless the value changes: a comment on a changed line is dropped), new ones
    are appended, stale ones removed. lrtune owns the exported fields: a stale
    ``recommendation`` or ``training`` from an earlier merge is removed, and a key that
    holds an optimizer itself (``name`` and ``lr``) gets the exported optimizer's keys, the
    rest of the export beside it (:func:`merge_at`).
    Returns the unified diff of the file, preceded by ``# lrtune export: warning: ...``
    lines for changes the user should look at (a ``batch_size`` that changes, optimizer
    keys removed); writes the file atomically (through a symlink) unless ``dry_run``.
    """
    path, key = split_target(target)
    fmt = format_for_path(path)
    if fmt is None:
        raise UserError(f"cannot merge into {path}: expected a .yaml, .yml, .json or .toml file")
    if not path.is_file():
        raise UserError(f"cannot merge into {path}: no such file (create it, or use --out)")
    try:
        # newline="": a CRLF file must stay CRLF, line for line
        with open(path, encoding="utf-8", newline="") as fh:
            old = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {one_line(exc)}") from None
    parts = key_parts(key)
    fields = plain(config)
    notes: list[str] = []
    where = f"{path}:{key}" if key else str(path)
    if fmt == "yaml":
        new = _merge_yaml(old, path, parts, fields, notes, where)
    elif fmt == "json":
        new = _merge_json(old, path, parts, fields, notes, where)
    else:
        new = _merge_toml(old, path, parts, drop_none(fields), notes, where)
    if "\r\n" in old:  # the JSON and TOML writers and YAML's new lines use "\n"
        new = new.replace("\r\n", "\n").replace("\n", "\r\n")
    diff = "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{path} (before)",
            tofile=f"{path} (after)",
        )
    )
    if diff and notes:
        diff = "".join(f"# lrtune export: warning: {note}\n" for note in notes) + diff
    if not dry_run and new != old:
        write_config(new, path)
        log.info("merged the export into %s%s", path, f":{key}" if key else "")
    return diff


def _descend(
    root: MutableMapping[str, Any], parts: list[str], path: Path, make: Any
) -> MutableMapping[str, Any]:
    """The mapping at ``parts`` below ``root``, creating missing or empty ones with ``make()``."""
    node = root
    for i, part in enumerate(parts):
        if node.get(part) is None:  # a placeholder like `train:` (null) is filled in
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
        elif name not in node or not _same_value(current, value):
            # (an unchanged value is not written again: tomlkit would re-quote 'sgd')
            node[name] = value
            if current is not None and toml:
                _drop_toml_comment(node, name)


def _same_value(old: Any, new: Any) -> bool:
    try:
        return bool(plain(old) == plain(new)) and type(plain(old)) is type(plain(new))
    except Exception:  # a value plain cannot compare: treat it as changed
        return False


def _drop_toml_comment(node: Any, name: str) -> None:
    """A changed TOML value loses its end-of-line comment: it spoke of the old value."""
    try:
        trivia = node.item(name).trivia
    except Exception:  # a plain table or an item without trivia
        return
    trivia.comment = ""
    trivia.comment_ws = ""


def merge_at(
    doc: MutableMapping[str, Any],
    parts: list[str],
    path: Path,
    fields: Mapping[str, Any],
    make: Callable[[], Any],
    *,
    notes: list[str],
    where: str,
    toml: bool = False,
) -> None:
    """Merge ``fields`` at the dotted key ``parts`` of ``doc``.

    When the key holds an optimizer (``name`` and ``lr``, as in ``train.optim: {name: adam,
    lr: 0.001}``), the exported optimizer's keys replace lrtune's keys there (``name``,
    ``lr``, torch's optimizer arguments, ``groups``; others such as ``clip`` stay) and the
    rest of the export (``schedule``, ``batch_size``, ``training``, ``source``, ...) goes
    beside it, in the mapping that holds it: ``load_config(path, key)`` reads it back from
    there.
    """
    node = _descend(doc, parts, path, make)
    optimizer = fields.get("optimizer")
    if not (parts and holds_optimizer(node) and isinstance(optimizer, Mapping)):
        _merge_fields(node, fields, make, notes=notes, where=where, toml=toml)
        return
    owned = {"name", "lr", "groups", *_OPTIMIZER_KWARGS, *optimizer}
    gone = [str(k) for k in node if k in owned and k not in optimizer]
    parent_key = ".".join(parts[:-1])
    beside = f"{path}:{parent_key}" if parent_key else str(path)
    notes.append(
        f"{where} holds an optimizer ({node['name']}, lr {node['lr']}): lrtune's keys there "
        f"are replaced by the exported optimizer's"
        + (f" ({', '.join(gone)} removed)" if gone else "")
        + f"; schedule and the rest go beside it, under {beside}"
    )
    for name in gone:
        del node[name]
    _sync(node, optimizer, make, toml=toml)
    rest = {k: v for k, v in fields.items() if k != "optimizer"}
    parent = _descend(doc, parts[:-1], path, make)
    _merge_fields(parent, rest, make, notes=notes, where=beside, toml=toml)


def _merge_fields(
    node: MutableMapping[str, Any],
    fields: Mapping[str, Any],
    make: Callable[[], Any],
    *,
    notes: list[str],
    where: str,
    toml: bool = False,
) -> None:
    """:func:`_sync` of the keys lrtune owns, with ``notes`` on what the user should check.

    lrtune owns the exported fields at the target key: a stale ``recommendation`` or
    ``training`` of an earlier merge goes.
    """
    for field in ("recommendation", "training", "micro_batch_size"):  # of an earlier merge
        if field not in fields and field in node:
            del node[field]
    old_bs, new_bs = node.get("batch_size"), fields.get("batch_size")
    if isinstance(old_bs, int) and not isinstance(old_bs, bool) and old_bs != new_bs:
        comment = _comment(node, "batch_size")
        notes.append(
            f"batch_size at {where} changes from {old_bs} to {new_bs}, the batch size the LR "
            f"was tuned with"
            + (f" (its comment {comment!r} is dropped)" if comment else "")
            + f"; to keep {old_bs}, export with --batch-size {old_bs} (the LR is then rescaled "
            "by the linear scaling rule)"
        )
    _sync(node, fields, make, toml=toml)


# Keyword arguments of torch's optimizers that sit beside ``name``/``lr`` in a hand-written
# optimizer block (the exported optimizer's own keys are added to these).
_OPTIMIZER_KWARGS = (
    "momentum",
    "dampening",
    "nesterov",
    "weight_decay",
    "betas",
    "eps",
    "amsgrad",
    "alpha",
    "centered",
    "foreach",
    "fused",
)


def _comment(node: Any, key: str) -> str | None:
    """The end-of-line comment of ``node[key]`` in a ruamel or tomlkit document, if any."""
    items = getattr(getattr(node, "ca", None), "items", None)
    if isinstance(items, dict):
        tokens = items.get(key)
        if tokens and len(tokens) > 2 and tokens[2] is not None:
            return str(tokens[2].value).strip().splitlines()[0] or None
        return None
    item = getattr(node, "item", None)
    if callable(item):
        try:
            text = item(key).trivia.comment
        except Exception:  # a tomlkit container without that item, or a plain value
            return None
        return str(text).strip() or None
    return None


def _merge_yaml(
    old: str, path: Path, parts: list[str], fields: dict[str, Any], notes: list[str], where: str
) -> str:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    from lrtune.export.merge_yaml import render, same, splice_yaml, tags

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    try:
        doc_old = yaml.load(old) if old.strip() else None
        doc = yaml.load(old) if old.strip() else None
    except Exception as exc:
        raise UserError(f"cannot parse {path} as YAML: {one_line(exc)}") from None
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, MutableMapping):
        raise UserError(f"cannot merge into {path}: its top level is not a mapping")
    merged = _merge_key_at(doc, parts, fields)
    if merged is not None:
        raise UserError(
            f"cannot merge into {where}: {merged or 'the top level'} takes keys from an anchor "
            "('<<: *name'), which lrtune cannot change without changing it for its other "
            "users; write those keys out there, or export under another key"
        )
    merge_at(doc, parts, path, fields, CommentedMap, notes=notes, where=where)
    want = plain(doc)
    indent = _mapping_indent(doc_old)
    yaml.indent(mapping=indent, sequence=indent + 2, offset=2)
    eol = "\r\n" if "\r\n" in old else "\n"
    if not isinstance(doc_old, CommentedMap) or not doc_old or doc_old.fa.flow_style():
        head = old if doc_old is None else ""  # keep a comment-only file's comments
        if head and not head.endswith("\n"):
            head += eol
        return head + "".join(render(yaml, want, 0, indent, eol))
    text = splice_yaml(old, doc_old, want, yaml, indent)
    try:
        spliced = yaml.load(text)
    except Exception:  # an alias whose anchor sat on a replaced value, say
        spliced = None
    if same(spliced, want) and tags(spliced) == tags(doc):  # a custom tag is kept too
        return text
    # The line-level edit could not express this merge: write the round trip, which is
    # right but re-indents the file; the diff shows it and the note says why.
    notes.append(f"could not keep the layout of {path}: the whole file was re-indented")
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()


def _merge_key_at(doc: Any, parts: list[str], fields: Mapping[str, Any]) -> str | None:
    """The dotted key of the first mapping lrtune would edit that holds a YAML merge key
    (``<<: *anchor``), else None: those on the way to ``parts``, and below the target (and
    below its parent, where an optimizer at the target sends the rest) those of the
    exported fields."""
    path: list[tuple[Any, list[str]]] = [(doc, [])]
    for part in parts:
        node, at = path[-1]
        if not isinstance(node, Mapping) or not isinstance(node.get(part), Mapping):
            break
        path.append((node[part], [*at, part]))
    for node, at in path:
        if getattr(node, "merge", None):
            return ".".join(at)
    if len(path) <= len(parts):  # the target is new: nothing below it exists yet
        return None
    stack = [(path[-1], fields)] + ([(path[-2], fields)] if len(path) > 1 else [])
    while stack:
        (node, at), want = stack.pop()
        for key, value in want.items():
            child = node.get(key)
            if isinstance(child, Mapping) and isinstance(value, Mapping):
                if getattr(child, "merge", None):
                    return ".".join([*at, key])
                stack.append(((child, [*at, key]), value))
    return None


def _mapping_indent(doc: Any) -> int:
    """The file's mapping indent: the column step from the first block mapping to its
    first nested block mapping (2 when there is none)."""
    from ruamel.yaml.comments import CommentedMap

    stack = [doc]
    while stack:
        node = stack.pop(0)
        if not isinstance(node, CommentedMap) or not node or node.fa.flow_style():
            continue
        col = node.lc.key(next(iter(node)))[1]
        for value in node.values():
            if isinstance(value, CommentedMap) and value and not value.fa.flow_style():
                step = value.lc.key(next(iter(value)))[1] - col
                if step > 0:
                    return int(step)
        stack.extend(node.values())
    return 2


def _merge_json(
    old: str, path: Path, parts: list[str], fields: dict[str, Any], notes: list[str], where: str
) -> str:
    try:
        doc = json.loads(old) if old.strip() else {}
    except json.JSONDecodeError as exc:
        raise UserError(f"cannot parse {path} as JSON: {exc}") from None
    except RecursionError:  # json recurses once per level of nesting
        raise UserError(f"cannot merge into {path}: nested too deeply") from None
    if not isinstance(doc, dict):
        raise UserError(f"cannot merge into {path}: its top level is not an object")
    merge_at(doc, parts, path, fields, dict, notes=notes, where=where)
    match = re.search(r"^([ \t]+)\S", old, flags=re.MULTILINE)
    indent: str | int = match.group(1) if match else 2
    try:
        text = json.dumps(doc, indent=indent, ensure_ascii=False)
    except RecursionError:  # Python 3.12's parser takes what its indenting writer cannot
        raise UserError(f"cannot merge into {path}: nested too deeply") from None
    return text + "\n" if old.endswith("\n") or not old.strip() else text


def _merge_toml(
    old: str, path: Path, parts: list[str], fields: dict[str, Any], notes: list[str], where: str
) -> str:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(old)
    except TOMLKitError as exc:
        raise UserError(f"cannot parse {path} as TOML: {one_line(exc)}") from None
    except RecursionError:  # tomlkit recurses once per level of nesting
        raise UserError(f"cannot merge into {path}: nested too deeply") from None
    merge_at(doc, parts, path, fields, tomlkit.table, notes=notes, where=where, toml=True)
    text = tomlkit.dumps(doc)
    return text.rstrip("\n") + "\n" if text.strip() else text
