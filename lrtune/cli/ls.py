"""``lrtune ls``: the studies in a storage with trials done/planned and the best value."""

from __future__ import annotations

import argparse

from lrtune.cli.common import Command, add_common, storage_url


def _add_ls(p: argparse.ArgumentParser) -> None:
    add_common(p, task=False, device=False, seed=False)
    p.add_argument("--group", help="only the studies of this group (default: all)")


def _run_ls(args: argparse.Namespace) -> int:
    from lrtune.search.listing import list_studies

    rows = list_studies(storage_url(args), group=args.group)
    if not rows:
        print("no studies")
        return 0
    header = ["study", "sampler", "prior", "trials", "best"]
    table = [header] + [
        [r["study"], r["sampler"], r["prior"], f"{r['done']}/{r['budget']}{r['unit']}", r["best"]]
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


COMMAND = Command(
    name="ls",
    help="the studies in a storage with trials done/planned and best value",
    examples=("lrtune ls", "lrtune ls --group digits --storage sqlite:///lrtune.db"),
    add=_add_ls,
    run=_run_ls,
)
