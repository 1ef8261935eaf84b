"""The house as the README draws it: every module listed in its Layout section, and each one
importing only modules listed above it (imports inside functions included), so that the list
is a reading order with no cycles."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tinytrans"
ENTRY_POINTS = {"cli.py", "__init__.py", "__main__.py"}  # they may import anything; not in the list


def layout_order() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Layout"):]
    section = section[: section.index("\n## ")] if "\n## " in section else section
    return re.findall(r"^  (\w+\.(?:py|html))\s", section, re.MULTILINE)


def tinytrans_imports(path: Path) -> set[str]:
    """The tinytrans modules a file imports, as file names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tinytrans."):
            found.add(node.module.split(".")[1] + ".py")
        elif isinstance(node, ast.ImportFrom) and node.module == "tinytrans":
            found.update(alias.name + ".py" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] + ".py" for a in node.names
                         if a.name.startswith("tinytrans."))
    return found


def test_the_layout_lists_every_module_once() -> None:
    order = layout_order()
    assert len(order) == len(set(order)), order
    on_disk = {p.name for p in PACKAGE.iterdir() if p.suffix in (".py", ".html")} - ENTRY_POINTS
    assert set(order) == on_disk


def test_every_module_imports_only_modules_above_it_in_the_layout() -> None:
    order = layout_order()
    position = {name: i for i, name in enumerate(order)}
    upward = [f"{name} imports {imported}"
              for name in order if name.endswith(".py")
              for imported in sorted(tinytrans_imports(PACKAGE / name))
              if imported not in position or position[imported] >= position[name]]
    assert upward == []


def test_the_import_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("import os\nfrom tinytrans.model import A\n\ndef f():\n"
                      "    from tinytrans import search\n    import tinytrans.data\n")
    assert tinytrans_imports(source) == {"model.py", "search.py", "data.py"}
