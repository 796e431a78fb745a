"""Regenerate the tutorial and the main job's output from a real run, so they cannot drift.

    python docs/tools/tutorial.py              # rerun everything, rewrite the pages
    python docs/tools/tutorial.py --no-main-job --no-screenshots   # the tutorial's text only

It runs the tutorial's commands (``docs/tutorial.md``) in an empty temporary directory, as a
user would, and writes their output between the page's ``<!-- run:NAME -->`` and
``<!-- /run -->`` markers; copies the report's figures to ``docs/img/report-digits/``; takes
the dashboard screenshots with headless Chromium; and reruns the main job of the README
(``python -m lrtune study --prior rangetest`` in another empty directory) into the README
and ``docs/reference/comparison.md``. Prose around the markers says nothing a rerun could
change. ``tests/test_tutorial.py`` reruns the commands and checks that the pages still have
the shape of what they print (same lines, numbers aside).

Run it with ``OMP_NUM_THREADS=1`` on a quiet machine; it takes a few minutes of CPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
COMPARISON = ROOT / "docs" / "reference" / "comparison.md"
README = ROOT / "README.md"
IMG = ROOT / "docs" / "img"

MAIN_JOB = ("study", "--prior", "rangetest")
STUDY = ("study", "--prior", "rangetest,none", "--trials", "10")
REPORT = ("report", "--group", "digits", "--out", "report-digits")
CHROMIUM = "/usr/bin/chromium"

#: The Python a user adds to their training script (the tutorial's last step), run as is.
LOAD_SNIPPET = """\
import torch
import lrtune

cfg = lrtune.load_config("lr.yaml")
model = torch.nn.Linear(64, 10)                 # your model
opt = cfg.build_optimizer(model.parameters())
sched = cfg.build_scheduler(opt, total_steps=200)
print(type(opt).__name__, cfg.schedule["name"], "peak lr", f"{cfg.lr:.3g}")
for step in range(200):
    if step % 40 == 0:
        print(f"step {step:3d}: lr {sched.get_last_lr()[0]:.3g}")
    opt.step()                                  # after loss.backward()
    sched.step()
"""


@dataclass(frozen=True, kw_only=True)
class Run:
    """One command as the page shows it, and what it printed (stdout and stderr)."""

    shown: str
    output: str
    seconds: float

    def markdown(self, lang: str = "console") -> str:
        if lang == "yaml":  # a file's content, not a command line
            return f"```yaml\n{self.output.rstrip()}\n```"
        return f"```{lang}\n$ {self.shown}\n{self.output.rstrip()}\n```"


def _env() -> dict[str, str]:
    # This checkout's lrtune, whatever is installed; no colour, no terminal progress.
    return dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="120")


def run(argv: list[str], cwd: Path, shown: str | None = None) -> Run:
    """Run ``python -m lrtune ARGV`` in ``cwd``; fail loudly on a non-zero exit."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "lrtune", *argv],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=3600,
    )
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"lrtune {shlex.join(argv)} exited {proc.returncode}:\n{proc.stdout}")
    return Run(
        shown=shown or shlex.join(["python", "-m", "lrtune", *argv]),
        output=proc.stdout,
        seconds=seconds,
    )


def export_command(study_output: str) -> list[str]:
    """The ``export:`` command the study printed, writing ``lr.yaml``."""
    line = next(x for x in study_output.splitlines() if x.startswith("export:"))
    argv = shlex.split(line.removeprefix("export:").strip())
    assert argv[:2] == ["lrtune", "export"], line
    return [*argv[1:], "--out", "lr.yaml"]


def run_tutorial(workdir: Path) -> dict[str, Run]:
    """Every command of the tutorial, in order, in ``workdir`` (empty: a fresh storage)."""
    runs: dict[str, Run] = {}
    runs["study"] = run(list(STUDY), workdir)
    runs["ls"] = run(["ls"], workdir)
    runs["report"] = run(list(REPORT), workdir)
    runs["export"] = run(export_command(runs["study"].output), workdir)
    yaml_text = (workdir / "lr.yaml").read_text()
    runs["lr-yaml"] = Run(shown="cat lr.yaml", output=yaml_text, seconds=0.0)
    (workdir / "load.py").write_text(LOAD_SNIPPET)
    proc = subprocess.run(
        [sys.executable, "load.py"], cwd=workdir, env=_env(), capture_output=True, text=True,
        timeout=600, check=True,
    )  # fmt: skip
    runs["load"] = Run(shown="python load.py", output=proc.stdout, seconds=0.0)
    return runs


# --------------------------------------------------------------------------- pages


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- run:{name} -->", "<!-- /run -->"


def blocks(page: str) -> dict[str, str]:
    """The generated blocks of a page, by name (their text between the markers)."""
    found = {}
    for m in re.finditer(r"<!-- run:([\w-]+) -->\n(.*?)\n<!-- /run -->", page, flags=re.S):
        found[m.group(1)] = m.group(2).strip("\n")
    return found


