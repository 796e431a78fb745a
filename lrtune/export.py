"""Export a study's winner as a production config, merge it into one, and load it back.

A finished lrtune trial stores its full resolved training config in the trial user attr
``config`` (see ``docs/design.md``). :func:`export_config` takes the best complete trial of
a study and returns that config in the order of the SPEC (``optimizer``, ``schedule``,
``batch_size``, optionally ``recommendation``, ``source``). :func:`dump_config` writes it as
YAML, JSON or TOML, :func:`merge_into` pulls it into an existing production config file
(keeping order and comments), and :func:`load_config` reads it back as a
:class:`ProductionConfig` whose :meth:`~ProductionConfig.build_scheduler` follows the very
closed-form schedule that the trial trained with.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import io
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from lrtune.errors import UserError
from lrtune.optimizers import make_optimizer
from lrtune.storage import mask_url, open_storage

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("yaml", "json", "toml")
"""The formats :func:`dump_config` writes."""

_SUFFIX_FORMATS: dict[str, str] = {
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
    ".toml": "toml",
}

EXPORTED_FIELDS: tuple[str, ...] = (
    "optimizer",
    "schedule",
    "batch_size",
    "recommendation",
    "source",
)
"""Top-level fields of an exported config, in order (``recommendation`` only sometimes)."""

# Goyal et al. 2017 ("Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour") scale the
# LR linearly with the batch size, but found that the linear scaling rule breaks down early in
# training for large scale-ups (they went 32x, 256 -> 8192) unless the LR is ramped up
# gradually over the first ~5 epochs. From a factor of 8 on we therefore add a
# ``recommendation`` to use a warmup; below that the rule alone is usually fine.
WARMUP_SCALE_FACTOR = 8.0
"""Batch-size scale-up from which :func:`export_config` recommends a warmup."""

_GOYAL_WARMUP_EPOCHS = 5


# --- export --------------------------------------------------------------------------------


def export_config(storage: str, study_name: str, *, batch_size: int | None = None) -> dict:
    """The best complete trial of study ``study_name`` in ``storage`` as a production config.

    Returns ``{"optimizer", "schedule", "batch_size", ["recommendation"], "source"}``. With
    ``batch_size`` the LR is rescaled by the linear scaling rule (Goyal et al. 2017),
    ``lr * batch_size / trained_batch_size``; ``source`` then also keeps ``trained_batch_size``
    and ``trained_lr``, and a scale-up of :data:`WARMUP_SCALE_FACTOR` or more adds a
    ``recommendation`` to warm the LR up. Raises :class:`UserError` for an unreachable
    storage, an unknown study, or a study without a finished lrtune trial.
    """
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise UserError(f"--batch-size must be a positive integer, got {batch_size!r}")
    study = _load_study(storage, study_name)
    trial = _best_trial(study)
    trained = trial.user_attrs.get("config")
    if not isinstance(trained, Mapping) or not isinstance(trained.get("optimizer"), Mapping):
        raise UserError(
            f"trial {trial.number} of study {study_name!r} has no lrtune config (user attr "
            "'config'); was the study created by lrtune?"
        )
    config = _config_from_trial(trained)
    source = build_source(
        storage,
        study_name,
        trial_number=trial.number,
        value=trial.value,
        metric=study.user_attrs.get("metric"),
        version=study.user_attrs.get("lrtune_version"),
    )
    for key in ("epochs", "total_steps"):
        if trained.get(key) is not None:
            source[key] = trained[key]
    recommendation = None
    if batch_size is not None:
        recommendation = _rescale(config, source, batch_size)
    out: dict[str, Any] = {
        "optimizer": config["optimizer"],
        "schedule": config["schedule"],
        "batch_size": config["batch_size"],
    }
    if recommendation:
        out["recommendation"] = recommendation
    out["source"] = source
    return out


def build_source(
    storage: str,
    study_name: str,
    *,
    trial_number: int,
    value: float | None,
    metric: str | None = None,
    version: str | None = None,
    created: datetime | None = None,
) -> dict[str, Any]:
    """The ``source`` block of an export: where the config came from (password masked)."""
    if version is None:
        from lrtune import __version__ as version
    when = created or datetime.now(timezone.utc)
    source: dict[str, Any] = {
        "study": study_name,
        "trial": trial_number,
        "value": value,
        "metric": metric if metric is not None else "value",
        "lrtune": str(version),
        "created": when.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "storage": mask_url(storage),
    }
    return source


def _config_from_trial(trained: Mapping[str, Any]) -> dict[str, Any]:
    """A deep, plain copy of the trial's optimizer, schedule and batch size."""
    optimizer = dict(copy.deepcopy(trained["optimizer"]))
    schedule = trained.get("schedule")
    schedule = dict(copy.deepcopy(schedule)) if isinstance(schedule, Mapping) else {}
    schedule.setdefault("name", "constant")
    if "name" not in optimizer or "lr" not in optimizer:
        raise UserError("the trial's config lacks optimizer name or lr; was it made by lrtune?")
    return {"optimizer": optimizer, "schedule": schedule, "batch_size": trained.get("batch_size")}


