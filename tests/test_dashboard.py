"""``lrtune dashboard``: optuna-dashboard served on an lrtune storage, checked over HTTP and
in headless Chromium (Debian's ``/usr/bin/chromium``, driven by playwright).

The studies come from a real ``lrtune study`` run (in-process, tiny: TPE with the
range-test prior, 3 trials of 2 epochs), so the note, the range-test plot artifact, the
metric name and the Plotly graphs the dashboard shows are the ones lrtune itself writes.
The server is a real ``python -m lrtune dashboard`` subprocess on a free loopback port,
started once for the module.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest

from lrtune import cli
from lrtune.dashboard import artifact_dir_for, artifact_store

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STUDY = "digits.tpe.rangetest"
TRIALS = 3
# One range-test seed and two schedules keep the run small (a few seconds of training).
SPEC = """\
task = "digits"
rangetest_seeds = 1
schedules = ["cosine", "onecycle"]
"""
SERVER_START_S = 60.0
PROXY_NAME = "lr.team.example"  # the server is started with --allow-host PROXY_NAME
BROWSER_TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class Made:
    """What the ``lrtune study`` run left in the storage, as the tests expect to see it."""

    artifact_id: str
    png: bytes
    trials: list[tuple[float, str]]  # (lr, schedule) of each trial, by number
    bounds: tuple[float, float]  # the range test's search bounds
    diagnosis: str  # the range test's


def _make_study(storage_url: str) -> Made:
    """Run a real ``lrtune study`` into ``storage_url``: group ``digits``, TPE with the
    range-test prior, 3 trials of 2 epochs. lrtune itself writes the study note and attaches
    the range-test plot as an Optuna artifact."""
    db = Path(storage_url.removeprefix("sqlite:///"))
    spec = db.with_name("tiny.toml")
    spec.write_text(SPEC, encoding="utf-8")
    args = ["study", "--spec", str(spec), "--prior", "rangetest", "--samplers", "tpe"]
    args += ["--trials", str(TRIALS), "--epochs", "2", "--device", "cpu"]
    assert cli.main([*args, "--storage", storage_url]) == 0
    study = optuna.load_study(study_name=STUDY, storage=storage_url)
    artifact_id = str(study.user_attrs["rangetest_plot_artifact"])
    png = (artifact_dir_for(storage_url) / artifact_id).read_bytes()
    trials = [(float(t.params["lr"]), str(t.params["schedule"])) for t in study.trials]
    rt = study.user_attrs["rangetest"]
    return Made(artifact_id, png, trials, (rt["lr_low"], rt["lr_high"]), rt["diagnosis"])


def _js_number(value: float) -> str:
    """``value`` as JavaScript's ``String(number)`` writes it (what the dashboard shows)."""
    text = repr(float(value))
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa.removesuffix('.0')}e{'-' if exponent[0] == '-' else '+'}"
        text += exponent.lstrip("+-").lstrip("0")
    return text.removesuffix(".0")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def _get_json(url: str) -> Any:
    return json.loads(_get(url))