def fill(page: str, name: str, text: str) -> str:
    """``page`` with block ``name`` replaced by ``text``."""
    start, end = _markers(name)
    pattern = re.escape(start) + r"\n.*?\n" + re.escape(end)
    if not re.search(pattern, page, flags=re.S):
        raise SystemExit(f"no {start} … {end} block in the page")
    # Blank lines around the text: markdown then reads it as a block of its own.
    return re.sub(pattern, lambda _m: f"{start}\n\n{text}\n\n{end}", page, count=1, flags=re.S)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def shape(text: str) -> list[str]:
    """What must not change between two runs of the same commands: each line with numbers,
    schedule names, trial and study numbers masked, spaces collapsed. Lines that name a
    study, a schedule or a timestamp keep their first words, so a run with other winners
    still has the same shape; a new line, a lost line or a renamed label does not."""
    from lrtune.schedules.params import SCHEDULES

    schedules = "|".join(sorted(SCHEDULES, key=len, reverse=True))
    lines = []
    for line in text.strip("\n").splitlines():
        line = re.sub(rf"\b({schedules})\b", "S", line)
        line = re.sub(r"digits\.(grid|random|tpe)\.(rangetest|none)", "STUDY", line)
        line = _NUMBER.sub("#", line)
        line = re.sub(r"(?<=\s)-(?=\s|$)", "#", line)  # '-' in a number column
        line = re.sub(r"'?#-#-#T#:#:#\+#:#'?", "TIME", line)
        lines.append(" ".join(line.replace("*", " ").split()))
    return lines


def _load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _machine() -> str:
    import torch

    cores = os.cpu_count()
    return f"{cores}-core {platform.machine()} machine, CPU only, torch {torch.__version__}"


# --------------------------------------------------------------------------- screenshots


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def screenshots(workdir: Path) -> None:
    """The dashboard's range-test graph and its compare page, from the tutorial's storage."""
    import json
    import urllib.request

    from playwright.sync_api import sync_playwright

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "lrtune", "dashboard", "--port", str(port)],
        cwd=workdir, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the dashboard did not start") from None
                time.sleep(0.5)
        ids = {s["study_name"]: s["study_id"] for s in studies}
        group = [i for name, i in sorted(ids.items()) if not name.endswith(".confirm")]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.set_default_timeout(60_000)
                page.goto(f"{base}/dashboard/studies/{ids['digits.tpe.rangetest']}")
                graph = page.locator('[id="user-defined-plot:lrtune-rangetest"] .main-svg')
                graph.first.wait_for()
                section = page.locator('[id="user-defined-plot:lrtune-rangetest"]')
                section.scroll_into_view_if_needed()
                section.screenshot(path=str(IMG / "dashboard-rangetest.png"))
                ids_arg = ",".join(str(i) for i in group)
                page.goto(f"{base}/dashboard/compare-studies?ids={ids_arg}")
                page.locator(".main-svg").first.wait_for()
                page.get_by_text("Log y scale").click()  # the wide prior's losses go far up
                page.wait_for_timeout(2000)  # let Plotly finish drawing every trace
                page.screenshot(path=str(IMG / "dashboard-compare.png"))
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=60)


# --------------------------------------------------------------------------- main


def regenerate_tutorial(workdir: Path, take_screenshots: bool) -> None:
    runs = run_tutorial(workdir)
    page = TUTORIAL.read_text()
    for name, r in runs.items():
        page = fill(page, name, r.markdown("yaml" if name == "lr-yaml" else "console"))
    page = fill(page, "load-code", f"```python\n{LOAD_SNIPPET.rstrip()}\n```")
    today = dt.date.today().isoformat()
    measured = (
        f"Regenerated {today} on a {_machine()}, load average {_load_average()}; "
        f"the study took {runs['study'].seconds:.0f} s of wall time."
    )
    page = fill(page, "measured", measured)
    TUTORIAL.write_text(page)
    target = IMG / "report-digits"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(workdir / "report-digits", target)
    if take_screenshots:
        screenshots(workdir)


def regenerate_main_job(workdir: Path) -> None:
    r = run(list(MAIN_JOB), workdir)
    block = f"```\n{r.output.rstrip()}\n```"
    README.write_text(fill(README.read_text(), "main-job", block))
    page = fill(COMPARISON.read_text(), "main-job", block)
    measured = (
        f"Regenerated {dt.date.today().isoformat()} on a {_machine()}, load average "
        f"{_load_average()}, `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}`: "
        f"{r.seconds:.0f} s of wall time."
    )
    COMPARISON.write_text(fill(page, "measured", measured))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-main-job", action="store_true", help="leave the README's block")
    parser.add_argument("--no-screenshots", action="store_true", help="keep the PNGs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lrtune-tutorial-") as tmp:
        (Path(tmp) / "tutorial").mkdir()
        regenerate_tutorial(Path(tmp) / "tutorial", not args.no_screenshots)
        if not args.no_main_job:
            (Path(tmp) / "main").mkdir()
            regenerate_main_job(Path(tmp) / "main")
    print("rewrote", TUTORIAL.relative_to(ROOT), "" if args.no_main_job else "README.md")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