def _rescale(config: dict[str, Any], source: dict[str, Any], batch_size: int) -> str | None:
    """Apply the linear scaling rule in place; returns a warmup recommendation or ``None``."""
    trained_bs = config["batch_size"]
    if not isinstance(trained_bs, int) or trained_bs < 1:
        raise UserError(
            "cannot rescale to --batch-size: the trial did not record the batch size it "
            "trained with"
        )
    trained_lr = float(config["optimizer"]["lr"])
    factor = batch_size / trained_bs
    config["optimizer"]["lr"] = trained_lr * batch_size / trained_bs
    config["batch_size"] = batch_size
    source["trained_batch_size"] = trained_bs
    source["trained_lr"] = trained_lr
    if factor < WARMUP_SCALE_FACTOR:
        return None
    return _warmup_recommendation(config["schedule"], factor, source.get("epochs"))


def _warmup_recommendation(schedule: Mapping[str, Any], factor: float, epochs: Any) -> str:
    """What to do about warmup after a batch-size scale-up by ``factor`` (>= 8).

    Goyal et al. warm up linearly over the first 5 epochs; as a fraction of the run that is
    ``5 / epochs`` (capped at 0.2, the top of lrtune's warmup search range), which is what
    the schedules' ``warmup_frac`` (``warmup_cosine``, ``wsd``) and ``pct_start``
    (``onecycle``) mean.
    """
    head = (
        f"batch size scaled up {factor:g}x: the linear scaling rule needs a gradual LR "
        "warmup at this scale (Goyal et al. 2017 warm up linearly over the first "
        f"{_GOYAL_WARMUP_EPOCHS} epochs)"
    )
    if isinstance(epochs, int) and epochs > 0:
        frac = f"{min(0.2, _GOYAL_WARMUP_EPOCHS / epochs):.2g}"
        span = f"{frac} of the run ({min(epochs, _GOYAL_WARMUP_EPOCHS)} of {epochs} epochs)"
    else:
        frac, span = "0.05-0.2", "0.05-0.2 of the run (~5 epochs)"
    name = schedule.get("name")
    if name in ("warmup_cosine", "wsd"):
        current = schedule.get("warmup_frac")
        return f"{head}; {name} warms up already: keep warmup_frac >= {frac} (now {current})"
    if name == "onecycle":
        current = schedule.get("pct_start")
        return f"{head}; onecycle warms up already: keep pct_start >= {frac} (now {current})"
    return (
        f"{head}; switch to schedule warmup_cosine or wsd with warmup_frac ~{frac}, or warm up "
        f"linearly over {span} before the {name} schedule"
    )


