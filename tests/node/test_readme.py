"""The README's shell examples run as written against a fresh node (issue 14): every variable defined, every id
and tile path one that exists, `timebank` reachable, and every request answered without an error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from services.node.processes import free_port
from tests.node.running import Up

README = Path(__file__).parents[2] / "README.md"
# Sections whose examples run on a fresh node, in order. Peering needs a real neighbour, so it is only read.
SECTIONS = ("## Using the exchange API", "## Using the ledger API", "## Auditing")


def shell_examples() -> list[str]:
    """The README's ``sh`` blocks in SECTIONS, minus the one that names a neighbour network."""
    text = README.read_text()
    blocks = []
    for heading in SECTIONS:
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        blocks += [b for b in re.findall(r"```sh\n(.*?)```", section, re.DOTALL) if "hillside" not in b]
    return blocks


def test_the_examples_define_every_variable_they_use() -> None:
    script = "\n".join(shell_examples())
    defined = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", script, re.MULTILINE))
    used = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", script))
    assert used <= defined, f"used but never defined: {sorted(used - defined)}"
    commands = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"(acct|mem|lst|ex|tr)_…", commands), "an id left for the reader to fill in"


def test_the_readme_examples_run_against_a_fresh_node(server_tmp_path: Path) -> None:
    port = free_port()
    up = Up(server_tmp_path, "--name", "timebank.example/riverside", "--port", str(port))
    try:
        up.wait_for("Ctrl-C stops the node")
        script = "\n".join(shell_examples()).replace("127.0.0.1:8470", f"127.0.0.1:{port}")
        # Any answer that is an error stops the script (curl -s alone would go on).
        prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # as with the venv active
        done = subprocess.run(
            ["bash", "-c", prelude + script],
            cwd=server_tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        # `timebank audit` exits 0 only when every check passed; the files the examples write are there.
        assert (server_tmp_path / "3.tlog-proof").read_bytes()
        assert (server_tmp_path / "report.json").read_bytes()
        assert (server_tmp_path / "riverside-log" / "checkpoint").exists()
    finally:
        up.stop()
