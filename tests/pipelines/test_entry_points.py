"""The entry points' layering: no module of ``pipelines`` imports the CLI module, and every entry point loads its
settings with the checked loader (``models.checked_settings``), never with ``configs``' own, which does not
compile the rules file."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: What loads settings without compiling the rules file.
UNCHECKED = {("configs", "load_settings"), ("configs", "settings_from_dict"),
             ("configs.settings", "load_settings"), ("configs.settings", "settings_from_dict")}  # fmt: skip


def _imports(source: str) -> set[tuple[str, str]]:
    """(module, name) of every ``from module import name``, and (module, "") of every ``import module``."""
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {(node.module, alias.name) for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {(alias.name, "") for alias in node.names}
    return found


def _notebook_code(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
    # IPython magics (%matplotlib) are not Python
    return "\n".join(line for cell in code for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.py")), ids=lambda p: p.name)
def test_no_pipelines_module_imports_the_cli(path: Path) -> None:
    imports = _imports(path.read_text(encoding="utf-8"))
    assert not {(module, name) for module, name in imports
                if module == "pipelines.cli" or (module == "pipelines" and name == "cli")}  # fmt: skip


ENTRY_POINTS = [*sorted((ROOT / "pipelines").glob("*.py")), *sorted((ROOT / "bench").glob("*.py")),
                *sorted((ROOT / "notebooks").glob("*.ipynb"))]  # fmt: skip


@pytest.mark.parametrize("path", ENTRY_POINTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_entry_points_load_settings_with_the_rules_file_compiled(path: Path) -> None:
    source = _notebook_code(path) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")
    assert not _imports(source) & UNCHECKED, "load settings with models.checked_settings.load_settings"