def _load_study(storage: str, study_name: str) -> Any:
    """``optuna.load_study`` with one-line :class:`UserError` messages (password masked)."""
    import optuna

    shown = mask_url(storage)
    rdb = open_storage(storage, readonly=True)
    try:
        return optuna.load_study(study_name=study_name, storage=rdb)
    except KeyError:
        pass
    except Exception as exc:
        raise UserError(f"cannot read storage {shown}: {_one_line(exc)}") from None
    try:
        names = optuna.study.get_all_study_names(storage=rdb)
    except Exception:
        names = []
    close = difflib.get_close_matches(study_name, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(
        f"no study {study_name!r} in {shown}: {hint}`lrtune ls --storage URL` shows the studies"
    )


def _best_trial(study: Any) -> Any:
    """The best COMPLETE trial (ties: the earliest)."""
    import optuna

    if len(study.directions) != 1:
        raise UserError(f"study {study.study_name!r} has several objectives; lrtune needs one")
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    if not done:
        raise UserError(
            f"study {study.study_name!r} has no finished trial yet: run `lrtune study` or "
            "`lrtune worker` on it first"
        )
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(done, key=lambda t: (sign * t.value, t.number))


def _one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, passwords masked."""
    text = str(exc).strip() or type(exc).__name__
    return mask_url(text.splitlines()[0].strip())


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
                _plain(config),
                sort_keys=False,
                default_flow_style=False,
                allow_unicode=True,
                width=4096,
            )
        )
    if fmt == "json":
        return json.dumps(_plain(config), indent=2, ensure_ascii=False) + "\n"
    if fmt == "toml":
        import tomlkit

        return tomlkit.dumps(_drop_none(_plain(config)))
    raise UserError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")


def write_config(text: str, path: str | os.PathLike[str]) -> None:
    """Write ``text`` to ``path`` atomically: a temp file in the same folder, then replace.

    An existing file keeps its permission bits; a new one gets ``0o644``.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"cannot write {target}: folder {folder} does not exist")
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
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
            raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise


def _plain(value: Any) -> Any:
    """Plain dicts, lists, strings and numbers (no tuples, numpy scalars or tomlkit items)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
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
        return _plain(item())
    return str(value)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value if v is not None]
    return value


# --- merge into an existing config ---------------------------------------------------------


def split_target(target: str | os.PathLike[str], key: str | None = None) -> tuple[Path, str | None]:
    """``PATH[:dotted.key]`` as ``(path, key)``; an existing file name wins over a split."""
    text = os.fspath(target)
    if key is not None or Path(text).exists() or ":" not in text:
        return Path(text), key or None
    head, tail = text.rsplit(":", 1)
    if not head or "/" in tail or "\\" in tail:
        return Path(text), None
    return Path(head), tail or None


def _key_parts(key: str | None) -> list[str]:
    if not key:
        return []
    parts = key.split(".")
    if any(not p.strip() for p in parts):
        raise UserError(f"bad key {key!r}: expected dotted names like train.optim")
    return [p.strip() for p in parts]


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


# --- load it back ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProductionConfig:
    """An exported config, ready for the user's own training loop.

    ``optimizer`` is ``{"name", "lr", <kwargs>}``, ``schedule`` ``{"name", <params>}`` with
    durations as fractions of the run, ``batch_size`` the batch size the LR belongs to, and
    ``source`` where it came from.
    """

    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    batch_size: int | None = None
    source: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def lr(self) -> float:
        """The peak LR."""
        return float(self.optimizer["lr"])

    def build_optimizer(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        """The exported optimizer over ``params`` at the exported LR.

        ``params`` are tensors (e.g. ``model.parameters()``) or param-group dicts. A group
        may set its own ``lr``, or ``lr_mult``: its LR is then the exported LR times
        ``lr_mult``. The scheduler scales every group by the same factor.
        """
        items = list(params)
        groups: list[Any] = []
        for item in items:
            if isinstance(item, Mapping):
                group = dict(item)
                mult = group.pop("lr_mult", None)
                if mult is not None and "lr" not in group:
                    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or mult < 0:
                        raise UserError(f"lr_mult must be a number >= 0, got {mult!r}")
                    group["lr"] = self.lr * float(mult)
                groups.append(group)
            else:
                groups.append(item)
        kwargs = {k: v for k, v in self.optimizer.items() if k not in ("name", "lr")}
        try:
            return make_optimizer(str(self.optimizer["name"]), groups, self.lr, **kwargs)
        except ValueError as exc:
            raise UserError(f"bad optimizer in the config: {_one_line(exc)}") from None

    def build_scheduler(
        self, optimizer: torch.optim.Optimizer, total_steps: int
    ) -> torch.optim.lr_scheduler.LambdaLR:
        """A ``LambdaLR`` over the exported closed-form schedule for a run of ``total_steps``.

        Call ``scheduler.step()`` after every optimizer step; the LR at step ``s`` is then
        ``schedule_lr(name, s, total_steps, lr, **params)``, as in the trial.
        """
        params = {k: v for k, v in self.schedule.items() if k != "name"}
        from lrtune import schedules

        try:
            return schedules.build_scheduler(
                optimizer, str(self.schedule["name"]), total_steps, **params
            )
        except ValueError as exc:
            raise UserError(f"bad schedule in the config: {_one_line(exc)}") from None

    def lr_at(self, step: int, total_steps: int) -> float:
        """The LR at ``step`` of a run of ``total_steps`` (the closed form)."""
        from lrtune import schedules

        params = {k: v for k, v in self.schedule.items() if k != "name"}
        return schedules.schedule_lr(
            str(self.schedule["name"]), step, total_steps, self.lr, **params
        )

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict in export order."""
        out: dict[str, Any] = {"optimizer": dict(self.optimizer), "schedule": dict(self.schedule)}
        if self.batch_size is not None:
            out["batch_size"] = self.batch_size
        out["source"] = dict(self.source)
        return out


