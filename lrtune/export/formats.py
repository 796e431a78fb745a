"""The export's file formats: YAML, JSON and TOML text, ``PATH[:key]`` targets, atomic writes."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lrtune.errors import UserError

FORMATS: tuple[str, ...] = ("yaml", "json", "toml")
"""The formats :func:`dump_config` writes."""

_SUFFIX_FORMATS: dict[str, str] = {
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
    ".toml": "toml",
}


# --- formats -------------------------------------------------------------------------------


def format_for_path(path: str | os.PathLike[str], default: str | None = None) -> str | None:
    """The format a file suffix stands for (``.yaml``/``.yml``, ``.json``, ``.toml``)."""
    return _SUFFIX_FORMATS.get(Path(path).suffix.lower(), default)


def dump_config(config: Mapping[str, Any], fmt: str) -> str:
    """``config`` as ``yaml``, ``json`` or ``toml`` text, keys in their order.

    TOML has no null: keys whose value is ``None`` are left out there; and TOML puts the
    plain top-level values (``batch_size``, ``recommendation``) before the tables.
    """
    if fmt == "yaml":
        import yaml

        return str(
            yaml.safe_dump(
                plain(config),
                sort_keys=False,
                default_flow_style=False,
                allow_unicode=True,
                width=4096,
            )
        )
    if fmt == "json":
        return json.dumps(plain(config), indent=2, ensure_ascii=False) + "\n"
    if fmt == "toml":
        import tomlkit

        return tomlkit.dumps(drop_none(plain(config)))
    raise UserError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")


def check_writable(path: str | os.PathLike[str]) -> tuple[Path, Path, int]:
    """Why ``path`` cannot be written by :func:`write_config`, as a :class:`UserError`
    (no folder, a folder by that name, a read-only file), checked before any work is done;
    else the file to write (a symlink's target), its folder and the mode it will have."""
    shown = Path(path)
    # os.replace over the link itself would swap the link for a regular file and leave
    # the file it points to (often a shared config in a dotfiles or configs repo) stale.
    target = Path(os.path.realpath(shown)) if shown.is_symlink() else shown
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"cannot write {shown}: folder {folder} does not exist")
    if target.is_dir():
        raise UserError(f"cannot write {shown}: it is a folder")
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    else:
        # The rename would replace a file its owner made read-only (and root may write
        # any file): a read-only config is one nobody meant lrtune to change.
        if not mode & 0o200 or not os.access(target, os.W_OK):
            raise UserError(
                f"{shown} is read-only: make it writable (chmod u+w) for lrtune to change it"
            )
    return target, folder, mode


def write_config(text: str, path: str | os.PathLike[str]) -> None:
    """Write ``text`` to ``path`` atomically: a temp file in the same folder, then replace.

    An existing file keeps its permission bits (a read-only one is refused: one line); a new
    one gets ``0o644``. A symlink stays a
    symlink: the file it points to is written (the temp file goes into that file's folder,
    so the rename stays on one file system).
    """
    shown = Path(path)
    target, folder, mode = check_writable(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise UserError(f"cannot write {shown}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {shown}: {exc.strerror or exc}") from None
        raise


def plain(value: Any) -> Any:
    """Plain dicts, lists, strings and numbers (no tuples, numpy scalars or tomlkit items)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        return plain(item())
    return str(value)


def drop_none(value: Any) -> Any:
    """``value`` without its ``None`` entries, at every depth (TOML has no null)."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value if v is not None]
    return value


def split_target(target: str | os.PathLike[str], key: str | None = None) -> tuple[Path, str | None]:
    """``PATH[:dotted.key]`` as ``(path, key)``; an existing file name wins over a split."""
    text = os.fspath(target)
    if key is not None or Path(text).exists() or ":" not in text:
        return Path(text), key or None
    head, tail = text.rsplit(":", 1)
    if not head or "/" in tail or "\\" in tail:
        return Path(text), None
    return Path(head), tail or None


def key_parts(key: str | None) -> list[str]:
    """A ``PATH:dotted.key`` target's key as its parts; a one-line error on an empty part."""
    if not key:
        return []
    parts = key.split(".")
    if any(not p.strip() for p in parts):
        raise UserError(f"bad key {key!r}: expected dotted names like train.optim")
    return [p.strip() for p in parts]


def holds_optimizer(node: Any) -> bool:
    """A mapping that is an optimizer itself: ``name`` and ``lr`` side by side, no
    ``optimizer`` key (``train.optim: {name: adam, lr: 0.001}``). ``export --into`` writes
    the exported optimizer's keys into such a block and the rest beside it."""
    return isinstance(node, Mapping) and "name" in node and "lr" in node and "optimizer" not in node
