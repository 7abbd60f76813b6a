"""What an operator's log collector receives: one JSON object a line, or readable lines on a terminal.

Each test runs a fresh Python process, as ``timebank serve`` would, so logging is configured from nothing and
what it prints is exactly what lands on stderr.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Logs through a service's own stdlib logger (the ledger writer's), an exception included, after both apps have
# been built (their factories must leave the logging configuration alone), then through Litestar's logger.
PROGRAM = """
from services.exchange.app import create_app as create_exchange
from services.ledger.app import create_app as create_ledger
from services.ledger.appender import log
from shared.logs import configure_logging
from shared.note import Signer
from shared.settings import load_settings

settings = load_settings()
configure_logging(settings)
ledger = create_ledger(settings, database_url="postgresql://unused", signer=Signer.generate("timebank.test/logs"))
create_exchange(settings, database_url="postgresql://unused", ledger_url="http://unused")
log.warning("ledger batch failed (attempt %d/%d): %s", 1, 3, "connection lost")
try:
    raise RuntimeError("disk full")
except RuntimeError:
    log.exception("ledger command failed")
ledger.logger.info("served by %s", "litestar")
"""


def environment(log_format: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")},
        "TIMEBANK_LOG__FORMAT": log_format,
        "TIMEBANK_EXCHANGE__LEDGER_TOKEN": "token",
    }


def run(log_format: str) -> list[str]:
    """The stderr lines of the program run with ``TIMEBANK_LOG__FORMAT=<log_format>`` (stderr is a pipe)."""
    env = environment(log_format)
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    return result.stderr.splitlines()


def test_json_logs_are_one_object_a_line_with_level_event_logger_and_time() -> None:
    lines = run("json")
    records = [json.loads(line) for line in lines]  # every line, the traceback's included, is one JSON object
    assert len(records) == 3, lines
    warning, failure, litestar = records
    assert warning["level"] == "warning"
    assert warning["event"] == "ledger batch failed (attempt 1/3): connection lost"
    assert warning["logger"] == "services.ledger.appender"
    assert datetime.fromisoformat(warning["timestamp"]).utcoffset() is not None
    assert failure["level"] == "error"
    assert failure["event"] == "ledger command failed"
    assert "RuntimeError: disk full" in failure["exception"]
    assert litestar["logger"] == "litestar"
    assert litestar["event"] == "served by litestar"
    assert litestar["level"] == "info"


def test_auto_format_writes_json_when_stderr_is_not_a_terminal() -> None:
    records = [json.loads(line) for line in run("auto")]
    assert [r["event"] for r in records] == [
        "ledger batch failed (attempt 1/3): connection lost",
        "ledger command failed",
        "served by litestar",
    ]


def test_console_logs_are_readable_lines_not_json() -> None:
    lines = run("console")
    text = "\n".join(lines)
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            continue
        raise AssertionError(f"a console line is JSON: {line}")
    assert "ledger batch failed (attempt 1/3): connection lost" in text
    assert "warning" in text
    assert "services.ledger.appender" in text
    assert "RuntimeError: disk full" in text
    assert "\x1b[" not in text  # no colour codes when stderr is not a terminal


def test_auto_format_writes_coloured_lines_on_a_terminal() -> None:
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen([sys.executable, "-c", PROGRAM], cwd=ROOT, env=environment("auto"), stderr=terminal)
        os.close(terminal)  # the child holds its own copy; reading ends when the child's closes
        text = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # Linux: the terminal's other end is closed
                break
            if not chunk:
                break
            text += chunk
        assert process.wait(timeout=60) == 0
    finally:
        os.close(controller)
    output = text.decode()
    assert "ledger batch failed (attempt 1/3): connection lost" in output
    assert "\x1b[" in output  # coloured
    assert not output.lstrip().startswith("{")


def test_an_http_request_the_node_makes_is_not_logged_but_a_client_warning_is() -> None:
    """httpx logs each request at INFO; the outbox and the audit make thousands, so only its warnings pass."""
    program = """
import logging
from shared.logs import configure_logging
from shared.settings import load_settings

configure_logging(load_settings())
logging.getLogger("httpx").info('HTTP Request: POST http://ledger/transfers "HTTP/1.1 201 Created"')
logging.getLogger("httpx").warning("connection pool is full")
"""
    env = environment("json")
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    events = [json.loads(line)["event"] for line in result.stderr.splitlines()]
    assert events == ["connection pool is full"]
