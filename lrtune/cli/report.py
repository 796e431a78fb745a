"""``lrtune report``: a group's comparison table and plots as Markdown and PNGs."""

from __future__ import annotations

import argparse

from lrtune.cli.common import Command, add_common, storage_url


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group", required=True, metavar="NAME", help="the group of studies")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="directory for report.md and the PNGs (created; the report's files replaced)",
    )
    add_common(p, task=False, device=False, seed=False)


def _run_report(args: argparse.Namespace) -> int:
    from lrtune.report import REPORT_FILES, write_report

    path = write_report(storage_url(args), args.group, args.out)
    pngs = [n for n in REPORT_FILES if n.endswith(".png") and (path.parent / n).is_file()]
    print(f"lrtune report: wrote {path} and {len(pngs)} plots ({', '.join(pngs)})")
    return 0


COMMAND = Command(
    name="report",
    help="comparison table and plots of a group",
    examples=("lrtune report --group digits --out report/",),
    add=_add_report,
    run=_run_report,
)
