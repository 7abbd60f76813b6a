"""Progress for long audits: a rich progress bar on a terminal, plain progress lines otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import IO, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


class Task(Protocol):
    def advance(self, amount: int) -> None: ...

    def done(self) -> None: ...


class Reporter(Protocol):
    """Hands out one task per phase (download, verify) and shows how far each has got."""

    def task(self, description: str, total: int) -> Task: ...

    def __enter__(self) -> Reporter: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class _Silent:
    def advance(self, amount: int) -> None:
        pass

    def done(self) -> None:
        pass


def silent_task() -> Task:
    return _Silent()


class SilentReporter:
    def task(self, description: str, total: int) -> Task:
        return _Silent()

    def __enter__(self) -> SilentReporter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        pass


class _LineTask:
    """Prints 'description: n/total' at most every few seconds, and once at the end."""

    def __init__(self, out: IO[str], description: str, total: int, every: float) -> None:
        self._out = out
        self._description = description
        self._total = total
        self._count = 0
        self._every = every
        self._last = time.monotonic()

    def advance(self, amount: int) -> None:
        self._count += amount
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._print()

    def _print(self) -> None:
        print(f"{self._description}: {self._count:,}/{self._total:,}", file=self._out, flush=True)

    def done(self) -> None:
        self._print()


class LineReporter:
    def __init__(self, out: IO[str], every: float = 2.0) -> None:
        self._out = out
        self._every = every

    def task(self, description: str, total: int) -> Task:
        return _LineTask(self._out, description, total, self._every)

    def __enter__(self) -> LineReporter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        pass


class _BarTask:
    def __init__(self, progress: Progress, task: TaskID, every: float = 0.1) -> None:
        self._progress = progress
        self._task = task
        self._every = every
        self._last = 0.0

    def advance(self, amount: int) -> None:
        self._progress.advance(self._task, amount)
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._progress.refresh()

    def done(self) -> None:
        self._progress.refresh()


class BarReporter:
    """A rich progress bar, redrawn by the tasks as they advance: rich's own redrawing thread would take the GIL
    from the audit, and a process running a second thread can no longer fork its hashing workers safely."""

    def __init__(self, out: IO[str]) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(file=out),
            transient=False,
            auto_refresh=False,
        )

    def task(self, description: str, total: int) -> Task:
        return _BarTask(self._progress, self._progress.add_task(description, total=total))

    def __enter__(self) -> BarReporter:
        self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()


def reporter(quiet: bool = False, out: IO[str] | None = None) -> Reporter:
    """A progress bar when ``out`` (stderr by default) is a terminal, progress lines when it is not."""
    stream = out if out is not None else sys.stderr
    if quiet:
        return SilentReporter()
    if stream.isatty():
        return BarReporter(stream)
    return LineReporter(stream)
