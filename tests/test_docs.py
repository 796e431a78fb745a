"""The docs site: generated reference pages miss no flag and no schedule, every page is in
the nav, the README stays a front page, and ``mkdocs build --strict`` passes."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from lrtune.schedules.params import SCHEDULES

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lrtune_docs_hooks", DOCS / "tools" / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mkdocs_config() -> dict[str, object]:
    # mkdocs.yml has no custom YAML tags, so a plain safe load reads it.
    return yaml.safe_load((REPO / "mkdocs.yml").read_text())


def _flags() -> dict[str, list[str]]:
    """Every option string of every command, from the parsers themselves."""
    hooks = _hooks()
    out: dict[str, list[str]] = {}
    for name, parser in hooks.command_parsers().items():
        out[name] = [
            s
            for a in parser._actions
            if not isinstance(a, argparse._HelpAction) and a.help != argparse.SUPPRESS
            for s in a.option_strings
        ]
    return out


def test_every_command_and_flag_is_in_the_cli_reference() -> None:
    from lrtune.cli import COMMANDS

    page = _hooks().cli_markdown()
    flags = _flags()
    assert sorted(flags) == sorted(c.name for c in COMMANDS)
    sections = re.split(r"^## lrtune ", page, flags=re.M)[1:]
    by_command = {s.split("\n", 1)[0].strip(): s for s in sections}
    assert sorted(by_command) == sorted(flags)
    for command, options in flags.items():
        assert options, command
        for option in options:
            assert f"`{option}`" in by_command[command], f"{command} {option} missing"
    assert "--storage" in flags["study"] and "--trials" in flags["study"]


def test_the_cli_page_asks_for_the_generated_reference() -> None:
    hooks = _hooks()
    page = (DOCS / "reference" / "cli.md").read_text()
    assert hooks.CLI_MARKER in page
    assert hooks.SCHEDULES_MARKER in (DOCS / "reference" / "schedules.md").read_text()


def test_every_schedule_and_parameter_is_in_the_schedules_reference() -> None:
    page = _hooks().schedules_markdown()
    assert len(SCHEDULES) >= 10
    for name, info in SCHEDULES.items():
        section = page.split(f"\n## {name}\n", 1)
        assert len(section) == 2, f"schedule {name} missing"
        body = section[1].split("\n## ", 1)[0]
        assert body.strip(), name
        for pname, param in info.params.items():
            assert f"| `{pname}` | `{param.default!r}` |" in body, f"{name}.{pname} missing"


def test_every_docs_page_is_in_the_nav() -> None:
    config = _mkdocs_config()
    nav = _hooks().complete_nav(config["nav"], DOCS)  # type: ignore[arg-type]
    listed = _hooks()._nav_pages(nav)
    pages = {
        p.relative_to(DOCS).as_posix()
        for p in DOCS.rglob("*.md")
        if "tools" not in p.parts and "img" not in p.parts
    }
    assert not pages - listed, f"pages missing from the nav of mkdocs.yml: {pages - listed}"
    assert not listed - pages - {"index.md"}, f"nav names missing pages: {listed - pages}"


def test_a_new_how_to_page_joins_the_nav_by_itself(tmp_path: Path) -> None:
    (tmp_path / "how-to").mkdir()
    (tmp_path / "how-to" / "x.md").write_text("# Do X\n\ntext\n")
    nav = [{"Home": "index.md"}, {"How-to guides": [{"Y": "how-to/y.md"}]}]
    done = _hooks().complete_nav(nav, tmp_path)
    assert done[1] == {"How-to guides": [{"Y": "how-to/y.md"}, {"Do X": "how-to/x.md"}]}


def test_the_readme_is_a_front_page_and_links_only_existing_files() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if "://" not in target:
            assert (REPO / target).exists(), f"README links a missing file: {target}"
    home = _hooks().front_page(readme)
    assert "](docs/" not in home  # the site's home page links its own pages


@pytest.mark.slow
def test_mkdocs_build_strict_has_every_flag_and_schedule(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli = (site / "reference" / "cli" / "index.html").read_text()
    for command, options in _flags().items():
        assert f'id="lrtune-{command}"' in cli, command
        for option in options:
            assert f"<code>{option}</code>" in cli, f"{command} {option} missing from the site"
    schedules = (site / "reference" / "schedules" / "index.html").read_text()
    for name in SCHEDULES:
        assert f'id="{name}"' in schedules, name
    api = (site / "reference" / "python-api" / "index.html").read_text()
    for name in ("Task", "range_test", "load_config", "schedule_lr"):
        assert f'id="lrtune.{name}"' in api, name
    assert (site / "index.html").is_file() and (
        site / "how-to" / "own-code" / "index.html"
    ).is_file()
