"""``lrtune export``: the group's confirmed winner, else a study's best trial (or the trial
``--trial`` names), as a production config (file, stdout or merged)."""

from __future__ import annotations

import argparse
import sys

from lrtune.cli.common import Command, add_common, non_negative_int, positive_int, storage_url
from lrtune.errors import UserError


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--study",
        required=True,
        metavar="NAME",
        help="the study to export: its group's confirmed winner when the group has one "
        "(`study --confirm`, the configuration with the best mean over fresh seeds), else "
        "the study's best finished trial",
    )
    p.add_argument(
        "--trial",
        type=non_negative_int,
        metavar="N",
        default=None,
        help="export trial N of the study instead (default: as --study says)",
    )
    p.add_argument(
        "--format",
        choices=("yaml", "json", "toml", "hf"),
        default=None,
        help="output format; hf: transformers TrainingArguments fields as Python (default: "
        "from the --out suffix, else yaml)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", metavar="PATH", default=None, help="write here (default: stdout)")
    where.add_argument(
        "--into",
        metavar="PATH[:dotted.key]",
        default=None,
        help="merge into this YAML/JSON/TOML config under the key, keeping everything else; "
        "prints the diff (default: no merge)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="B",
        help="rescale the LR to batch size B by the linear scaling rule (lr * B / trained) "
        "(default: the batch size trained with)",
    )
    p.add_argument("--dry-run", action="store_true", help="with --into: print the diff only")
    p.add_argument(
        "--weights",
        metavar="PATH",
        default=None,
        help="also write the exported trial's final model weights (a torch state_dict file: "
        "model.load_state_dict(torch.load(PATH))); the group's other trials' kept weights "
        "are then removed (default: none)",
    )
    p.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="with --weights: keep every trial's weights in the artifact store",
    )
    add_common(p, task=False, device=False, seed=False)


def _run_export(args: argparse.Namespace) -> int:
    from lrtune import export

    if args.dry_run and not args.into:
        raise UserError("--dry-run goes with --into PATH[:key]")
    if args.format == "hf" and args.into:
        raise UserError("--format hf writes Python for TrainingArguments: use --out, not --into")
    if args.keep_checkpoints and not args.weights:
        raise UserError("--keep-checkpoints goes with --weights PATH")
    if args.dry_run and args.weights:
        raise UserError("--dry-run writes nothing: leave out --weights")
    url = storage_url(args)
    config = export.export_config(url, args.study, batch_size=args.batch_size, trial=args.trial)
    if args.weights:
        from lrtune.export.weights import prepare_weights

        # Checked and copied beside PATH first: a mistake writes nothing.
        pending = prepare_weights(
            url, config["source"], args.weights, keep_all=args.keep_checkpoints
        )
        try:
            code = _write_config(args, config)
        except BaseException:
            pending.abort()
            raise
        removed = pending.commit()
        print(f"lrtune export: wrote weights {args.weights}", file=sys.stderr)
        if removed:
            print(
                f"lrtune export: removed the kept weights of {removed} other trial(s) "
                "(--keep-checkpoints keeps them)",
                file=sys.stderr,
            )
        return code
    return _write_config(args, config)


def _write_config(args: argparse.Namespace, config: dict) -> int:
    from lrtune import export

    if args.format == "hf":
        from lrtune.export.hf_args import hf_text

        return _write(hf_text(config), args.out)
    if args.into:
        diff = export.merge_into(args.into, config, dry_run=args.dry_run)
        sys.stdout.write(diff)
        if not diff:
            print(f"lrtune export: {args.into} already holds this config", file=sys.stderr)
        elif args.dry_run:
            print("lrtune export: dry run, nothing written", file=sys.stderr)
        return 0
    fmt: str = args.format or export.format_for_path(args.out or "") or "yaml"
    return _write(export.dump_config(config, fmt), args.out)


def _write(text: str, out: str | None) -> int:
    from lrtune import export

    if out:
        export.write_config(text, out)
        print(f"lrtune export: wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


COMMAND = Command(
    name="export",
    help="write the group's confirmed winner (else the study's best trial) as a production config",
    examples=(
        "lrtune export --study digits.tpe.rangetest --out best.yaml",
        "lrtune export --study digits.tpe.rangetest --trial 7",
        "lrtune export --study digits.tpe.rangetest --into train.yaml:optim --dry-run",
    ),
    add=_add_export,
    run=_run_export,
)
