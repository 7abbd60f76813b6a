"""Progress while auditing: a rich progress bar on a terminal, plain progress lines when stderr is not one."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

from services.audit.progress import BarReporter
from tests.audit.conftest import Node


def command(exported: Path, node: Node) -> list[str]:
    return [sys.executable, "-m", "services.node.cli", "audit", str(exported), "--vkey", node.vkey, "--no-state"]


def size_of(exported: Path) -> int:
    return int((exported / "checkpoint").read_bytes().split(b"\n")[1])


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(node: Node, exported: Path) -> None:
    done = subprocess.run(command(exported, node), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    size = size_of(exported)
    assert f"verify: {size:,}/{size:,}" in done.stderr.splitlines()
    assert "PASS" in done.stdout


def test_progress_is_a_bar_on_a_terminal(node: Node, exported: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(command(exported, node), stdout=subprocess.DEVNULL, stderr=terminal)
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the command has exited
                break
            if not chunk:
                break
            shown += chunk
        assert proc.wait(timeout=120) == 0
    finally:
        os.close(controller)
    text = shown.decode("utf-8", "replace")
    size = size_of(exported)
    assert "verify" in text
    assert "━" in text  # the bar itself
    assert f"{size}/{size}" in text
    assert f"verify: {size:,}/{size:,}" not in text


def test_a_progress_bar_starts_no_thread_so_hashing_workers_can_be_forked() -> None:
    out = io.StringIO()
    before = threading.active_count()
    with BarReporter(out) as bar:
        running = threading.active_count()
        task = bar.task("verify", 512)
        task.advance(256)
        task.advance(256)
        task.done()
    assert running == before
    assert "512/512" in out.getvalue()