@dataclass(frozen=True)
class Server:
    base: str
    storage_url: str
    made: Made
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``python -m lrtune dashboard`` on a fresh SQLite storage, until the module ends."""
    tmp = tmp_path_factory.mktemp("dashboard")
    storage_url = f"sqlite:///{tmp / 'lrtune.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("LRTUNE_ARTIFACTS", raising=False)
        mp.chdir(tmp)
        made = _make_study(storage_url)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("LRTUNE_ARTIFACTS", "LRTUNE_STORAGE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    log = tmp / "server.log"
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lrtune",
                "dashboard",
                "--storage",
                storage_url,
                "--port",
                str(port),
                "--quiet",
                "--allow-host",
                PROXY_NAME,
            ],
            cwd=tmp,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dashboard exited with {proc.returncode}: {log.read_text()}")
            try:
                _get(f"{base}/api/studies", timeout=1.0)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"dashboard not up after {SERVER_START_S}s: {log.read_text()}")
                time.sleep(0.1)
        yield Server(base, storage_url, made, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _study_id(server: Server) -> int:
    studies = _get_json(f"{server.base}/api/studies")["study_summaries"]
    (study,) = [s for s in studies if s["study_name"] == STUDY]
    return int(study["study_id"])


def test_artifact_dir_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LRTUNE_ARTIFACTS", raising=False)
    db = tmp_path / "runs" / "x.db"
    assert artifact_dir_for(f"sqlite:///{db}") == db.with_name("x.db.artifacts")
    assert artifact_dir_for(f"sqlite:///{db}?timeout=30") == db.with_name("x.db.artifacts")
    monkeypatch.chdir(tmp_path)
    assert artifact_dir_for("sqlite:///rel.db") == tmp_path / "rel.db.artifacts"
    assert artifact_dir_for("postgresql+psycopg://u:p@h/db") == tmp_path / "lrtune-artifacts"
    monkeypatch.setenv("LRTUNE_ARTIFACTS", str(tmp_path / "shared"))
    assert artifact_dir_for("postgresql+psycopg://u:p@h/db") == tmp_path / "shared"
    assert artifact_dir_for(f"sqlite:///{db}") == tmp_path / "shared"
    store_dir = tmp_path / "shared"
    assert not store_dir.exists()
    artifact_store(f"sqlite:///{db}")
    assert store_dir.is_dir()


@pytest.mark.slow
def test_server_lists_study_with_note_and_artifact(server: Server) -> None:
    study_id = _study_id(server)
    detail = _get_json(f"{server.base}/api/studies/{study_id}")
    assert detail["name"] == STUDY
    assert len(detail["trials"]) == TRIALS
    # The note lrtune wrote: the study's settings, then the group's comparison table.
    note = detail["note"]["body"]
    assert note.startswith(f"## {STUDY}\n"), note
    assert "sampler **tpe**, prior **rangetest**, LR bounds" in note
    assert "### Comparison of the group" in note
    assert "| study | trials | best val_loss |" in note and f"{TRIALS}/{TRIALS}" in note
    # The range-test plot lrtune attached as a study artifact.
    artifacts = detail["artifacts"]
    assert [a["artifact_id"] for a in artifacts] == [server.made.artifact_id]
    assert artifacts[0]["filename"] == "rangetest.png"
    assert server.made.png[:8] == b"\x89PNG\r\n\x1a\n"
    # The artifact store is wired in: the dashboard serves the PNG itself.
    assert _get_json(f"{server.base}/api/meta")["artifact_is_available"] is True
    got = _get(f"{server.base}/artifacts/{study_id}/{server.made.artifact_id}")
    assert got == server.made.png
    # The metric's name (Optuna's metric_names), and lrtune's two Plotly graphs, each once.
    assert detail["objective_names"] == ["val_loss"]
    graphs = {g["id"]: json.loads(g["graph_object"]) for g in detail["plotly_graph_objects"]}
    expected = ["lrtune-best-so-far", "lrtune-intermediate", "lrtune-rangetest"]
    # ... and the importances, once the study has enough complete trials for them.
    assert sorted(set(graphs) - {"lrtune-importance"}) == expected
    yaxis = graphs["lrtune-intermediate"]["layout"]["yaxis"]["title"]["text"]
    assert yaxis == "val_loss"  # the metric, where the dashboard's own plot says Objective Value
    title = graphs["lrtune-rangetest"]["layout"]["title"]["text"]
    assert title == f"LR range test (sgd): {server.made.diagnosis}"
    first = server.log.read_text().splitlines()[0]
    assert first.startswith("lrtune dashboard: open http://127.0.0.1:"), first
    assert "/dashboard" in first


def _request(
    server: Server, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, bytes]:
    """A real HTTP request to the running server with the given headers (``Host`` too)."""
    parts = urllib.parse.urlsplit(server.base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in {**headers, "Content-Length": str(len(data or b""))}.items():
            conn.putheader(key, value)
        if data is not None:
            conn.putheader("Content-Type", "application/json")
        conn.endheaders(data)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _names(server: Server) -> list[str]:
    return sorted(
        s["study_name"] for s in _get_json(f"{server.base}/api/studies")["study_summaries"]
    )


def test_dns_rebinding_and_cross_origin_writes_are_refused(server: Server) -> None:
    # A web page whose name was re-pointed at 127.0.0.1 (DNS rebinding) reaches the port
    # with its own Host and Origin: it may neither read, create nor delete anything.
    study_id = _study_id(server)
    before = _names(server)
    evil = {"Host": "attacker.example", "Origin": "http://attacker.example"}
    new = {"study_name": "rebound", "directions": ["minimize"]}
    own = urllib.parse.urlsplit(server.base).netloc
    for method, path, headers, body in [
        ("GET", "/api/studies", evil, None),
        ("POST", "/api/studies", evil, new),
        ("DELETE", f"/api/studies/{study_id}", evil, None),
        ("POST", f"/api/studies/{study_id}/rename", evil, {"study_name": "x"}),
        # the right Host, but a write from another page (classic CSRF), or from another
        # port of the same machine
        ("POST", "/api/studies", {"Host": own, "Origin": "http://attacker.example"}, new),
        ("DELETE", f"/api/studies/{study_id}", {"Host": own, "Origin": "null"}, None),
        ("DELETE", f"/api/studies/{study_id}", {"Host": own, "Origin": "http://127.0.0.1:1"}, None),
        ("POST", "/api/studies", {"Host": own, "Sec-Fetch-Site": "cross-site"}, new),
    ]:
        status, text = _request(server, method, path, headers, body)
        assert status == 403, (method, path, headers, status, text)
        assert STUDY.encode() not in text
    assert _names(server) == before  # nothing created, renamed or deleted
    assert _get_json(f"{server.base}/api/studies/{study_id}")["name"] == STUDY


def test_same_origin_writes_and_local_names_still_work(server: Server) -> None:
    own = urllib.parse.urlsplit(server.base).netloc
    port = own.rsplit(":", 1)[1]
    for host in (own, f"localhost:{port}", "127.0.0.1", PROXY_NAME, f"{PROXY_NAME}:443"):
        status, text = _request(server, "GET", "/api/studies", {"Host": host})
        assert status == 200 and STUDY.encode() in text, (host, status)
    # What the dashboard's own page sends: its Origin is the server's address.
    page = {"Host": own, "Origin": server.base, "Sec-Fetch-Site": "same-origin"}
    new = {"study_name": "made-in-the-page", "directions": ["minimize"]}
    status, text = _request(server, "POST", "/api/studies", page, new)
    assert status == 201, text
    made = json.loads(text)["study_summary"]["study_id"]
    # A script without Origin (curl) is no cross-site request either.
    status, _ = _request(server, "DELETE", f"/api/studies/{made}", {"Host": own})
    assert status == 204
    # Through the team's proxy (--allow-host): its name as Host and as the page's Origin.
    proxy = {"Host": PROXY_NAME, "Origin": f"https://{PROXY_NAME}"}
    status, text = _request(server, "POST", "/api/studies", proxy, new)
    assert status == 201, text
    made = json.loads(text)["study_summary"]["study_id"]
    status, _ = _request(server, "DELETE", f"/api/studies/{made}", proxy)
    assert status == 204
    assert "made-in-the-page" not in _names(server)


def test_allow_host_serves_a_proxy_name(tmp_path: Path) -> None:
    # Behind a team's proxy the Host (and the page's Origin) is the proxy's name.
    from lrtune.dashboard.hosts import HostCheck, allowed_names

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    def status(check: HostCheck, method: str, host: str, origin: str | None = None) -> str:
        got: list[str] = []
        environ = {"REQUEST_METHOD": method, "HTTP_HOST": host}
        if origin is not None:
            environ["HTTP_ORIGIN"] = origin
        list(check(environ, lambda s, h: got.append(s)))
        return got[0][:3]

    plain = HostCheck(app, allowed_names("127.0.0.1"))
    proxied = HostCheck(app, allowed_names("127.0.0.1", ["lr.team.example"]), ["lr.team.example"])
    assert status(plain, "GET", "lr.team.example") == "403"
    assert status(proxied, "GET", "lr.team.example") == "200"
    assert status(proxied, "GET", "LR.Team.Example.:443") == "200"
    # the proxy may rewrite Host to the upstream address; the page's Origin is trusted
    assert status(proxied, "DELETE", "127.0.0.1:8080", "https://lr.team.example") == "200"
    assert status(proxied, "DELETE", "lr.team.example", "https://lr.team.example") == "200"
    assert status(proxied, "DELETE", "lr.team.example", "https://evil.example") == "403"
    assert status(proxied, "GET", "attacker.example") == "403"
    # every interface: the machine's own name is served, IP addresses always are
    wild = HostCheck(app, allowed_names("0.0.0.0"))
    assert status(wild, "GET", f"{socket.gethostname()}:8080") == "200"
    assert status(wild, "GET", "[::1]:8080") == "200" and status(wild, "GET", "10.1.2.3") == "200"
    assert status(wild, "GET", "attacker.example:8080") == "403"


@pytest.mark.browser
@pytest.mark.slow
def test_browser_shows_study_and_trial_table(server: Server) -> None:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("playwright missing: pip install playwright (the Python package only)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(
            f"no Chromium at {CHROMIUM}: install Debian's with "
            "`apt-get update && apt-get install -y chromium` (not `playwright install`)"
        )
    study_id = _study_id(server)
    study_page = f"{server.base}/dashboard/studies/{study_id}"
    shots = REPO / "test-artifacts"
    shots.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            expect.set_options(timeout=BROWSER_TIMEOUT_MS)

            # The study list.
            page.goto(f"{server.base}/dashboard")
            expect(page.get_by_role("link", name=STUDY).first).to_be_visible()

            # "Trials (List)": every trial with its lr and schedule. (optuna-dashboard 0.21
            # still routes /trialTable but renders nothing there.)
            page.goto(f"{study_page}/trials")
            expect(page.get_by_text(f"{TRIALS} Trials")).to_be_visible()
            lr, schedule = server.made.trials[0]  # the list opens on the first trial
            expect(page.get_by_text(f"lr {_js_number(lr)}", exact=True)).to_be_visible()
            expect(page.get_by_text(f"schedule {schedule}", exact=True).first).to_be_visible()
            page.screenshot(path=str(shots / "dashboard.png"))

            # The study page: the metric's name where Optuna says "Objective 0" without one
            # (the History plot's y axis and its selector).
            page.goto(study_page)
            expect(page.locator("#plot-history .ytitle")).to_have_text("val_loss")
            expect(page.get_by_text("Objective 0")).to_have_count(0)
            # lrtune's interactive graphs, drawn by Plotly: the range test with its bounds
            # shaded and labelled, and the group's best-so-far lines.
            graph = page.locator('[id="user-defined-plot:lrtune-rangetest"]')
            expect(graph).to_have_class(re.compile(r"\bjs-plotly-plot\b"))
            expect(graph.locator(".gtitle")).to_have_text(
                f"LR range test (sgd): {server.made.diagnosis}"
            )
            low, high = server.made.bounds
            expect(graph.locator("text", has_text=f"bounds {low:.3g} … {high:.3g}")).to_be_visible()
            expect(graph.locator(".legendtext", has_text="valley")).to_be_visible()
            expect(graph.locator(".scatterlayer .trace")).to_have_count(4)  # 1 seed + 3 marks
            best = page.locator('[id="user-defined-plot:lrtune-best-so-far"]')
            expect(best).to_have_class(re.compile(r"\bjs-plotly-plot\b"))
            expect(best.locator(".gtitle")).to_have_text("Best val_loss so far: group digits")
            expect(best.locator(".legendtext")).to_have_text(["tpe × rangetest"])
            graph.scroll_into_view_if_needed()
            graph.screenshot(path=str(shots / "dashboard-rangetest.png"))

            # The range-test plot, an artifact served from the store.
            img = page.get_by_role("img", name="rangetest.png")
            img.scroll_into_view_if_needed()
            expect(img).to_be_visible()
            page.wait_for_function(
                "i => i.complete && i.naturalWidth > 0", arg=img.element_handle()
            )
            width = struct.unpack(">I", server.made.png[16:20])[0]
            assert img.evaluate("i => i.naturalWidth") == width
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(shots / "dashboard-study.png"), full_page=True)

            # The note page: the note lrtune wrote, rendered as Markdown (with the table).
            page.goto(f"{study_page}/note")
            expect(page.get_by_role("heading", name="Comparison of the group")).to_be_visible()
            expect(page.get_by_role("columnheader", name="schedule", exact=True)).to_be_visible()
        finally:
            browser.close()


def test_bad_port_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for port in ("0", "70000", "http"):
        with pytest.raises(SystemExit) as info:
            cli.main(["dashboard", "--port", port])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert "--port" in err and "1..65535" in err


def test_unreachable_storage_is_one_line_exit_2_without_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql+psycopg://u:secret@127.0.0.1:1/db"
    assert cli.main(["dashboard", "--storage", url, "--port", str(_free_port())]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("lrtune dashboard: error: cannot open storage")
    assert "secret" not in err and "u:***@127.0.0.1:1/db" in err


def test_missing_sqlite_file_is_one_line_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "missing.db"
    assert cli.main(["dashboard", "--storage", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no storage at" in err, err
    assert list(tmp_path.iterdir()) == []


def test_busy_port_is_one_line_exit_2(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    port = server.base.rsplit(":", 1)[1]
    assert cli.main(["dashboard", "--storage", server.storage_url, "--port", port]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err, err


def test_help_lists_dashboard() -> None:
    parser = cli.build_parser()
    assert "dashboard" in parser.format_help()
