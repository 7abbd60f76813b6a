"""The house is one-way: ``shared/`` is the foundation the services stand on, so nothing in it imports them.

The check reads the source (ast), so an import hidden in a function, under ``TYPE_CHECKING`` or behind
``importlib`` is caught even though importing the module would not run it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UPPER = "services"  # the package that shared/ must never reach into
DYNAMIC_IMPORTS = {"import_module", "__import__"}


def _is_upper(module: str | None) -> bool:
    return module is not None and (module == UPPER or module.startswith(UPPER + "."))


def _called_name(func: ast.expr) -> str | None:
    """``import_module`` for both ``importlib.import_module(...)`` and a bare ``import_module(...)``."""
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def imports_of_services(source: str, filename: str) -> list[str]:
    """Every import of ``services`` in ``source``, as ``filename:line: the import``, in line order."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if _is_upper(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_upper(node.module):
            found.append((node.lineno, f"from {node.module} import {', '.join(a.name for a in node.names)}"))
        elif isinstance(node, ast.Call) and _called_name(node.func) in DYNAMIC_IMPORTS and node.args:
            target = node.args[0]
            if isinstance(target, ast.Constant) and isinstance(target.value, str) and _is_upper(target.value):
                found.append((node.lineno, f"{_called_name(node.func)}({target.value!r})"))
    return [f"{filename}:{line}: {what}" for line, what in sorted(found)]


def violations_under(root: Path, package: str = "shared") -> list[str]:
    """Every import of ``services`` in the modules under ``root/package``, named by path and line."""
    found: list[str] = []
    for path in sorted((root / package).rglob("*.py")):
        found += imports_of_services(path.read_text(encoding="utf-8"), path.relative_to(root).as_posix())
    return found


def test_nothing_under_shared_imports_services() -> None:
    modules = sorted((ROOT / "shared").rglob("*.py"))
    assert len(modules) > 5, "the check found too few modules under shared/ to mean anything"
    violations = violations_under(ROOT)
    assert violations == [], "shared/ must not import services:\n" + "\n".join(violations)


def test_the_check_catches_every_form_of_import_and_names_the_line() -> None:
    planted = """\
import services
import services.ledger.store as store
from services.exchange import app, pages
from services import audit


def late():
    from services.node.cli import main
    return main


if TYPE_CHECKING:
    from services.ledger.ledger import Transfer

mod = importlib.import_module("services.audit.verify")
old = __import__("services")
"""
    assert imports_of_services(planted, "shared/planted.py") == [
        "shared/planted.py:1: import services",
        "shared/planted.py:2: import services.ledger.store",
        "shared/planted.py:3: from services.exchange import app, pages",
        "shared/planted.py:4: from services import audit",
        "shared/planted.py:8: from services.node.cli import main",
        "shared/planted.py:13: from services.ledger.ledger import Transfer",
        "shared/planted.py:15: import_module('services.audit.verify')",
        "shared/planted.py:16: __import__('services')",
    ]


def test_the_check_leaves_lookalikes_alone() -> None:
    innocent = """\
import servicesx
from shared import db
from shared.services import thing
from . import services
text = "from services import nothing"
mod = importlib.import_module("shared.note")
"""
    assert imports_of_services(innocent, "shared/innocent.py") == []


def test_a_planted_file_under_shared_fails_the_check_by_path_and_line(tmp_path: Path) -> None:
    (tmp_path / "shared" / "inner").mkdir(parents=True)
    (tmp_path / "shared" / "clean.py").write_text("import os\n")
    (tmp_path / "shared" / "inner" / "leak.py").write_text('"""Doc."""\n\nimport os\n\nimport services.node\n')
    assert violations_under(tmp_path) == ["shared/inner/leak.py:5: import services.node"]
