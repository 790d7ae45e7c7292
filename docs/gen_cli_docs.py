"""Generate the parts of docs/cli.md that the code knows: the command table, the reference of
every command's usage and options (from click), and the `mesh plugins` listing.

Only mesh's own commands and plugins are described (what ``MESH_LOAD_PLUGINS`` set to mesh's
distribution loads), whatever else is installed.  ``tests/test_cli_docs.py`` fails when
docs/cli.md differs from what this script writes.

    .venv/bin/python docs/gen_cli_docs.py            # rewrite the generated blocks
    .venv/bin/python docs/gen_cli_docs.py --check    # exit 1 if docs/cli.md is out of date
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import click

import mesh

CLI_MD = Path(__file__).resolve().parent / "cli.md"
BLOCKS = ("commands", "reference", "plugins")
ENV = {"MESH_LOAD_PLUGINS": mesh.DISTRIBUTION, "MESH_DISABLE_PLUGINS": "",
       "COLUMNS": "100"}


def begin(name: str) -> str:
    return f"<!-- BEGIN GENERATED {name} by docs/gen_cli_docs.py; do not edit by hand -->"


def end(name: str) -> str:
    return f"<!-- END GENERATED {name} -->"


def root() -> click.Group:
    """The ``mesh`` group with every command of mesh's own plugins attached."""
    from mesh.cli_group import cli
    from mesh.plugins import make_plugin_manager

    saved = {name: os.environ.get(name) for name in ENV}
    os.environ.update(ENV)
    try:
        host = make_plugin_manager()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    group = click.Group("mesh", params=list(cli.params), help=cli.help)
    host.register_cli(group)
    return group


def walk(group: click.Group, path: tuple[str, ...] = ("mesh",),
         ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command under ``group``, depth first, in name order."""
    for name in sorted(group.commands):
        command = group.commands[name]
        if command.hidden:
            continue
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from walk(command, (*path, name))


def anchor(path: tuple[str, ...]) -> str:
    return "-".join(path)


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("|", "\\|")).strip()


def commands_block(root: click.Group) -> str:
    rows = ["| command | does |", "|---|---|"]
    for path, command in walk(root):
        rows.append(f"| [`{' '.join(path)}`](#{anchor(path)}) | "
                    f"{_cell(command.get_short_help_str(limit=300))} |")
    return "\n".join(rows)


def _usage(path: tuple[str, ...], command: click.Command) -> str:
    with click.Context(command, info_name=" ".join(path)) as ctx:
        pieces = command.collect_usage_pieces(ctx)
    return " ".join([*path, *pieces])


def _option_row(param: click.Option, ctx: click.Context) -> str:
    names = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
    if not param.is_flag and not param.count:
        names += f" `{param.make_metavar(ctx)}`"
    if param.required:
        default = "**required**"
    elif (param.multiple or param.default in (None, False, (), []) or callable(param.default)
          or type(param.default).__name__ == "Sentinel"):  # click 8.3's UNSET
        default = ""
    else:
        default = f"`{param.default}`"
    env = f"`{param.envvar}`" if isinstance(param.envvar, str) else ""
    notes = _cell(param.help or "")
    if param.multiple and "repeatable" not in notes:
        notes += " (repeatable)"
    return f"| {names} | {env} | {default} | {notes} |"


def reference_block(root: click.Group) -> str:
    parts: list[str] = []
    for path, command in walk(root):
        parts.append(f"### `{' '.join(path)}`\n")
        parts.append(f"```text\n{_usage(path, command)}\n```\n")
        text = (command.help or "").split("\f")[0].strip()
        if text:
            parts.append(click.unstyle(_dedent(text)) + "\n")
        options = [p for p in command.params
                   if isinstance(p, click.Option) and not p.hidden]
        if options:
            with click.Context(command, info_name=" ".join(path)) as ctx:
                rows = [_option_row(p, ctx) for p in options]
            parts.append("| option | environment | default | meaning |\n|---|---|---|---|")
            parts.append("\n".join(rows) + "\n")
        if isinstance(command, click.Group):
            parts.append("Subcommands: " + ", ".join(
                f"[`{name}`](#{anchor((*path, name))})" for name in sorted(command.commands)
                if not command.commands[name].hidden) + ".\n")
    return "\n".join(parts).rstrip()


def _dedent(text: str) -> str:
    import inspect

    return inspect.cleandoc(text)


def plugins_block() -> str:
    """``mesh plugins`` as a user with only mesh installed sees it."""
    env = {**os.environ, **ENV}
    out = subprocess.run([sys.executable, "-m", "mesh", "plugins"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return f"```text\n$ mesh plugins\n{out.rstrip()}\n```"


def generate() -> dict[str, str]:
    group = root()
    makers: dict[str, Callable[[], str]] = {
        "commands": lambda: commands_block(group),
        "reference": lambda: reference_block(group),
        "plugins": plugins_block,
    }
    return {name: makers[name]() for name in BLOCKS}


def current_block(text: str, name: str) -> str | None:
    start, stop = text.find(begin(name)), text.find(end(name))
    if start < 0 or stop < start:
        return None
    return text[start + len(begin(name)):stop].strip("\n")


def replace_block(text: str, name: str, block: str) -> str:
    start = text.index(begin(name)) + len(begin(name))
    stop = text.index(end(name))
    return text[:start] + "\n" + block + "\n" + text[stop:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if cli.md is out of date")
    args = parser.parse_args(argv)
    text = CLI_MD.read_text(encoding="utf-8")
    missing = [name for name in BLOCKS if current_block(text, name) is None]
    if missing:
        print(f"{CLI_MD}: missing the markers of {', '.join(missing)}", file=sys.stderr)
        return 1
    blocks = generate()
    stale = [name for name in BLOCKS if current_block(text, name) != blocks[name]]
    if args.check:
        if stale:
            print(f"{CLI_MD} is out of date ({', '.join(stale)}); run: "
                  ".venv/bin/python docs/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    for name in stale:
        text = replace_block(text, name, blocks[name])
    CLI_MD.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
