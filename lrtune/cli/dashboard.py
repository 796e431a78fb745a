"""``lrtune dashboard``: serve optuna-dashboard on the storage."""

from __future__ import annotations

import argparse
import re
import sys

from lrtune.cli.common import Command, add_common, storage_url


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}")
    return value


def _host_name(text: str) -> str:
    name = text.strip().rstrip(".")
    if not re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_.\-]*[A-Za-z0-9_])?", name) or ".." in name:
        raise argparse.ArgumentTypeError(
            f"expected a host name such as dash.example.org (no scheme, port or path), got {text!r}"
        )
    return name


def _add_dashboard(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface)",
    )
    p.add_argument("--port", type=_port, default=8080, help="port to listen on")
    p.add_argument("--quiet", "-q", action="store_true", help="no request log on stderr")
    p.add_argument(
        "--allow-host",
        type=_host_name,
        action="append",
        default=[],
        metavar="NAME",
        help="also serve requests for this host name (repeatable), e.g. the name a team's "
        "proxy forwards; without it the dashboard answers only to its own address, "
        "localhost and IP addresses (a guard against DNS rebinding)",
    )
    add_common(p, task=False, device=False, seed=False)


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
        dashboard.serve(
            url,
            host=args.host,
            port=args.port,
            quiet=args.quiet,
            on_ready=ready,
            allow_hosts=args.allow_host,
        )
    except KeyboardInterrupt:
        print("lrtune dashboard: stopped", file=sys.stderr)
    return 0


COMMAND = Command(
    name="dashboard",
    help="serve optuna-dashboard on the storage",
    examples=(
        "lrtune dashboard",
        "lrtune dashboard --storage postgresql://user@db-host/lrtune --host 0.0.0.0 --port 8080",
        "lrtune dashboard --allow-host lrtune.team.example",
    ),
    add=_add_dashboard,
    run=_run_dashboard,
)
