"""``lrtune proxy``: serve a database to many workers through Optuna's gRPC storage proxy."""

from __future__ import annotations

import argparse
import sys

from lrtune.cli.common import Command, add_common, add_heartbeat, heartbeat_options, storage_url


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}")
    return int(text)


def _add_proxy(p: argparse.ArgumentParser) -> None:
    add_common(p, task=False, device=False, seed=False)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (0.0.0.0: every interface; the proxy has no "
        "authentication, so keep it on a private network)",
    )
    p.add_argument("--port", type=_port, required=True, help="port to listen on")
    add_heartbeat(p)  # the proxy fails (and re-queues) trials whose worker stopped beating


def _run_proxy(args: argparse.Namespace) -> int:
    from lrtune.proxy_server import POOL_SIZE, serve
    from lrtune.storage import mask_url, require_existing

    heartbeat = heartbeat_options(args)
    url = storage_url(args)
    require_existing(url)
    where = f"grpc://{args.host}:{args.port}"

    def ready() -> None:
        print(
            f"lrtune proxy: serving {mask_url(url)} at {where} with at most {POOL_SIZE + 1} "
            f"database connections; workers: --storage {where} (Ctrl-C to stop)",
            flush=True,
        )

    try:
        serve(url, host=args.host, port=args.port, on_ready=ready, **heartbeat)
    except KeyboardInterrupt:
        print("lrtune proxy: stopped", file=sys.stderr)
    return 0


COMMAND = Command(
    name="proxy",
    help="serve a storage to many workers through Optuna's gRPC proxy (few database connections)",
    examples=(
        "lrtune proxy --storage postgresql://user@db-host/lrtune --host 0.0.0.0 --port 13000",
        "lrtune proxy --storage postgresql://user@127.0.0.1/lrtune --port 13000",
    ),
    add=_add_proxy,
    run=_run_proxy,
)
