"""Loading a task: a built-in name, ``module:function``, ``path/to/file.py:function``, a
factory or a :class:`~lrtune.training.tasks.Task`, as a factory ``make(seed, **params)``.

A task file imports like a script: while it is imported (and while its factory runs) its
folder is on ``sys.path``, so ``from models import Net`` finds the ``models.py`` beside it,
whether lrtune runs as ``python -m lrtune``, as the ``lrtune`` console script or as a
worker started in another folder. ``module:function`` is imported with the working folder
on ``sys.path``, as ``python -m`` has it. A failed import is one line that says how to fix
it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from lrtune import interrupt
from lrtune.errors import UserError, one_line
from lrtune.training.tasks import (
    Task,
    TaskFactory,
    breast_cancer,
    check_task,
    digits,
    digits_cnn,
    synthetic,
    wine,
)


def _zoo(name: str) -> TaskFactory:
    # The heavier tasks (a transformer, a pretrained body) are imported on first use, so
    # naming a light task costs nothing of theirs.
    def make(seed: int) -> Task:
        from lrtune.training import zoo

        factory: TaskFactory = getattr(zoo, name)
        return factory(seed)

    make.__name__ = name
    return make


#: The built-in tasks by the name ``--task`` takes.
BUILTIN_TASKS: dict[str, TaskFactory] = {
    "digits": digits,
    "digits-cnn": digits_cnn,
    "breast-cancer": breast_cancer,
    "wine": wine,
    "synthetic": synthetic,
    "charlm": _zoo("charlm"),
    "finetune": _zoo("finetune"),
}

EXPECTED = (
    f"a built-in task ({', '.join(BUILTIN_TASKS)}), module:function, or path/to/file.py:function"
)


@contextlib.contextmanager
def folder_on_path(folder: Path) -> Iterator[None]:
    """``folder`` first on ``sys.path`` inside the block (unless it is there already)."""
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def resolve_task(spec: str | TaskFactory | Task) -> Callable[..., Task]:
    """Turn a built-in name, ``module:function``, ``file.py:function``, factory or Task into a
    factory ``make(seed, **params)`` (``params``: a study's ``[params.task]`` values, passed
    to the user's factory). Raises :class:`UserError` with one line when it cannot."""
    if isinstance(spec, Task):
        task = spec
        return lambda seed, **params: task
    if callable(spec):
        return _checked(spec, getattr(spec, "__name__", "factory"), None)
    if spec in BUILTIN_TASKS:
        return _checked(BUILTIN_TASKS[spec], spec, None)
    module_part, sep, func_name = spec.rpartition(":")
    if not sep or not module_part or not func_name:
        raise UserError(f"unknown task {spec!r}: expected {EXPECTED}")
    module, folder = _load_module(spec, module_part)
    factory = getattr(module, func_name, None)
    if factory is None or not callable(factory):
        raise UserError(f"task {spec!r}: {module_part} has no function {func_name!r}")
    return _checked(factory, spec, folder)


def locate_task(task: str, base: str | None) -> str:
    """``task`` with a relative ``file.py`` path made absolute against ``base`` (the folder a
    study was created in) when the file is there: a worker started in another folder of the
    same machine runs the very file the study was made with. Otherwise ``task`` as given
    (another machine: the path is relative to the worker's folder)."""
    module_part, sep, func_name = task.rpartition(":")
    if not sep or not module_part.endswith(".py") or os.path.isabs(module_part) or not base:
        return task
    there = Path(base) / module_part
    return f"{there}:{func_name}" if there.is_file() else task


def _load_module(spec: str, module_part: str) -> tuple[Any, Path | None]:
    """The imported module, and the folder that was on ``sys.path`` for it (a task file's)."""
    if module_part.endswith(".py"):
        path = Path(module_part)
        if not path.is_file():
            raise UserError(f"task {spec!r}: file {module_part} does not exist")
        folder = path.resolve().parent
        name = f"lrtune_user_task_{abs(hash(str(path.resolve())))}"
        if name in sys.modules:
            return sys.modules[name], folder
        try:
            with folder_on_path(folder):
                return _exec_file(name, path), folder
        except Exception as exc:  # any error in the user's module is theirs to fix: one line
            raise UserError(_import_failed(spec, module_part, exc, folder)) from exc
    try:
        with folder_on_path(Path.cwd()):  # as `python -m lrtune` has it; the script has not
            return importlib.import_module(module_part), None
    except Exception as exc:
        raise UserError(_import_failed(spec, module_part, exc, None)) from exc


def _exec_file(name: str, path: Path) -> Any:
    mod_spec = importlib.util.spec_from_file_location(name, path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module
    try:
        mod_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_failed(spec: str, module_part: str, exc: Exception, folder: Path | None) -> str:
    """One line: what failed, and for a missing module, how to make it importable."""
    line = f"task {spec!r}: importing {module_part} failed: {one_line(exc, with_type=True)}"
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if missing is None:
        return line
    top = missing.split(".")[0]
    if folder is not None:
        return (
            f"{line} (lrtune imports {Path(module_part).name} with its folder {folder} on "
            f"sys.path: put {top}.py or the package {top}/ there, or install it in this Python)"
        )
    if module_part.split(".")[0] == top:
        return (
            f"{line} (run lrtune in the folder that holds {top}, add that folder to "
            f"PYTHONPATH, or name the file: path/to/{top}.py:function)"
        )
    return f"{line} (install {top} in this Python, or add the folder that holds it to PYTHONPATH)"


def accepts(factory: Callable[..., Any], params: Mapping[str, Any]) -> str | None:
    """The first of ``params`` that ``factory(seed, **params)`` cannot take; ``None`` when it
    takes them all (or its signature cannot be read)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    kinds = {p.kind for p in signature.parameters.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds:
        return None
    named = {
        n
        for n, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    first = next(iter(signature.parameters), None)
    return next((k for k in params if k not in named or k == first), None)


def _checked(factory: Callable[..., Any], label: str, folder: Path | None) -> Callable[..., Task]:
    def make(seed: int, **params: Any) -> Task:
        bad = accepts(factory, params) if params else None
        task = _call(factory, label, folder, seed, {} if bad else params)
        if bad is not None and task.fit is None:
            # A fit task reads them as hp.task; any other task needs its factory to take them.
            raise UserError(
                f"task {label}: [params.task] {bad}: the factory "
                f"{getattr(factory, '__name__', 'factory')}(seed, ...) takes no argument "
                f"{bad!r}: add it to the factory's signature, or read hp.task in a fit"
            )
        return task

    make.__name__ = getattr(factory, "__name__", "make")
    return make


def _call(
    factory: Callable[..., Any], label: str, folder: Path | None, seed: int, params: Any
) -> Task:
    try:
        with (
            folder_on_path(folder) if folder is not None else contextlib.nullcontext(),
            interrupt.immediate(),  # imports and data loading: Ctrl-C/SIGTERM stop at once
        ):
            task = factory(seed, **params)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"task {label}: the factory raised {type(exc).__name__}: {exc}".splitlines()[0]
        ) from exc
    check_task(task, label)
    return task
