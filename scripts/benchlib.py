"""What the benchmark scripts share: timing a child process, and only that child.

A child's ``ru_maxrss`` on Linux keeps the high-water mark of the process
it was forked from, across exec: a benchmark that holds a thousand messages
or a labelled corpus would lend its own size to every tool it measures. So
each child is started by a small launcher process of a few MiB, which times
it and reads its rusage.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LAUNCHER = """
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(report, "w") as f:
    f.write(f"{wall} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


@dataclass(frozen=True)
class Run:
    """One child process: wall seconds, user+sys CPU seconds, peak RSS in MiB, exit status."""

    wall: float
    cpu: float
    rss: float
    code: int = 0


def run_child(
    argv: Sequence[str],
    output: Path,
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    quiet: bool = False,
) -> Run:
    """Run ``argv`` with stdout to ``output`` (stderr dropped when ``quiet``); its own time and rusage."""
    report = output.with_suffix(".rusage")
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, str(report), *argv],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.DEVNULL if quiet else None,
            env=None if env is None else dict(env),
        )
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        if proc.wait() != 0:
            raise SystemExit(f"the launcher failed for {' '.join(argv[:3])} ...")
    wall, cpu, maxrss, code = report.read_text().split()
    return Run(float(wall), float(cpu), int(maxrss) / 1024, int(code))
