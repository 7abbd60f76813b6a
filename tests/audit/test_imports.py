"""The audit and the pure modules import no web framework, database or messaging client, nor the decide logic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import services.audit

PROBE = """
import importlib, json, pkgutil, sys
import pytest

import services.audit
names = sorted(m.name for m in pkgutil.iter_modules(services.audit.__path__, "services.audit."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "loaded": sorted(sys.modules)}))
"""


def test_every_audit_module_imports_without_litestar_or_the_ledgers_decide_logic() -> None:
    root = Path(__file__).resolve().parent.parent.parent
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True, check=True)
    seen = json.loads(result.stdout)
    audit_dir = Path(services.audit.__file__).parent
    expected = sorted(f"services.audit.{p.stem}" for p in audit_dir.glob("*.py") if p.stem != "__init__")
    assert seen["imported"] == expected
    assert "services.audit.command" in seen["imported"]
    loaded = set(seen["loaded"])
    assert "services.ledger.entries" in loaded
    assert sorted(name for name in loaded if name == "litestar" or name.startswith("litestar.")) == []
    assert "services.ledger.ledger" not in loaded
    assert "services.ledger.commands" not in loaded


def loaded_after_importing(module: str) -> set[str]:
    probe = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    root = Path(__file__).resolve().parent.parent.parent
    result = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout))


@pytest.mark.parametrize(
    "module", ["shared.errors", "shared.logverify", "services.ledger.entries", "services.ledger.ledger"]
)
def test_pure_modules_load_no_web_framework_database_or_messaging_client(module: str) -> None:
    loaded = loaded_after_importing(module)
    assert module in loaded
    heavy = {name.split(".")[0] for name in loaded} & {"litestar", "asyncpg", "nats", "aiohttp"}
    assert heavy == set()
