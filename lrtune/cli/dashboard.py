"""``lrtune dashboard``: serve optuna-dashboard on the storage."""

from __future__ import annotations

import argparse
import sys

from lrtune.cli.common import Command, _add_common, storage_url


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}")
    return value


def _add_dashboard(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface)",
    )
    p.add_argument("--port", type=_port, default=8080, help="port to listen on")
    p.add_argument("--quiet", "-q", action="store_true", help="no request log on stderr")
    _add_common(p, task=False, device=False, seed=False)


def _run_dashboard(args: argparse.Namespace) -> int:
    from lrtune import dashboard
    from lrtune.storage import mask_url

    url = storage_url(args)

    def ready(address: str) -> None:
        print(
            f"lrtune dashboard: open {address} (storage {mask_url(url)}; Ctrl-C to stop)",
            flush=True,
        )

    try:
        dashboard.serve(url, host=args.host, port=args.port, quiet=args.quiet, on_ready=ready)
    except KeyboardInterrupt:
        print("lrtune dashboard: stopped", file=sys.stderr)
    return 0


COMMAND = Command(
    "dashboard",
    "serve optuna-dashboard on the storage",
    (
        "lrtune dashboard",
        "lrtune dashboard --storage postgresql://user@db-host/lrtune --host 0.0.0.0 --port 8080",
    ),
    _add_dashboard,
    _run_dashboard,
)
