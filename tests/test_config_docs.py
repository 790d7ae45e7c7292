"""docs/config.md's section reference matches the registered SectionSpecs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import mesh
from file_modules import load_file
from mesh.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "gen_config_docs.py"
CONFIG_MD = ROOT / "docs" / "config.md"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return load_file("gen_config_docs", SCRIPT)


def test_config_md_is_up_to_date(gen: ModuleType) -> None:
    current = gen.current_block(CONFIG_MD.read_text(encoding="utf-8"))
    assert current is not None, f"docs/config.md lacks the markers {gen.BEGIN!r} / {gen.END!r}"
    assert current == gen.generate(), (
        "docs/config.md is out of date; run: .venv/bin/python docs/gen_config_docs.py")


def test_generation_ignores_discovery_env(gen: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = gen.generate()
    monkeypatch.setenv("MESH_DISABLE_PLUGINS", "tcp")
    assert gen.generate() == expected
    monkeypatch.setenv("MESH_LOAD_PLUGINS", "")
    assert gen.generate() == expected


def test_reference_covers_kernel_and_builtin_sections(gen: ModuleType) -> None:
    host = make_plugin_manager()
    ours = {name for name, spec in host.section_specs().items()
            if host.infos[spec.owner].distribution == mesh.DISTRIBUTION}
    assert {"node", "log-level", "local-only", "control-service", "tcp-listener",
            "tcp-peer"} <= ours
    block = gen.current_block(CONFIG_MD.read_text(encoding="utf-8")) or ""
    for name in ours:
        assert f"### `{name}`" in block
        for key in host.section_specs()[name].keys:
            assert f"| `{key.name}` |" in block, f"{name}.{key.name} missing from docs/config.md"


def test_every_builtin_key_has_a_doc(gen: ModuleType) -> None:
    undocumented = [f"{spec.name}.{key.name}" for spec in gen.documented_specs()
                    for key in spec.keys if not key.doc.strip()]
    assert not undocumented, (
        f"add field(metadata={{'doc': ...}}) to: {', '.join(undocumented)}")
    missing_section_doc = [spec.name for spec in gen.documented_specs() if not spec.doc.strip()]
    assert not missing_section_doc, f"SectionSpec(doc=...) missing for {missing_section_doc}"


def test_check_mode_of_the_script(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_replace_block_round_trips(gen: ModuleType) -> None:
    text = f"intro\n\n{gen.BEGIN}\nstale\n{gen.END}\n\noutro\n"
    updated = gen.replace_block(text, "fresh\n")
    assert gen.current_block(updated) == "fresh\n"
    assert updated.startswith("intro\n") and updated.endswith("outro\n")
