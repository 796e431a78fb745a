"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the services, the
healthcheck, the GPU reservation, the dashboard bound to 127.0.0.1, and every service's
command parses as a valid lrtune command line."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from lrtune.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
_VAR = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with open(REPO / "docker-compose.yml", encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict)
    return data


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR:-default}`` interpolation, with the defaults (or ``env``)."""

    def value(m: re.Match[str]) -> str:
        if env and m["name"] in env:
            return env[m["name"]]
        assert m["default"] is not None, f"${{{m['name']}}} has no default"
        return m["default"]

    return _VAR.sub(value, text)


def command_args(service: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    command = service["command"]
    words = (
        shlex.split(interpolate(command, env))
        if isinstance(command, str)
        else [interpolate(w, env) for w in command]
    )
    assert words[0] == "lrtune", words
    return words[1:]


def parse(service: dict[str, Any], env: dict[str, str] | None = None) -> argparse.Namespace:
    try:
        return build_parser().parse_args(command_args(service, env))
    except SystemExit as exc:  # argparse: a bad command line
        pytest.fail(f"{service['command']!r} is not a valid lrtune command line ({exc})")


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= {"postgres", "study", "worker", "dashboard"}


def test_postgres_volume_and_healthcheck(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    volume = pg["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    check = pg["healthcheck"]
    assert "pg_isready" in " ".join(check["test"])
    assert "ports" not in pg  # only the services on the compose network reach it
    # the password comes from the environment, with a default, never a literal secret
    assert pg["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-lrtune}"


def test_every_lrtune_service_uses_the_storage_from_env(compose: dict[str, Any]) -> None:
    for name in ("study", "worker", "dashboard"):
        service = compose["services"][name]
        url = service["environment"]["LRTUNE_STORAGE"]
        assert url.startswith("postgresql+psycopg://lrtune:${POSTGRES_PASSWORD:-lrtune}@postgres")
        assert "--storage" not in command_args(service)  # not on a command line (ps, logs)
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["build"] == "."


def test_study_is_one_shot_create_only(compose: dict[str, Any]) -> None:
    study = compose["services"]["study"]
    args = parse(study)
    assert args.command == "study"
    assert args.create_only is True
    assert args.spec and (REPO / args.spec).is_file()
    assert study["restart"] == "no"


def test_worker_joins_the_study_group_on_gpus(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker = services["worker"]
    for env in (None, {"LRTUNE_GROUP": "cifar", "LRTUNE_GPUS": "0,1,2,3"}):
        args = parse(worker, env)
        assert args.command == "worker"
        assert args.group == parse(services["study"], env).group  # the same group
        assert args.gpus
    assert parse(worker, {"LRTUNE_GPUS": "0,1,2,3"}).gpus == "0,1,2,3"
    assert worker["depends_on"]["study"]["condition"] == "service_completed_successfully"
    deploy = worker["deploy"]
    assert int(interpolate(str(deploy["replicas"]))) >= 1
    devices = deploy["resources"]["reservations"]["devices"]
    gpu = [d for d in devices if d.get("driver") == "nvidia"]
    assert gpu and "gpu" in gpu[0]["capabilities"]
    assert "count" in gpu[0] or "device_ids" in gpu[0]


def test_dashboard_only_on_localhost(compose: dict[str, Any]) -> None:
    dash = compose["services"]["dashboard"]
    args = parse(dash)
    assert args.command == "dashboard"
    assert args.host == "0.0.0.0"  # inside the container; the port is published below
    assert dash["ports"] == [f"127.0.0.1:{args.port}:{args.port}"]
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_no_secret_hard_coded(compose: dict[str, Any]) -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for m in re.finditer(r"postgresql\+psycopg://[^:]+:([^@]+)@", text):
        assert m[1].startswith("${"), m[0]


def test_dockerfile() -> None:
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M)
    assert base and base[1].startswith("python:") and "slim" in base[1]
    torch_at = text.index('TORCH_INDEX_URL"')
    project_at = text.index("pip install .")
    assert torch_at < project_at  # torch (CUDA build) first, then the project
    assert "download.pytorch.org/whl/cu" in text
    for path in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, re.M):
        for part in path.split():
            assert (REPO / part).exists() or part == "README.md", part
    assert re.search(r"^USER\s+(?!root)", text, re.M)  # not as root
