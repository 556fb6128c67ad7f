"""``ployfilter demo``: the whole path on a throwaway server, for a first look.

Starts a private Dovecot on 127.0.0.1, appends the sample messages from
``examples/`` (plus a generated 10 MB message), writes a config for it, runs
one pass with the shipped model exactly as ``ployfilter once`` would, then a
second pass to show that nothing is handled twice, and prints what moved
where and why, as the server itself reports it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path

import yaml

from filter.cli import load_model, one_pass, thresholds_for
from filter.config import LABELS, load_config
from filter.dovecot import DEFAULT_PASSWORD, DEFAULT_USER, LocalDovecot, unavailable_reason
from filter.policy import PATTERN_KEYWORD
from filter.runner import PassReport
from filter.senders import NO_SENDERS, format_table, rank
from filter.state import State

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PASSWORD_VARIABLE = "PLOYFILTER_DEMO_PASSWORD"


def large_message() -> bytes:
    """A 10 MB attachment behind a short note: judged on its start, moved or kept whole."""
    msg = EmailMessage()
    msg["From"] = "Archive Robot <archive@example.net>"
    msg["To"] = "owner@example.org"
    msg["Subject"] = "Scanned archive, March"
    msg["Message-ID"] = "<demo-large-attachment@example.net>"
    msg.set_content("The scanned archive for March is attached.\n")
    msg.add_attachment(
        bytes(range(256)) * 40960, maintype="application", subtype="octet-stream", filename="archive-march.bin"
    )
    return msg.as_bytes()


def sample_messages() -> list[tuple[str, bytes]]:
    """(name, bytes) of every sample message, in a stable order."""
    out = []
    for folder in ("demo-mail", "malformed"):
        for path in sorted((EXAMPLES / folder).glob("*.eml")):
            out.append((f"{folder}/{path.name}", path.read_bytes()))
    out.append(("generated/10mb-attachment.eml", large_message()))
    return out


def _subject(data: bytes) -> str:
    try:
        value = BytesHeaderParser(policy=default_policy).parsebytes(data).get("Subject", "")
        return " ".join(str(value).split())
    except Exception:  # noqa: BLE001 - a sample may be deliberately broken
        return ""


def run_demo(keep: Path | None = None) -> int:
    reason = unavailable_reason()
    if reason:
        print(f"demo: {reason}")
        return 1
    root = Path(keep).resolve() if keep else Path(tempfile.mkdtemp(prefix="ployfilter-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    try:
        with LocalDovecot(root / "server") as server:
            samples = sample_messages()
            names = {}
            for name, data in samples:
                if data:
                    names[server.append(DEFAULT_USER, "INBOX", data, internaldate=None)] = name
            for name, data in samples:
                if not data:  # APPEND refuses an empty message; a delivery agent can still leave one
                    server.deliver(DEFAULT_USER, data)
                    names[server.uids(DEFAULT_USER, "INBOX")[-1]] = name
            config_path = root / "config.yaml"
            config_path.write_text(
                yaml.safe_dump(
                    {
                        "accounts": [
                            {
                                "name": "demo",
                                "host": server.host,
                                "port": server.port,
                                "security": "plain",
                                "username": DEFAULT_USER,
                                "password_env": PASSWORD_VARIABLE,
                            }
                        ],
                        "action": "move",
                        "state_path": str(root / "state.sqlite3"),
                    },
                    sort_keys=False,
                )
            )
            os.environ[PASSWORD_VARIABLE] = DEFAULT_PASSWORD
            config = load_config(config_path)
            model = load_model(config)
            thresholds = thresholds_for(config, model)
            account = config.accounts[0]
            print(f"Dovecot on {server.host}:{server.port}; {len(samples)} sample messages put in INBOX")
            print(
                f"model: {model.path}; thresholds: " + ", ".join(f"{k} {v:.2f}" for k, v in thresholds.items()) + "\n"
            )
            state = State.open(config.state_path)
            try:
                reports = [one_pass(config, account, model, state) for _ in range(2)]
                senders = rank(state.senders(), pattern_shares=config.policy.pattern_shares)
            finally:
                state.close()
            _print_report(reports[0], names, dict(samples))
            print(f"\nsecond pass: {len(reports[1].outcomes)} messages handled (everything was handled once)")
            print("\nthe server now holds:")
            total = 0
            for folder in ["INBOX", *sorted(set(account.folders.values()))]:
                count = len(server.uids(DEFAULT_USER, folder))
                total += count
                print(f"  {folder:<22} {count:>3} messages")
            print(f"  {'(total)':<22} {total:>3} of {len(samples)} put there: nothing lost")
            print("\nwho sent what (`ployfilter senders`; the ledger keeps addresses, dates and labels only):\n")
            print(format_table(senders, time.time(), config.policy.pattern_shares) if senders else NO_SENDERS)
            print(f"\nconfig used: {config_path}" if keep else "")
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def _print_report(report: PassReport, names: dict[int, str], datas: dict[str, bytes]) -> None:
    print(f"{'message':<44} {'subject':<44} {'scores a/f':<11} where")
    for o in report.outcomes:
        name = names.get(o.uid, f"uid {o.uid}")
        subject = _subject(datas.get(name, b""))
        subject = subject if len(subject) <= 43 else subject[:42] + "…"
        scores = "/".join(f"{o.scores[label]:.2f}" for label in LABELS) if o.scores else "-"
        where = {"move": f"-> {o.target}", "keep": "stays in INBOX", "skip": "stays in INBOX (skipped)"}.get(
            o.action, o.action
        )
        print(f"{name:<44} {subject:<44} {scores:<11} {where}")
        if o.action == "skip":
            print(f"{'':<44} reason: {o.reasons[0]}")
        for reason in o.reasons:
            if reason.startswith("give-then-ask"):
                print(f"{'':<44} {reason} (keyword {PATTERN_KEYWORD})")
