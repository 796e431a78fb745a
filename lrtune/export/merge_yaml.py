"""The YAML side of ``lrtune export --into``: rewrite only the lines that change.

A round trip through ruamel.yaml re-indents the whole file with one indentation style (a
file that mixes ``  - a`` and ``- a`` cannot keep both) and collapses the spaces before
comments. So :func:`splice_yaml` edits the original text instead: it walks the old document
(ruamel's line and column of every key) against the merged result and, entry by entry,
keeps the lines of an unchanged entry byte for byte, descends into a block mapping that
changed, replaces a changed entry's lines, deletes a removed entry's lines and appends new
entries at the end of their mapping. A scalar replaced on its own line keeps its key text;
its end-of-line comment, about the old value, goes (the lines that do not change keep
theirs).
"""

from __future__ import annotations

import io
import json
from typing import Any

from lrtune.export.formats import plain

Edit = tuple[int, int, list[str]]
"""Replace lines ``[start, end)`` of the old text by these (``start == end``: insert)."""


def same(old: Any, new: Any) -> bool:
    """Equal as plain data, types included (``1`` is not ``1.0``, ``True`` is not ``1``)."""
    return json.dumps(plain(old), default=str) == json.dumps(plain(new), default=str)


def splice_yaml(old: str, doc_old: Any, want: dict[str, Any], yaml: Any, indent: int) -> str:
    """``old`` with the top-level mapping ``doc_old`` (ruamel, with positions) made ``want``.

    ``yaml`` is the ruamel ``YAML`` that renders new entries, ``indent`` the mapping indent
    for the nested blocks of new entries.
    """
    lines = old.splitlines(keepends=True)
    eol = "\r\n" if old.endswith("\r\n") or "\r\n" in old[:200] else "\n"
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += eol  # something may be appended after the last line
    edits: list[Edit] = []
    _splice_map(doc_old, want, lines, len(lines), edits, yaml, indent, eol)
    # Stable: at one position an insertion (the end of a block) goes before a replacement
    # (the next entry), and nested insertions before their parent's.
    edits.sort(key=lambda edit: (edit[0], edit[0] != edit[1]))
    out: list[str] = []
    at = 0
    for start, end, new in edits:
        out.extend(lines[at:start])
        out.extend(new)
        at = max(at, end)
    out.extend(lines[at:])
    return "".join(out)


def tags(node: Any, at: tuple[str, ...] = ()) -> dict[tuple[str, ...], str]:
    """Every YAML tag in a ruamel document (``!Config`` on a mapping, ``!Date`` on a scalar)
    by the key path of its node: what plain data (:func:`same`) cannot see."""
    out: dict[tuple[str, ...], str] = {}
    tag = getattr(getattr(node, "tag", None), "value", None)
    if tag:
        out[at] = str(tag)
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(tags(value, (*at, str(key))))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.update(tags(value, (*at, str(i))))
    return out


def render(yaml: Any, data: dict[str, Any], col: int, indent: int, eol: str) -> list[str]:
    """``data`` as block YAML lines indented by ``col`` (short lists in flow style)."""
    buf = io.StringIO()
    yaml.dump(_flow_lists(data), buf)
    return [" " * col + line + eol for line in buf.getvalue().splitlines()]


def _flow_lists(value: Any) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, dict):
        out = CommentedMap()
        for key, item in value.items():
            out[key] = _flow_lists(item)
        return out
    if isinstance(value, list):
        seq = CommentedSeq(_flow_lists(v) for v in value)
        if not any(isinstance(v, (dict, list)) for v in value):
            seq.fa.set_flow_style()  # betas: [0.9, 0.999], as people write them
        return seq
    return value


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _trim(lines: list[str], start: int, end: int, col: int) -> int:
    """The end of the entry at ``start``: without trailing blank lines and comments at or
    left of the entry's key column (those introduce what follows)."""
    while end > start + 1:
        text = lines[end - 1].strip()
        if text and not (
            (text.startswith("#") and _indent_of(lines[end - 1]) <= col) or text == "..."
        ):
            break
        end -= 1
    return end


def _is_block_map(value: Any) -> bool:
    from ruamel.yaml.comments import CommentedMap

    return isinstance(value, CommentedMap) and len(value) > 0 and not value.fa.flow_style()


def _splice_map(
    node: Any,
    want: dict[str, Any],
    lines: list[str],
    end: int,
    edits: list[Edit],
    yaml: Any,
    indent: int,
    eol: str,
) -> None:
    keys = list(node)
    col = node.lc.key(keys[0])[1]
    starts = [node.lc.key(k)[0] for k in keys]
    last_end = starts[0] + 1
    for i, key in enumerate(keys):
        start = starts[i]
        stop = _trim(lines, start, starts[i + 1] if i + 1 < len(keys) else end, col)
        last_end = stop
        name = str(key)
        if name not in want:
            edits.append((start, stop, []))
            continue
        old, new = node[key], want[name]
        if same(old, new):
            continue
        # A block mapping below its key line (after a tag or anchor on that line, too): the
        # key line stays as it is, and the edit goes on inside.
        if _is_block_map(old) and isinstance(new, dict) and old.lc.key(next(iter(old)))[0] > start:
            _splice_map(old, new, lines, stop, edits, yaml, indent, eol)
            continue
        inline = _inline(node, key, new, lines, start, stop, yaml, eol)
        edits.append((start, stop, inline or render(yaml, {name: new}, col, indent, eol)))
    added = {name: value for name, value in want.items() if name not in {str(k) for k in keys}}
    if added:
        edits.append((last_end, last_end, render(yaml, added, col, indent, eol)))


def _inline(
    node: Any, key: Any, new: Any, lines: list[str], start: int, stop: int, yaml: Any, eol: str
) -> list[str] | None:
    """A scalar that stays a one-line scalar: the old key text and the new value; else
    ``None``. The old end-of-line comment is dropped: it spoke of the old value (``lr: 0.1
    # my guess``), and the diff shows it going."""
    old = node[key]
    if stop != start + 1 or isinstance(new, (dict, list)) or isinstance(old, (dict, list)):
        return None
    line, col = node.lc.value(key)
    if line != start:
        return None
    text = render(yaml, {"x": new}, 0, 2, "\n")
    if len(text) != 1 or not text[0].startswith("x: "):
        return None
    return [lines[start][:col] + text[0][3:].rstrip("\n") + eol]
