"""mkdocs hooks: the pages generated from the code at build time.

- ``index.md``: the README, its links rewritten for the site (one source for both);
- ``<!-- generated: cli -->`` in a page: every command's flags, from lrtune's argparse parsers;
- ``<!-- generated: schedules -->``: every schedule, from ``SCHEDULES`` (its parameter table)
  and its closed form's docstring.

A flag added to a parser or a schedule added to the table appears here with no edit to the
docs; ``tests/test_docs.py`` checks that none is missing. The functions are plain (no mkdocs
import) so that tests call them directly.
"""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLI_MARKER = "<!-- generated: cli -->"
SCHEDULES_MARKER = "<!-- generated: schedules -->"


# --------------------------------------------------------------------------- README → index


def front_page(readme: str) -> str:
    """The README as the site's home page: ``docs/`` links made relative to the site."""
    text = re.sub(r"\]\(docs/", "](", readme)
    return re.sub(r'(src|href)="docs/', r'\1="', text)


# --------------------------------------------------------------------------- CLI


def _cell(text: str) -> str:
    """Text for a markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _rst_to_md(text: str) -> str:
    """Docstring markup (``x``, :func:`x`) as markdown."""
    text = re.sub(r":(?:func|class|data|mod|meth|attr):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Each command's parser, by name, in the order of ``lrtune --help``."""
    from lrtune.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def _flag_rows(parser: argparse.ArgumentParser, group: Any) -> list[str]:
    formatter: Any = parser._get_formatter()
    rows = []
    for action in group._group_actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
        value = formatter._format_args(action, action.dest.upper()) if action.nargs != 0 else ""
        expanded = formatter._expand_help(action) if action.help else ""
        rows.append(f"| {names} | {_cell(f'`{value}`') if value else ''} | {_cell(expanded)} |")
    return rows


def cli_markdown() -> str:
    """Every command: its description, usage, flags (with their defaults) and examples."""
    out = []
    for name, parser in command_parsers().items():
        out += [f"## lrtune {name}", "", _cell(parser.description or ""), ""]
        usage = " ".join(parser.format_usage().split()).removeprefix("usage: ")
        out += ["```", usage, "```", ""]
        for group in parser._action_groups:
            rows = _flag_rows(parser, group)
            if not rows:
                continue
            if group.title not in ("options", "optional arguments", "positional arguments"):
                out += [f"**{group.title}**", ""]
            out += ["| flag | value | what it does |", "|---|---|---|", *rows, ""]
        if parser.epilog:
            out += ["```", parser.epilog.strip(), "```", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- schedules


def _param_row(pname: str, param: Any) -> str:
    if param.kind == "choice":
        allowed = ", ".join(f"`{c}`" for c in param.choices)
    elif param.kind == "bool":
        allowed = "true / false"
    else:
        allowed = f"{param.kind} {param.describe()}"
    search = ""
    if param.search is not None:
        kind, *rest = param.search
        if kind == "categorical":
            search = ", ".join(f"`{c}`" for c in rest[0])
        else:
            search = f"[{rest[0]:g}, {rest[1]:g}]" + (" log" if len(rest) > 2 and rest[2] else "")
    return f"| `{pname}` | `{param.default!r}` | {_cell(allowed)} | {search} |"


def schedules_markdown() -> str:
    """A summary table, then one section per schedule: its formula and its parameters."""
    from lrtune.schedules.params import SCHEDULES

    out = ["| schedule | parameters (defaults) |", "|---|---|"]
    for name, info in SCHEDULES.items():
        params = ", ".join(f"`{p}` {v.default!r}" for p, v in info.params.items())
        out.append(f"| [`{name}`](#{name}) | {_cell(params)} |")
    out.append("")
    for name, info in SCHEDULES.items():
        out += [f"## {name}", "", _rst_to_md(inspect.cleandoc(info.fn.__doc__ or "")), ""]
        if info.params:
            out += [
                "| parameter | default | allowed | searched with `true` |",
                "|---|---|---|---|",
                *(_param_row(p, v) for p, v in info.params.items()),
                "",
            ]
        if info.rule is not None and info.rule.__doc__:
            out += [_rst_to_md(inspect.cleandoc(info.rule.__doc__)), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- nav


def _title(page: Path) -> str:
    """A page's first ``# heading``, else its file name."""
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return page.stem


def _nav_pages(nav: Any) -> set[str]:
    """Every page path a nav holds, at any depth."""
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, dict):
        return set().union(*(_nav_pages(v) for v in nav.values()))
    if isinstance(nav, list):
        return set().union(set(), *(_nav_pages(v) for v in nav))
    return set()


def complete_nav(nav: list[Any], docs_dir: Path) -> list[Any]:
    """``nav`` with every ``how-to/*.md`` page it misses added to its how-to section (by
    the page's title), so a guide someone adds shows up without an edit to mkdocs.yml."""
    section = next(e for e in nav if isinstance(e, dict) and "How-to guides" in e)
    listed = _nav_pages(nav)
    for page in sorted((docs_dir / "how-to").glob("*.md")):
        path = f"how-to/{page.name}"
        if path not in listed:
            section["How-to guides"].append({_title(page): path})
    return nav


# --------------------------------------------------------------------------- mkdocs events


def on_config(config: Any) -> Any:
    """Add the how-to pages the nav does not list yet."""
    config["nav"] = complete_nav(config["nav"], Path(config["docs_dir"]))
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add the README as ``index.md``."""
    from mkdocs.structure.files import File

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "index.md", content=front_page(readme)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Fill the generated sections of a page."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_markdown())
    if SCHEDULES_MARKER in markdown:
        markdown = markdown.replace(SCHEDULES_MARKER, schedules_markdown())
    return markdown
