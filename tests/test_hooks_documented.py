"""Every hook in mesh.hookspecs is documented, in its docstring and in docs/hooks.md.

A hook's section of docs/hooks.md runs from the Markdown heading that names it to the next heading
that names a hook; each argument must appear there as a list item (``- `arg`: ...``) or as the
first cell of a table row (``| `arg` | ...``).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from mesh import hookspecs

DOCS = Path(__file__).resolve().parent.parent / "docs" / "hooks.md"
MARKER = "mesh_spec"  # set by pluggy.HookspecMarker("mesh")

HEADING = re.compile(r"^#{1,6}\s+(.*)$")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def hook_specs() -> dict[str, inspect.Signature]:
    specs = {name: fn for name, fn in vars(hookspecs).items()
             if inspect.isfunction(fn) and hasattr(fn, MARKER)}
    assert specs, "no hookspecs found in mesh.hookspecs"
    return specs


def arg_names(fn: object) -> list[str]:
    return list(inspect.signature(fn).parameters)


def doc_sections() -> dict[str, str]:
    """Hook name → the text of its section in docs/hooks.md."""
    hooks = set(hook_specs())
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        heading = HEADING.match(line)
        if heading:
            named = [n for n in NAME.findall(heading.group(1)) if n in hooks]
            if named:
                current = sections.setdefault(named[0], [])
                continue
            if current is not None and _is_hook_like(heading.group(1)):
                current = None
        if current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


def _is_hook_like(text: str) -> bool:
    return any(n.startswith("mesh_") for n in NAME.findall(text))


def documents_argument(section: str, arg: str) -> bool:
    name = re.escape(arg)
    bullet = re.compile(rf"^\s*[-*]\s+`{name}`\s*:", re.MULTILINE)
    row = re.compile(rf"^\s*\|\s*`{name}`\s*\|", re.MULTILINE)
    return bool(bullet.search(section) or row.search(section))


HOOKS = sorted(hook_specs())


def test_hookspecs_are_found() -> None:
    # Guard against the introspection silently finding nothing (e.g. a renamed marker).
    assert "mesh_register_backends" in HOOKS
    assert "mesh_node_started" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_docs_section(hook: str) -> None:
    assert hook in doc_sections(), (
        f"{hook} has no section in docs/hooks.md; add a heading such as '### `{hook}`'")


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_arguments_documented_in_docs(hook: str) -> None:
    section = doc_sections().get(hook, "")
    missing = [arg for arg in arg_names(hook_specs()[hook])
               if not documents_argument(section, arg)]
    assert not missing, (
        f"docs/hooks.md section for {hook} does not document {', '.join(missing)}; "
        f"add a line '- `{missing[0]}`: ...' under the hook's heading")


@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_docstring_documents_arguments(hook: str) -> None:
    fn = hook_specs()[hook]
    doc = inspect.getdoc(fn)
    assert doc and doc.strip(), f"hookspec {hook} has no docstring"
    missing = [arg for arg in arg_names(fn) if not re.search(rf":param {re.escape(arg)}:", doc)]
    assert not missing, f"hookspec {hook} docstring lacks ':param {missing[0]}:'"
    stale = [p for p in re.findall(r":param (\w+):", doc) if p not in arg_names(fn)]
    assert not stale, f"hookspec {hook} documents arguments it does not have: {stale}"
    assert ":return:" in doc, f"hookspec {hook} docstring does not state its return contract"


def test_docs_name_no_unknown_hooks() -> None:
    """A heading naming a hook that no longer exists is stale documentation."""
    hooks = set(HOOKS)
    stale = []
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        heading = HEADING.match(line)
        if heading:
            stale += [n for n in NAME.findall(heading.group(1))
                      if n.startswith("mesh_") and n not in hooks]
    assert not stale, f"docs/hooks.md has headings for unknown hooks: {stale}"
