"""docs/cli.md's command table, command reference and `mesh plugins` listing match the code."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from file_modules import load_file

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "gen_cli_docs.py"
CLI_MD = ROOT / "docs" / "cli.md"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return load_file("gen_cli_docs", SCRIPT)


def test_cli_md_is_up_to_date(gen: ModuleType) -> None:
    text = CLI_MD.read_text(encoding="utf-8")
    blocks = gen.generate()
    for name in gen.BLOCKS:
        current = gen.current_block(text, name)
        assert current is not None, f"docs/cli.md lacks the markers of the {name} block"
        assert current == blocks[name], (
            f"docs/cli.md's {name} block is out of date; run: .venv/bin/python docs/gen_cli_docs.py")


def test_every_command_is_in_the_table_and_the_reference(gen: ModuleType) -> None:
    root = gen.root()
    paths = [" ".join(path) for path, _ in gen.walk(root)]
    assert {"mesh work submit", "mesh cert init", "mesh node", "mesh plugins"} <= set(paths)
    text = CLI_MD.read_text(encoding="utf-8")
    for path in paths:
        assert f"[`{path}`]" in text and f"### `{path}`" in text, path


def test_optional_options_are_not_shown_as_required(gen: ModuleType) -> None:
    reference = gen.current_block(CLI_MD.read_text(encoding="utf-8"), "reference") or ""
    submit = reference.split("### `mesh work submit`")[1].split("### ")[0]
    node_row = next(line for line in submit.splitlines() if line.startswith("| `--node`"))
    assert "**required**" not in node_row
