"""``lrtune report``: a group's comparison table and plots, as ``report.md`` and PNGs.

:func:`write_report` reads the group's studies from the storage (nothing is written
there), checks that the group exists and has a finished trial, then draws every figure into
a fresh temporary directory next to the output directory and moves the files into place
only once all of them are written: a failure leaves no half-written report behind.

Figures (see :mod:`lrtune.report.figures` and :mod:`lrtune.rangetest.plot`):

- ``best-so-far.png``: best value so far against finished trials, per sampler × prior
  (median and IQR band over repeats);
- ``rangetest.png``: the stored range-test curve with the search bounds it gave;
- ``schedule.png``: the best trial's LR at every optimizer step (log scale);
- ``importances.png``: Optuna's parameter importances of the best study that has
  :data:`~lrtune.report.gather.MIN_IMPORTANCE_TRIALS` complete trials;
- ``lr-vs-value.png``: every trial's LR against its value, per prior.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from lrtune.errors import UserError, mask_url
from lrtune.report.sections import (
    BEST_SO_FAR_PNG,
    IMPORTANCES_PNG,
    RANGETEST_PNG,
    REPORT_FILE,
    SCATTER_PNG,
    SCHEDULE_PNG,
    render,
)
from lrtune.shell import command_line

REPORT_FILES = (
    REPORT_FILE,
    BEST_SO_FAR_PNG,
    RANGETEST_PNG,
    SCHEDULE_PNG,
    IMPORTANCES_PNG,
    SCATTER_PNG,
)
"""Every file a report may hold; files of an earlier report that this one lacks are removed."""


def write_report(storage_url: str, group: str, out_dir: str | os.PathLike[str]) -> Path:
    """Write the report of ``group`` in ``storage_url`` into ``out_dir``; returns report.md.

    ``out_dir`` is created (with its parents) if needed; the report's files in it are
    replaced, other files are left alone. Raises :class:`UserError` for a storage that cannot
    be opened, an unknown group, a group without a complete trial, or an ``out_dir`` that is
    a file. Nothing is written before those checks pass.
    """
    import optuna

    from lrtune.group.compare import compare_group
    from lrtune.search.states import group_study_names
    from lrtune.storage import open_storage

    out = Path(out_dir)
    _check_out_dir(out)
    storage = open_storage(storage_url, readonly=True)
    names = group_study_names(storage, group)
    if not names:
        groups = sorted(
            {
                str(s.user_attrs["group"])
                for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
                if "group" in s.user_attrs
            }
        )
        hint = f"groups there: {', '.join(groups)}" if groups else "it holds no lrtune group"
        raise UserError(f"no group {group!r} in {mask_url(storage_url)}; {hint}")
    cmp = compare_group(storage, group)
    if cmp.best is None or cmp.best_row is None:
        raise UserError(
            f"group {group!r} has no complete trial yet: run `lrtune study` or "
            f"`{command_line('worker', '--group', group)}` first"
        )
    studies = {n: optuna.load_study(study_name=n, storage=storage) for n in names}

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:  # /proc, /sys, a read-only mount, no permission...
        raise UserError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the report is an ordinary directory
    try:
        text = render(tmp, cmp, studies, group)
        (tmp / REPORT_FILE).write_text(text, encoding="utf-8")
        _move_into_place(tmp, out)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / REPORT_FILE


def _check_out_dir(out: Path) -> None:
    """Refuse an ``out`` that is a file or lies under one, before anything is read."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out}: {parent} is a file, not a directory")
            return


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; if ``out`` exists, replace the report's files in it."""
    if not out.exists():
        try:
            os.rename(tmp, out)
            return
        except OSError:  # created meanwhile: merge below
            pass
    out.mkdir(parents=True, exist_ok=True)
    written = {p.name for p in tmp.iterdir()}
    for name in REPORT_FILES:
        if name not in written and (out / name).is_file():
            (out / name).unlink()
    for name in sorted(written, key=lambda n: n == REPORT_FILE):  # report.md last
        os.replace(tmp / name, out / name)
