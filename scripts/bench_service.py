#!/usr/bin/env python3
"""Benchmark the service against a real local Dovecot, beside imapfilter.

Prints a table of:
  * one pass over N messages in INBOX (ployfilter once) and its peak RSS;
  * the same N messages through imapfilter (Debian's package) with a
    keyword rule, the tool an owner would otherwise write rules in;
  * APPEND-to-moved latency under ``ployfilter run`` with IDLE, over K
    messages appended one at a time (median and worst);
  * the daemon's resident memory after that.

Messages come from ../shared/corpus/enron-maildir when present (real sizes
and structure), else from examples/ with fresh Message-IDs.

    .venv/bin/python scripts/bench_service.py [--messages 1000] [--latency 20]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import run_child  # noqa: E402

from filter.dovecot import DEFAULT_PASSWORD, DEFAULT_USER, LocalDovecot  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "enron-maildir"
TARGET = "Networking/Articles"


def messages(count: int) -> tuple[list[bytes], str]:
    if CORPUS.is_dir():
        paths = sorted(p for p in CORPUS.rglob("*") if p.is_file())
        chosen = random.Random(2).sample(paths, min(count, len(paths)))
        return [p.read_bytes() for p in chosen], f"{len(chosen)} Enron messages from ../shared/corpus"
    samples = sorted((REPO / "examples" / "demo-mail").glob("*.eml"))
    out = []
    for i in range(count):
        data = samples[i % len(samples)].read_bytes()
        out.append(re.sub(rb"(?im)^message-id:.*$", f"Message-ID: <bench{i}@example.org>".encode(), data, count=1))
    return out, f"{count} copies of examples/demo-mail with fresh Message-IDs"


def config(root: Path, server: LocalDovecot, **extra: object) -> Path:
    data = {
        "accounts": [
            {
                "name": "bench",
                "host": server.host,
                "port": server.port,
                "security": "plain",
                "username": DEFAULT_USER,
                "password_env": "PLOY_BENCH_PASSWORD",
            }
        ],
        "state_path": str(root / "state.sqlite3"),
        "log_level": "warning",
        **extra,
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def seed(server: LocalDovecot, datas: list[bytes]) -> None:
    for data in datas:
        server.append(DEFAULT_USER, "INBOX", data)


def bench_once(root: Path, datas: list[bytes], env: dict[str, str]) -> tuple[float, float, int, float]:
    """The whole command (start-up and model load included), and the pass alone as it reports it."""
    with LocalDovecot(root / "server-once") as server:
        seed(server, datas)
        cfg = config(root, server)
        out = root / "once.out"
        run = run_child([sys.executable, "-m", "filter", "once", "-c", str(cfg)], out, env=env, quiet=True)
        moved = len(datas) - len(server.uids(DEFAULT_USER, "INBOX"))
        if run.code != 0:
            raise SystemExit(f"ployfilter once failed with status {run.code}")
        match = re.search(r"new messages in ([0-9.]+) s", out.read_text())
        return run.wall, run.rss, moved, float(match.group(1)) if match else float("nan")


IMAPFILTER_RULES = """
options.timeout = 60
options.create = true
options.info = false
account = IMAP {{ server = '{host}', port = {port}, username = '{user}', password = '{password}' }}
inbox = account.INBOX
hits = inbox:contain_subject('FYI') + inbox:contain_body('thought you') + inbox:contain_body('pick your brain')
     + inbox:contain_body('pour info') + inbox:contain_body('votre aide') + inbox:contain_body('coffee')
hits:move_messages(account['{target}'])
"""


def bench_imapfilter(root: Path, datas: list[bytes], env: dict[str, str]) -> tuple[float, float, int] | None:
    binary = shutil.which("imapfilter")
    if binary is None:
        return None
    with LocalDovecot(root / "server-imapfilter") as server:
        seed(server, datas)
        rules = root / "imapfilter.lua"
        rules.write_text(
            IMAPFILTER_RULES.format(
                host=server.host, port=server.port, user=DEFAULT_USER, password=DEFAULT_PASSWORD, target=TARGET
            )
        )
        home = root / "imapfilter-home"
        home.mkdir()
        run = run_child([binary, "-c", str(rules)], root / "if.out", env={**env, "HOME": str(home)}, quiet=True)
        if run.code != 0:
            return None
        return run.wall, run.rss, len(datas) - len(server.uids(DEFAULT_USER, "INBOX"))


def bench_latency(root: Path, rounds: int, env: dict[str, str]) -> tuple[list[float], float]:
    with LocalDovecot(root / "server-idle") as server:
        cfg = config(root / "idle", server, thresholds={"article_share": 0.0, "favour_request": 1.0})
        daemon = subprocess.Popen(
            [sys.executable, "-m", "filter", "run", "-c", str(cfg)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while TARGET not in server.folders(DEFAULT_USER):
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise SystemExit("ployfilter run did not start")
                time.sleep(0.1)
            time.sleep(1)
            latencies = []
            for i in range(rounds):
                data = (
                    f"From: drip@example.org\r\nSubject: article {i}\r\nMessage-ID: <lat{i}@example.org>\r\n"
                    f"\r\nhttps://example.org/{i}\r\n"
                ).encode()
                start = time.perf_counter()
                server.append(DEFAULT_USER, "INBOX", data)
                while server.uids(DEFAULT_USER, "INBOX"):
                    time.sleep(0.01)
                latencies.append(time.perf_counter() - start)
            status = Path(f"/proc/{daemon.pid}/status").read_text()
            rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
            return latencies, rss
        finally:
            daemon.terminate()
            daemon.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--latency", type=int, default=20, help="messages appended one by one under run")
    args = parser.parse_args()
    env = {**os.environ, "PLOY_BENCH_PASSWORD": DEFAULT_PASSWORD}
    datas, source = messages(args.messages)
    root = Path(tempfile.mkdtemp(prefix="ployfilter-bench-"))
    root.chmod(0o755)
    (root / "idle").mkdir()
    try:
        once = bench_once(root, datas, env)
        other = bench_imapfilter(root, datas, env)
        latencies, daemon_rss = bench_latency(root, args.latency, env)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"messages: {source}; {os.cpu_count()} CPUs; Dovecot on 127.0.0.1\n")
    print(f"| {'what':<44} | {'time':>9} | {'msgs/s':>7} | {'peak RSS':>9} | {'moved':>5} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 9}|{'-' * 11}|{'-' * 7}|")
    rows = [
        ("ployfilter once: whole command", once[:3]),
        ("ployfilter once: the pass (fetch to record)", (once[3], once[1], once[2])),
    ]
    if other is not None:
        rows.append(("imapfilter 2.8, six keyword rules", other))
    for name, (elapsed, rss, moved) in rows:
        print(f"| {name:<44} | {elapsed:>7.2f} s | {len(datas) / elapsed:>7.0f} | {rss:>5.0f} MiB | {moved:>5} |")
    if other is None:
        print("| imapfilter: not installed (apt-get install imapfilter) |")
    print()
    print(f"APPEND-to-moved latency under `ployfilter run` (IDLE), {len(latencies)} messages:")
    print(f"  median {statistics.median(latencies) * 1000:.0f} ms, worst {max(latencies) * 1000:.0f} ms")
    print(f"daemon resident memory after that: {daemon_rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
