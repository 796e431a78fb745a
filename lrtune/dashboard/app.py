"""optuna-dashboard on an lrtune storage: artifacts directory, study notes, the server.

Artifacts (the range-test plot, ...) are files, not rows, so they live beside the storage
in an Optuna :class:`~optuna.artifacts.FileSystemArtifactStore` chosen by
:func:`artifact_dir_for`; :func:`serve` hands the same store to optuna-dashboard so the
study page shows them. Notes written with :func:`write_study_note` are optuna-dashboard
notes (Markdown, on the study's Note page).

``optuna``, ``optuna_dashboard`` and SQLAlchemy are imported inside the functions so that
importing this module (and ``python -m lrtune --help``) stays fast.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrtune.dashboard.hosts import HostCheck, allowed_names
from lrtune.dashboard.s3 import PrefixedStore, is_s3, s3_store
from lrtune.errors import UserError
from lrtune.storage import open_storage, sqlite_path

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore

ARTIFACTS_ENV = "LRTUNE_ARTIFACTS"
"""Environment variable naming the artifacts directory, or an S3 location
``s3://bucket/prefix`` (wins over the default place)."""

DEFAULT_ARTIFACT_DIR = "lrtune-artifacts"
"""Artifacts directory (relative to the working directory) for non-SQLite storages."""

ARTIFACT_SUFFIX = ".artifacts"
"""A SQLite storage ``path/x.db`` keeps its artifacts in ``path/x.db.artifacts/``."""

_POOL_SIZE = 4
"""Connections per dashboard process (its server answers requests in threads)."""


def artifact_dir_for(storage_url: str) -> Path:
    """Where lrtune keeps the Optuna artifacts (range-test plots, ...) of a storage.

    ``$LRTUNE_ARTIFACTS`` when set (use it for PostgreSQL shared by several machines: point
    it at a shared directory, or at S3: then :func:`artifact_store` is the bucket and this
    directory is not used); else, for ``sqlite:///path/x.db``, ``path/x.db.artifacts``
    next to the database file; else ``./lrtune-artifacts``. Returns an absolute path; the
    directory is not created here.
    """
    env = os.environ.get(ARTIFACTS_ENV)
    if env:
        return Path(env).expanduser().resolve()
    db = sqlite_path(storage_url)
    if db is not None:
        return db.with_name(db.name + ARTIFACT_SUFFIX).resolve()
    return Path(DEFAULT_ARTIFACT_DIR).resolve()


def artifact_location(storage_url: str) -> str:
    """Where the artifacts of ``storage_url`` are, for messages: ``$LRTUNE_ARTIFACTS`` when
    it names S3 (``s3://bucket/prefix``), else :func:`artifact_dir_for`."""
    env = os.environ.get(ARTIFACTS_ENV, "")
    return env if is_s3(env) else str(artifact_dir_for(storage_url))


def artifact_store(
    storage_url: str, *, create: bool = True
) -> FileSystemArtifactStore | PrefixedStore:
    """The Optuna artifact store of ``storage_url``: an S3 bucket through Optuna's
    ``Boto3ArtifactStore`` when ``$LRTUNE_ARTIFACTS`` is ``s3://bucket/prefix``
    (:mod:`lrtune.dashboard.s3`), else the
    :class:`optuna.artifacts.FileSystemArtifactStore` over :func:`artifact_dir_for`.

    Creates the directory unless ``create`` is False. Upload with
    ``optuna.artifacts.upload_artifact(study_or_trial=study, file_path=...,
    artifact_store=artifact_store(url))``.
    """
    from optuna.artifacts import FileSystemArtifactStore

    env = os.environ.get(ARTIFACTS_ENV, "")
    if is_s3(env):
        return s3_store(env)
    path = artifact_dir_for(storage_url)
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create the artifacts directory {path}: {exc.strerror}; "
                f"set ${ARTIFACTS_ENV} to a writable directory"
            ) from None
    return FileSystemArtifactStore(path)


def write_study_note(study: optuna.Study, markdown: str) -> None:
    """Replace the optuna-dashboard note of ``study`` (Markdown, on the study's Note page)."""
    from optuna_dashboard import save_note

    save_note(study, markdown)


def dashboard_url(host: str, port: int) -> str:
    """The URL a browser opens for a server listening on ``host:port``."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/dashboard"


def serve(
    storage_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    quiet: bool = False,
    on_ready: Callable[[str], None] | None = None,
    allow_hosts: Sequence[str] = (),
) -> None:
    """Serve optuna-dashboard on ``storage_url`` until interrupted (blocks).

    The app is optuna-dashboard's own (``optuna_dashboard.wsgi``, the one
    ``optuna_dashboard.run_server`` runs) with the storage's artifact store wired in, served
    by a threaded ``wsgiref`` server as the ``optuna-dashboard`` command does; that lets
    lrtune report a busy port as a :class:`UserError` and silence the request log
    (``quiet``). ``on_ready(url)`` is called once the port is bound, before serving.

    The app is wrapped in :class:`~lrtune.dashboard.hosts.HostCheck`: a request whose
    ``Host`` is not this server's (DNS rebinding) or a browser's write from another origin
    gets 403; ``allow_hosts`` adds names to serve (and trust as origins), e.g. a proxy's.
    KeyboardInterrupt propagates after the socket is closed.
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    storage = open_storage(storage_url, readonly=True, pool_size=_POOL_SIZE)
    store = artifact_store(storage_url, create=False)

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class _Handler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            if not quiet:
                super().log_message(format, *args)

    try:  # make_server's two steps, so the app is built only once the port is bound
        httpd = _Server((host, port), _Handler)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UserError(
            f"cannot listen on {host}:{port}: {reason}; pick another --port or --host"
        ) from None
    try:
        # optuna-dashboard (and its web stack) is imported only once the storage opened and
        # the port is bound: the error paths stay fast and light.
        import optuna_dashboard

        app = optuna_dashboard.wsgi(storage, artifact_store=store)
        httpd.set_app(HostCheck(app, allowed_names(host, allow_hosts), allow_hosts))
        if on_ready is not None:
            on_ready(dashboard_url(host, httpd.server_port))
        httpd.serve_forever()
    finally:
        httpd.server_close()