def load_config(path: str | os.PathLike[str], key: str | None = None) -> ProductionConfig:
    """Read an exported config from a YAML, JSON or TOML file (``"path:dotted.key"`` too).

    ``key`` names the table that :func:`merge_into` merged the export under. Raises
    :class:`UserError` for a missing or unreadable file, a missing key, or missing or bad
    ``optimizer``/``schedule`` fields.
    """
    file, key = split_target(path, key)
    fmt = format_for_path(file)
    if fmt is None:
        raise UserError(f"cannot load {file}: expected a .yaml, .yml, .json or .toml file")
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"cannot load {file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot load {file}: {_one_line(exc)}") from None
    data = _parse(text, fmt, file)
    where = str(file)
    for part in _key_parts(key):
        if not isinstance(data, Mapping) or part not in data:
            raise UserError(f"cannot load {file}: no key {key!r} in it")
        data = data[part]
        where = f"{file}:{key}"
    if not isinstance(data, Mapping):
        raise UserError(f"cannot load {where}: expected a table with optimizer and schedule")
    return _config_from_mapping(data, where)


def _parse(text: str, fmt: str, file: Path) -> Any:
    try:
        if fmt == "yaml":
            import yaml

            return yaml.safe_load(text)
        if fmt == "json":
            return json.loads(text)
        import tomlkit

        return tomlkit.parse(text).unwrap()
    except Exception as exc:  # yaml, json and tomlkit each raise their own error types
        raise UserError(f"cannot parse {file} as {fmt.upper()}: {_one_line(exc)}") from None


def _config_from_mapping(data: Mapping[str, Any], where: str) -> ProductionConfig:
    from lrtune import schedules
    from lrtune.optimizers import optimizer_defaults

    optimizer = data.get("optimizer")
    schedule = data.get("schedule")
    if not isinstance(optimizer, Mapping) or "name" not in optimizer or "lr" not in optimizer:
        raise UserError(f"bad config {where}: needs optimizer with name and lr (see lrtune export)")
    lr = optimizer["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise UserError(f"bad config {where}: optimizer lr must be a positive number, got {lr!r}")
    try:
        allowed = optimizer_defaults(str(optimizer["name"]))
    except ValueError as exc:
        raise UserError(f"bad config {where}: {_one_line(exc)}") from None
    unknown = sorted(set(optimizer) - set(allowed) - {"name", "lr"})
    if unknown:
        raise UserError(
            f"bad config {where}: optimizer {optimizer['name']!r} takes "
            f"{', '.join(sorted(allowed))}, not {', '.join(unknown)}"
        )
    if schedule is None:
        schedule = {"name": "constant"}
    if not isinstance(schedule, Mapping) or "name" not in schedule:
        raise UserError(f"bad config {where}: needs schedule with a name (see lrtune export)")
    params = {k: v for k, v in schedule.items() if k != "name"}
    try:
        # total_steps only matters for validation being possible; durations are fractions.
        resolved = schedules.resolve_params(str(schedule["name"]), 1000, **params)
    except ValueError as exc:
        raise UserError(f"bad config {where}: {_one_line(exc)}") from None
    batch_size = data.get("batch_size")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise UserError(f"bad config {where}: batch_size must be a positive integer")
    source = data.get("source") or {}
    if not isinstance(source, Mapping):
        raise UserError(f"bad config {where}: source must be a table")
    return ProductionConfig(
        optimizer={**optimizer, "lr": float(lr)},
        schedule={"name": str(schedule["name"]), **resolved},
        batch_size=batch_size,
        source=dict(source),
    )
