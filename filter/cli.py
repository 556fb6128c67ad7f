"""The ``ployfilter`` command: argument parsing and wiring only.

Each subcommand builds the parts (config, model, state, mailbox, runner)
and hands over; the exit code comes from the ``PloyError`` subclass that
ended it (see errors.py and the README's table).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from filter import __version__
from filter.config import DEFAULT_MAX_MESSAGE_BYTES, LABELS, AccountConfig, Config, load_config, read_password
from filter.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    MailboxError,
    ModelError,
    OutputError,
    PloyError,
    StateError,
    UsageError,
)
from filter.mailbox import ConnectionLost, TokenUnavailable

if TYPE_CHECKING:
    from filter.explain import Explanation
    from filter.export import ExportReport
    from filter.imap import ImapMailbox
    from filter.model import ModelBundle
    from filter.runner import AccountRunner, PassReport
    from filter.state import State

log = logging.getLogger("ployfilter")

EXIT_CODES = """exit codes:
  0  success
  1  unexpected internal error (a bug: please report it)
  2  bad command line
  3  configuration error (the message names the key)
  4  authentication refused, or no password could be read
  5  server unreachable, or its TLS certificate failed verification
  6  model refused (missing, sha256 mismatch, or built for other library versions)
  7  state database unusable, or locked by another ployfilter process
  8  the server refused an operation the filter needs (SELECT, CREATE, MOVE)
  9  classify: some input files could not be read or scored
  10 output could not be written: export's labelled files, or standard output
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ployfilter",
        description="Moves unsolicited article-sharing and favour requests out of an IMAP inbox.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ployfilter {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail (never message bodies)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_text,
            description=description,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    run = command(
        "run",
        "watch the inbox and move ploy mail as it arrives (the daemon)",
        "Run as a service: handle everything not yet handled, then wait for new mail with IDLE "
        "(or poll), reconnecting with backoff after any network or server error. SIGTERM or "
        "SIGINT stop it within seconds.",
    )
    run.add_argument("-c", "--config", required=True, type=Path, help="the YAML configuration file")
    once = command(
        "once",
        "one pass over new mail, then exit",
        "Handle every message of each watched folder not handled before and print a summary per account. "
        "Exit 0, or the highest exit code of the accounts that failed (the others still get their pass).",
    )
    once.add_argument("-c", "--config", required=True, type=Path, help="the YAML configuration file")
    senders = command(
        "senders",
        "the networkers report: who shares and asks most, and whether you ever wrote back",
        "List the senders in the ledger ranked by article shares plus favour requests, with whether\n"
        "you ever wrote to them (from your sent folder), when they were first and last seen, and\n"
        "whether they show the give-then-ask pattern. Reads the state; works while the daemon runs.",
    )
    senders.add_argument("-c", "--config", required=True, type=Path, help="the YAML configuration file")
    senders.add_argument("--json", action="store_true", help="a JSON list instead of the table")
    senders.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="show only the first N senders")
    senders.add_argument(
        "--days", type=_positive_days, default=None, metavar="D", help="count only mail received in the last D days"
    )
    export = command(
        "export",
        "write the mail you have sorted as labelled files that `train` reads",
        "Read each account's article and request folders and the ordinary mail the daemon judged\n"
        "and you left in the watched folder (or brought back to it), and write them as .eml files\n"
        "under DIR/<account>/articles, favours, both and ham, for `ployfilter train` and\n"
        "`evaluate`. The server is only read. Each run makes DIR/<account>/ match the mailbox.",
    )
    export.add_argument("-c", "--config", required=True, type=Path, help="the YAML configuration file")
    export.add_argument("--out", required=True, type=Path, metavar="DIR", help="the folder to write into")
    export.add_argument(
        "--settled-days",
        type=_days(zero=True),
        default=7.0,
        metavar="D",
        help="count what the filter decided (mail it left in the inbox or moved to a label folder) only D "
        "days after it did so, time for you to undo it; what you moved yourself counts at once (default 7; 0 "
        "counts all of it now)",
    )
    export.add_argument(
        "--limit",
        type=_positive_int,
        default=5000,
        metavar="N",
        help="at most the N newest messages of each folder (default 5000)",
    )
    check = command(
        "check-config",
        "validate the config, try the login, print what would happen",
        "Validate the configuration and the model, log in to every account, and print the plan.",
    )
    check.add_argument("-c", "--config", required=True, type=Path, help="the YAML configuration file")
    classify = command(
        "classify",
        "score message files (or stdin) with the model",
        "Score each FILE (an RFC 822 message; '-' reads one from stdin). Thresholds come from "
        "the config when -c is given, else from the model's card. Messages larger than the "
        "config's max_message_bytes are judged on their start, as the daemon does.",
    )
    out = classify.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per line: file, scores, labels")
    out.add_argument(
        "--headers",
        action="store_true",
        help="read one message on stdin, write it back with X-Ploy-Scores, X-Ploy-Labels and X-Ploy-Keywords added "
        "(for Sieve's vnd.dovecot.filter, procmail or maildrop)",
    )
    classify.add_argument("-c", "--config", type=Path, help="take thresholds from this configuration")
    classify.add_argument("--model", type=Path, help="a model bundle folder (default: the shipped model)")
    classify.add_argument(
        "--explain",
        action="store_true",
        help="show the features that pushed each score up and down, in logit units "
        "(with --json: an 'explain' key in each scored record); not with --headers",
    )
    classify.add_argument("files", nargs="*", metavar="FILE", help="message files; '-' for stdin")
    demo = command(
        "demo",
        "start a throwaway local Dovecot with sample mail and run one pass over it",
        "Start a private Dovecot on 127.0.0.1 in a temporary folder, append the sample messages "
        "from examples/, run one pass with the shipped model, report what moved where and why, "
        "and stop the server.",
    )
    demo.add_argument("--keep", type=Path, help="keep the server's files and the state in this folder")
    train = command(
        "train",
        "train a model bundle from labelled mail files",
        "Read labelled mail from each DATA path, measure the model with grouped cross-validation\n"
        "and choose its thresholds (best F1 with little ordinary mail flagged), fit it on all the mail and\n"
        "write a bundle (model.joblib and card.json) to --out.\n\n" + _DATA_HELP,
    )
    _data_arguments(train)
    train.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="the bundle folder to write (a bundle there is replaced)"
    )
    train.add_argument("--folds", type=_folds, default=5, metavar="N", help="cross-validation folds (default 5)")
    train.add_argument(
        "--repeats",
        type=_repeats,
        default=_DEFAULT_REPEATS,
        metavar="N",
        help=f"partitions into folds whose out-of-fold scores choose the thresholds together (default "
        f"{_DEFAULT_REPEATS}; each one costs a full cross-validation, and with 1 the thresholds move more "
        "with the partition)",
    )
    train.add_argument(
        "--group-by",
        choices=("sender", "folder"),
        default="sender",
        help="keep each sender's mail (default), or each folder or mailbox, on one side of every split",
    )
    evaluate = command(
        "evaluate",
        "measure a model on labelled mail: precision, recall, F1, ordinary mail flagged",
        "Score labelled mail with a model and report, per label and per language, precision,\n"
        "recall, F1 and the confusion counts at the thresholds the daemon would use (from -c\n"
        "CONFIG, else the model's card), the average precision, and the share of ordinary mail\n"
        "(labelled neither) that would get a label. Use mail the model was not trained on.\n\n" + _DATA_HELP,
    )
    _data_arguments(evaluate)
    evaluate.add_argument(
        "--model", type=Path, metavar="DIR", help="a model bundle folder (default: the shipped model)"
    )
    evaluate.add_argument(
        "-c", "--config", type=Path, help="take thresholds and max_message_bytes from this configuration"
    )
    evaluate.add_argument(
        "--plot", type=Path, metavar="FILE", help="write a precision-recall plot (.svg; .png needs matplotlib)"
    )
    evaluate.add_argument("--json", action="store_true", help="print the report as one JSON object")
    evaluate.add_argument(
        "--sweep",
        action="store_true",
        help="also show each label at thresholds 0.1 to 0.9, the other label kept at its own: what a "
        "change to one threshold in the config would do",
    )
    return p


_DATA_HELP = """\
DATA is a folder tree of .eml files, a Maildir (cur/ and new/), an mbox file or one .eml
file. Labels come from folder names: a folder named article_share, article or articles;
favour_request, favour, favor, favours or requests; both; or neither, ordinary, ham or
inbox labels the mail beneath it (the deepest such folder counts; an mbox file's name
counts as a folder). --labels CSV gives them instead, and wins where both speak: columns
path,article_share,favour_request (others, such as lang and note, are ignored), paths
relative to the CSV's folder (box.mbox#3 is the third message of an mbox), values 1, 0
or ? (left out). --labels takes several files (--labels a.csv b.csv, or the option again); a
message two of them label differently is an error. A message with no label is an error unless
--skip-unlabelled is given.
Unreadable, empty or binary files are skipped with a warning."""


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    # "*", not "+": with DATA missing, say why (a --labels given first takes the paths after it)
    parser.add_argument("data", nargs="*", type=Path, metavar="DATA", help="mail to read (see above)")
    parser.add_argument(
        "--labels", type=Path, metavar="CSV", nargs="+", action="extend", default=[], help="label files (see above)"
    )
    parser.add_argument(
        "--skip-unlabelled", action="store_true", help="leave out messages without a label, with a warning"
    )


# filter.train.DEFAULT_REPEATS, written out so that starting the command imports no scikit-learn
# (a test keeps the two equal).
_DEFAULT_REPEATS = 3
# Seconds a stopping daemon waits for its accounts, then again after cutting their connections.
STOP_GRACE = 5.0


def _whole_number(what: str, low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` (to ``high``), else a usage error naming ``what``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = low - 1
        if number < low or (high is not None and number > high):
            span = f"{low} or more" if high is None else f"{low} to {high}"
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}; give a whole number, {span}")
        return number

    return parse


_repeats = _whole_number("a number of partitions", 1, 20)
_folds = _whole_number("a number of folds", 2)
_positive_int = _whole_number("a count", 1)


def _days(*, zero: bool) -> Callable[[str], float]:
    """An argparse type for a number of days: above 0, or 0 too when ``zero``."""
    wanted = "0 or more, such as 7" if zero else "a number above 0, such as 30"

    def parse(value: str) -> float:
        try:
            days = float(value)
        except ValueError:
            days = math.nan
        if not (math.isfinite(days) and (days >= 0 if zero else days > 0)):
            raise argparse.ArgumentTypeError(f"{value!r} is not a number of days; give {wanted}")
        return days

    return parse


_positive_days = _days(zero=False)


def main(argv: Sequence[str] | None = None) -> int:
    # argparse prints --help and --version itself and drops a write error: they are written as any output.
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            args = _parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code != 0:
            raise

        def write_printed() -> int:
            sys.stdout.write(printed.getvalue())
            return 0

        logging.basicConfig(format="ployfilter: %(message)s", stream=sys.stderr)
        return _guarded(write_printed, needs_stdout=True)
    if args.command == "run":
        # SIGHUP's default is to end the process: until the daemon's own handler is in place, it is ignored.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _set_up_output(json_out=bool(getattr(args, "json", False)))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command is None:
        _parser().print_help()
        return UsageError.exit_code
    # imapclient logs every server response at DEBUG, message bodies included: never let it.
    logging.getLogger("imapclient").setLevel(logging.WARNING)
    return _guarded(lambda: _command(args), needs_stdout=args.command != "run")


def _guarded(work: Callable[[], int], *, needs_stdout: bool) -> int:
    """Run ``work`` with standard output guarded: a PloyError, a write error or Ctrl-C gives an exit code."""
    stdout = sys.stdout
    try:
        if stdout is None and needs_stdout:
            raise OutputError("cannot write to standard output (standard output is closed): the results would be lost")
        if stdout is not None:
            sys.stdout = _GuardedOutput(stdout)
        code = work()
        if sys.stdout is not None:
            sys.stdout.flush()  # here, where a failure is reported, not at the interpreter's exit
        return code
    except PloyError as exc:
        log.error("%s", exc)
        if isinstance(exc, OutputError):
            _discard_output()
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`classify ... | head`): stop quietly, as other Unix tools do.
        _discard_output()
        return 141
    finally:
        sys.stdout = stdout


def _discard_output() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())  # type: ignore[union-attr]


class _GuardedOutput:
    """Standard output whose write errors (other than a reader gone away) end the command as OutputError."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: Any) -> int:
        with _reported_as_output_error():
            return int(self._stream.write(text))

    def flush(self) -> None:
        if self._stream is not None:
            with _reported_as_output_error():
                self._stream.flush()

    @property
    def buffer(self) -> _GuardedOutput:
        return _GuardedOutput(self._stream.buffer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _reported_as_output_error() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write to standard output ({exc.strerror or exc})") from exc


def _command(args: argparse.Namespace) -> int:
    """Run the command ``args`` names; its exit code."""
    if args.command == "classify":
        return _classify(args)
    if args.command == "train":
        _need_data(args)
        return _train(args)
    if args.command == "evaluate":
        _need_data(args)
        return _evaluate(args)
    if args.command == "demo":
        from filter.demo import run_demo

        if not args.verbose:
            logging.getLogger().setLevel(logging.WARNING)
        return run_demo(args.keep)
    config = load_config(args.config)
    if not args.verbose:
        logging.getLogger().setLevel(config.log_level.upper())
    if args.command == "check-config":
        return _check_config(config)
    if args.command == "senders":
        return _senders(config, args)
    if args.command == "export":
        return _export(config, args)
    if args.command == "once":
        return _once(config)
    return _run(config, args.config, args.verbose)


def load_model(config: Config | None, override: Path | None = None) -> ModelBundle:
    from filter.model import ModelBundle, default_model_path

    path = override or (config.model if config is not None else None) or default_model_path()
    return ModelBundle.load(path)


def language_points(model: ModelBundle, thresholds: Mapping[str, float]) -> dict[str, str]:
    """Per language with a shift in the card, the unshifted score each threshold stands for, as text."""
    points: dict[str, str] = {}
    for language, shifts in sorted(model.language_offsets.items()):
        parts = [
            f"{label} {value:.2f} acts as {_unshifted(value, float(shift)):.2f}"
            for (label, value), shift in zip(thresholds.items(), shifts, strict=True)
            if shift
        ]
        if parts:
            points[language] = ", ".join(parts)
    return points


def _unshifted(threshold: float, shift: float) -> float:
    from filter.model import from_log_odds, log_odds

    if not 0.0 < threshold < 1.0:
        return threshold
    return float(from_log_odds(log_odds(threshold) - shift))


def thresholds_for(config: Config | None, model: ModelBundle) -> dict[str, float]:
    return {
        label: config.threshold(label, model.thresholds[label]) if config else model.thresholds[label]
        for label in LABELS
    }


def _mailbox(config: Config, account: AccountConfig, should_stop: Callable[[], bool] = lambda: False) -> ImapMailbox:
    from filter.imap import ImapMailbox

    if account.auth == "xoauth2":  # an access token expires: its command runs again at every login
        return ImapMailbox(account, lambda: read_password(account, should_stop), poll_interval=config.poll_interval)
    return ImapMailbox(account, read_password(account, should_stop), poll_interval=config.poll_interval)


def _open_state(config: Config) -> State:
    from filter.state import State

    return State.in_memory() if config.action == "dry-run" else State.open(config.state_path)


def _connect(mailbox: ImapMailbox, account: AccountConfig) -> None:
    try:
        mailbox.connect()
    except TokenUnavailable as exc:
        raise AuthError(str(exc)) from exc
    except ConnectionLost as exc:
        raise ConnectError(f"account {account.name}: cannot reach {account.host}:{account.port} ({exc})") from exc


# How often one ``once`` connects again after the server itself ended the session, when the session made
# no progress. A session ended while a message the server failed to return before was tried again is
# progress: such a message is tried a bounded number of times before it is skipped.
ONCE_RECONNECTS = 10


def one_pass(config: Config, account: AccountConfig, model: ModelBundle, state: State) -> PassReport:
    """Connect to one account, run one pass over its watched folder, log out.

    When the server ends the session, the pass connects again at once and
    goes on from its state, up to ONCE_RECONNECTS times; and whatever
    ended a session during which a message that failed before was tried
    again, since those tries are counted and bounded. So a message the
    server cannot return is tried and skipped within one run rather than
    one try per run. What the interrupted tries did is counted in the
    report.
    """
    from filter.runner import AccountRunner, PassReport

    mailbox = _mailbox(config, account)
    runner = AccountRunner(config, account, mailbox, model, thresholds_for(config, model), state)
    done = PassReport(account.name)
    started = time.monotonic()
    attempts = 0
    while True:
        tried = runner.tries_counted
        _connect(mailbox, account)
        try:
            runner.prepare()
            report = runner.pass_once()
            report.outcomes[:0] = done.outcomes
            report.carried_over += done.carried_over
            report.recovered += done.recovered
            report.seconds = time.monotonic() - started
            return report
        except ConnectionLost as exc:
            partial = runner.report
            if partial is not None:
                done.outcomes += partial.outcomes
                done.carried_over += partial.carried_over
                done.recovered += partial.recovered
            if runner.tries_counted == tried:
                if not exc.by_server or attempts == ONCE_RECONNECTS:
                    raise ConnectError(f"account {account.name}: connection lost during the pass ({exc})") from exc
                attempts += 1
            log.warning("%s: the session ended (%s); connecting again", account.name, exc)
        finally:
            mailbox.close()


def _once(config: Config) -> int:
    model = load_model(config)
    refused = False

    def one(account: AccountConfig, state: State) -> str:
        nonlocal refused
        report = one_pass(config, account, model, state)
        refused = refused or report.refused > 0
        return summary(report)

    code = _each_account(config, _open_state(config), one)
    return max(code, MailboxError.exit_code if refused else 0)


def _each_account(config: Config, state: State, work: Callable[[AccountConfig, State], str]) -> int:
    """Run ``work`` for each account and print its line; then close ``state``.

    One account's failure must not stop the others: it is logged, and the
    exit code is the failure's. With one account, the failure is raised.
    """
    failures: list[PloyError] = []
    try:
        for account in config.accounts:
            try:
                print(work(account, state))
            except PloyError as exc:
                if len(config.accounts) == 1:
                    raise
                log.error("%s", exc)
                failures.append(exc)
    finally:
        state.close()
    return max((f.exit_code for f in failures), default=0)


def summary(report: PassReport) -> str:
    """One line per account: how many messages went where."""
    moved: dict[str, int] = {}
    for o in report.outcomes:
        if o.action in ("move", "would-move") and o.target:
            moved[o.target] = moved.get(o.target, 0) + 1
    parts = [f"{n} {'would move' if report.count('would-move') else 'moved'} to {t}" for t, n in sorted(moved.items())]
    for action in ("flag", "would-flag", "keep", "skip"):
        if report.count(action):
            parts.append(f"{report.count(action)} {action.replace('-', ' ')}")
    if report.carried_over:
        parts.append(f"{report.carried_over} carried over after a UIDVALIDITY change")
    if report.recovered:
        parts.append(f"{report.recovered} interrupted actions completed")
    if report.refused:
        parts.append(f"{report.refused} refused by the server and left in place (tried again next pass)")
    head = f"{report.account}: {len(report.outcomes)} new messages in {report.seconds:.1f} s"
    return head + (": " + ", ".join(parts) if parts else "")


def _senders(config: Config, args: argparse.Namespace) -> int:
    import time

    from filter.senders import NO_SENDERS, format_table, rank, to_json
    from filter.state import State

    if config.action == "dry-run":
        print("action is dry-run: nothing is recorded, so there is no ledger to report")
        return 0
    if not config.state_path.exists():
        print(f"no state yet at {config.state_path}: run `ployfilter once` or `ployfilter run` first")
        return 0
    # No lock: the report only reads, and the daemon holding the lock must not stop it.
    state = State.open_reader(config.state_path)
    try:
        now = time.time()
        since = now - args.days * 86400 if args.days else 0.0
        pattern_shares = config.policy.pattern_shares
        rows = rank(state.senders(since=since), pattern_shares=pattern_shares, limit=args.limit)
    finally:
        state.close()
    if args.json:
        print(json.dumps(to_json(rows, pattern_shares), indent=2))
    else:
        print(format_table(rows, now, pattern_shares) if rows else NO_SENDERS)
    return 0


def _export(config: Config, args: argparse.Namespace) -> int:
    from filter.export import slug
    from filter.state import State

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a folder")
    folders: dict[str, str] = {}
    for account in config.accounts:
        if slug(account.name) in ("cur", "new", "tmp"):  # OUT would then read as a Maildir
            raise UsageError(f"export: account {account.name!r}: cur, new and tmp are Maildir names; rename it")
        other = folders.setdefault(slug(account.name), account.name)
        if other != account.name:
            raise UsageError(
                f"export: accounts {other!r} and {account.name!r} would share the folder {out / slug(other)}; "
                "rename one of them in the configuration"
            )
    if config.action == "dry-run" or not config.state_path.exists():
        log.warning("no ledger of judged mail to read: ordinary mail is left out, only the two folders are written")
        state = State.in_memory()
    else:
        # No lock: export only reads the state, and the daemon holding the lock must not stop it.
        state = State.open_reader(config.state_path)

    def one(account: AccountConfig, state: State) -> str:
        return _export_account(config, account, state, args).summary()

    return _each_account(config, state, one)


def _export_account(config: Config, account: AccountConfig, state: State, args: argparse.Namespace) -> ExportReport:
    from filter.export import export_account

    mailbox = _mailbox(config, account)
    _connect(mailbox, account)
    try:
        return export_account(
            account,
            mailbox,
            state,
            args.out,
            max_bytes=config.max_message_bytes,
            now=time.time(),
            flagging=config.action == "flag",
            settled_days=args.settled_days,
            limit=args.limit,
        )
    except ConnectionLost as exc:
        raise ConnectError(f"account {account.name}: connection lost during the export ({exc})") from exc
    except sqlite3.Error as exc:
        raise StateError(f"state_path: {config.state_path}: {exc}") from exc
    finally:
        mailbox.close()


def _run(config: Config, path: Path, verbose: bool = False) -> int:
    from filter.runner import AccountRunner

    stop = threading.Event()
    reload = threading.Event()
    failures: list[PloyError] = []
    runners: dict[str, AccountRunner] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        reload.set()

    # Before the model and the state are loaded: a reload asked for while the daemon starts is done once it runs.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    model = load_model(config)
    thresholds = thresholds_for(config, model)
    state = _open_state(config)

    def serve(account: AccountConfig) -> None:
        # One account's failure ends its own thread only: the others go on filtering.
        try:
            runner = AccountRunner(config, account, _mailbox(config, account, stop.is_set), model, thresholds, state)
            runners[account.name] = runner
            runner.run_forever(stop)
        except PloyError as exc:
            if not stop.is_set():  # else a signal ended the run first
                failures.append(exc)
                if len(config.accounts) > 1:
                    log.error("%s; this account stops, the others go on", exc)
        except Exception:
            log.exception("account %s: unexpected error", account.name)
            failures.append(PloyError(f"account {account.name}: unexpected error"))

    threads = [
        threading.Thread(target=serve, args=(account,), name=f"account-{account.name}", daemon=True)
        for account in config.accounts
    ]
    log.info("watching %s (action: %s)", ", ".join(f"{a.name}:{a.watch}" for a in config.accounts), config.action)
    for t in threads:
        t.start()
    stopping_since: float | None = None
    interrupted = False
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(0.2)
        if reload.is_set():
            reload.clear()
            config = _reload(config, path, model, runners, verbose)
        if stop.is_set() and any(t.is_alive() for t in threads):
            stopping_since = stopping_since or time.monotonic()
            waited = time.monotonic() - stopping_since
            if waited > STOP_GRACE and not interrupted:
                # A read blocked on a silent server would hold the stop up to the socket timeout.
                interrupted = True
                for runner in runners.values():
                    interrupt = getattr(runner.mailbox, "interrupt", None)
                    if interrupt is not None:
                        interrupt()
            elif waited > 2 * STOP_GRACE:
                names = ", ".join(t.name for t in threads if t.is_alive())
                log.warning("%s did not stop in %.0f s; exiting anyway (the state is safe)", names, waited)
                return failures[0].exit_code if failures else 0
    state.close()
    if failures:
        log.error("%s", failures[0])
        return failures[0].exit_code
    log.info("stopped")
    return 0


def _reload(
    config: Config, path: Path, model: ModelBundle, runners: Mapping[str, AccountRunner], verbose: bool = False
) -> Config:
    """SIGHUP: read the file again. A valid one applies from each account's next pass; an invalid one is refused."""
    from filter.config import config_changes

    try:
        new = load_config(path)
    except PloyError as exc:
        log.error("reload refused, the running configuration stays in force: %s", exc)
        return config
    except Exception:  # a running daemon must outlive whatever the file holds
        log.exception("reload refused, the running configuration stays in force")
        return config
    changes, restart = config_changes(config, new)
    if not changes:
        log.info("reloaded %s: nothing changed", path)
        return config
    for line in changes:
        log.info("reloaded %s: %s", path, line)
    if restart:
        log.warning("these changes take effect only after a restart: %s", "; ".join(restart))
    if not verbose:  # -v on the command line outranks the file
        logging.getLogger().setLevel(new.log_level.upper())
    # What the running process was built on stays: the state, the model, the connections' polling.
    action = new.action if "dry-run" not in (config.action, new.action) else config.action
    if action != new.action:
        log.warning("action %s -> %s takes effect only after a restart", config.action, new.action)
    new = replace(
        new,
        state_path=config.state_path,
        model=config.model,
        poll_interval=config.poll_interval,
        idle_renew=config.idle_renew,
        reconnect_max=config.reconnect_max,
        action=action,
    )
    thresholds = thresholds_for(new, model)
    running: list[AccountConfig] = []
    for account in config.accounts:
        runner = runners.get(account.name)
        update = next((a for a in new.accounts if a.name == account.name), None)
        current = runner.account if runner is not None else account
        if runner is not None and update is not None:
            # The connection stays as it was started; everything that shapes decisions is taken over.
            current = replace(current, folders=update.folders, review_folder=update.review_folder, sent=update.sent)
            runner.reconfigure(new, current, thresholds)
        running.append(current)
    # What runs, not what the file says: the next reload compares with this, and keys that need a
    # restart are never taken over by a later reload.
    return replace(new, accounts=tuple(running))


def _state_path_check(path: Path) -> str:
    """How the state file stands ("exists" or "will be created"), or StateError when it cannot be used.

    Nothing is opened or created: the daemon may hold the file's lock.
    """
    if path.exists():
        if not path.is_file():
            raise StateError(f"state_path: {path} is not a regular file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise StateError(f"state_path: {path} cannot be read and written by this user")
        with path.open("rb") as f:
            head = f.read(16)
        if head and head != b"SQLite format 3\x00":
            raise StateError(f"state_path: {path} is not a ployfilter state file (not an SQLite database)")
        return "exists"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise StateError(f"state_path: {path} cannot be created ({parent} is not a folder this user may write)")
    return "will be created"


def _check_config(config: Config) -> int:
    model = load_model(config)
    thresholds = thresholds_for(config, model)
    print(f"configuration: {config.source} is valid")
    print(f"model: {model.path} (sha256 verified)")
    if config.action == "dry-run":
        where = "in memory (dry-run)"
    else:
        where = f"{config.state_path} ({_state_path_check(config.state_path)})"
    print(f"action: {config.action}; state: {where}")
    print("thresholds: " + ", ".join(f"{label} {value:.2f}" for label, value in thresholds.items()))
    for language, line in language_points(model, thresholds).items():
        print(f"  {language} mail is scored at its own point: {line}")
    for index, account in enumerate(config.accounts):
        mailbox = _mailbox(config, account)
        _connect(mailbox, account)
        try:
            targets = {"watch": account.watch, **{f"folders.{k}": v for k, v in account.folders.items()}}
            if account.review_folder is not None:
                targets["folders.review"] = account.review_folder
            if account.sent is not None:
                targets["sent"] = account.sent
            for key, folder in targets.items():
                hint = mailbox.separator_hint(folder)
                if hint is not None:
                    raise ConfigError(f"accounts[{index}].{key}: {hint}")
            if config.digest is not None and (hint := mailbox.separator_hint(config.digest.folder)) is not None:
                raise ConfigError(f"digest.folder: {hint}")
            if account.sent is not None and not mailbox.folder_exists(account.sent):
                raise ConfigError(
                    f"accounts[{index}].sent: {account.sent!r} is not a folder on this server; without your sent "
                    "mail, correspondents' mail is judged as a stranger's"
                )
            status = mailbox.examine(account.watch)
            caps = mailbox.capabilities()
            sent = account.sent or mailbox.find_sent_folder()
        except ConnectionLost as exc:
            raise ConnectError(f"account {account.name}: connection lost ({exc})") from exc
        finally:
            mailbox.close()
        move = "UID MOVE" if "MOVE" in caps else "UID COPY + UID EXPUNGE" if "UIDPLUS" in caps else "COPY + \\Deleted"
        wait = "IDLE" if "IDLE" in caps else f"polling every {config.poll_interval:g} s"
        print(
            f"account {account.name}: logged in to {account.host}:{account.port} ({account.security}) "
            f"as {account.username}" + (" with an OAuth 2.0 token" if account.auth == "xoauth2" else "")
        )
        print(
            f"  watches {account.watch}: {status.exists} messages, UIDVALIDITY {status.uidvalidity}; "
            f"waits with {wait}; moves with {move}"
        )
        for label in LABELS:
            print(f"  {label} at or above {thresholds[label]:.2f} -> {account.folders[label]}")
        if config.policy.review_band:
            review = account.review_folder or "keyword $PloyReview, in place"
            print(f"  within {config.policy.review_band:.2f} below a threshold -> {review}")
        if sent:
            print(f"  reads your sent mail from {sent}" + ("" if account.sent else " (the folder marked \\Sent)"))
        else:
            print("  no folder is marked \\Sent: set accounts[].sent to keep correspondents' mail in place")
    policy = config.policy
    print(
        f"policy: correspondents ({policy.correspondent_days:g} days) {policy.correspondents}; "
        f"give-then-ask after {policy.pattern_shares} shares; drip {policy.drip_shares} shares in "
        f"{policy.drip_days:g} days lowers thresholds by {policy.drip_lower:.2f}; "
        f"review band {policy.review_band:.2f}; "
        f"{len(policy.allow)} allowed, {len(policy.block)} blocked; "
        + (f"weekly digest to {config.digest.folder} on {config.digest.weekday}" if config.digest else "no digest")
    )
    return 0


def _classify(args: argparse.Namespace) -> int:
    from filter.message import parse_message
    from filter.runner import score_each

    config = load_config(args.config) if args.config else None
    model = load_model(config, args.model)
    thresholds = thresholds_for(config, model)
    cap = config.max_message_bytes if config else DEFAULT_MAX_MESSAGE_BYTES
    if args.headers:
        if args.explain:
            raise UsageError("classify --explain writes to the terminal; it does not go with --headers")
        if args.files not in ([], ["-"]):
            raise UsageError("classify --headers reads one message from stdin; give no FILE (or '-')")
        if sys.stdin is None:
            raise UsageError("classify --headers reads one message from stdin, and stdin is closed")
        data = sys.stdin.buffer.read()
        message = parse_message(data[:cap])
        result = None if message.error else score_each(model, [message], "classify")[0]
        scores = result.values if result is not None else {}
        keywords = _filter_keywords(config, data[:cap], message.sender, scores, thresholds) if result else ()
        out = memoryview(with_headers(data, scores, thresholds, keywords))
        while out:  # a pipe may take part of a large write: the rest is written, or its error raised
            out = out[sys.stdout.buffer.write(out) :]
        sys.stdout.buffer.flush()
        return 0
    if not args.files:
        raise UsageError("classify: give one or more FILEs, or '-' for stdin")
    if args.files.count("-") > 1:
        raise UsageError("classify: '-' (stdin) can be given once")
    failed = False
    for start in range(0, len(args.files), 256):
        names = args.files[start : start + 256]
        datas: list[bytes | None] = []
        why: dict[int, str] = {}
        for i, name in enumerate(names):
            try:
                data = _read_input(name, cap)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                if isinstance(exc, IsADirectoryError):
                    reason += "; classify reads message files (train and evaluate read folders)"
                why[i], data = f"unreadable file: {reason}", None
            if data is not None and _looks_like_mbox(data):
                # Only a warning: a single message may hold such a line too (a patch attached as text).
                print(
                    f"ployfilter: {_shown(name)}: looks like an mbox of several messages; classify reads each file "
                    "as one message (train and evaluate read mbox files message by message)",
                    file=sys.stderr,
                )
            if i in why:
                print(f"ployfilter: {_shown(name)}: {why[i]}", file=sys.stderr)
                failed = True
            datas.append(data)
        parsed = [parse_message(d) if d is not None else None for d in datas]
        scorable = [p for p in parsed if p is not None and not p.error]
        scored = iter(score_each(model, scorable, "classify"))
        for i, (name, p) in enumerate(zip(names, parsed, strict=True)):
            if p is None:
                _emit(args.json, name, None, [], why[i])
                continue
            result = None if p.error else next(scored)
            if result is None and not p.error:
                _emit(args.json, name, None, [], "the model could not score this message")
                failed = True
                continue
            values = result.values if result is not None else {label: 0.0 for label in LABELS}
            labels = [label for label in LABELS if values.get(label, 0.0) >= thresholds[label]]
            explained = None
            if args.explain and result is not None:
                from filter.explain import explain  # scikit-learn is imported only to explain

                explained = explain(model, p)
            _emit(args.json, name, values, labels, f"skipped: {p.error}" if p.error else None, explained)
    return 9 if failed else 0


_STDIN_DRAIN = 1 << 28


# The separator line of an mbox (RFC 4155): "From ", an address, then a ctime() date.
_MBOX_FROM = re.compile(
    rb"(?:^|\n\r?\n)From \S+ +(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
)


def _looks_like_mbox(data: bytes) -> bool:
    """Whether ``data`` starts as an mbox and holds what looks like a second message's separator line."""
    return data.startswith(b"From ") and len(_MBOX_FROM.findall(data, 0, 1 << 24)) >= 2


def _read_input(name: str, cap: int) -> bytes:
    """The first ``cap`` bytes of a file, or of stdin for "-".

    A named pipe is opened without waiting for a writer (a pipe nobody
    writes to reads as empty), then read as any file, so that a FIFO among
    the files cannot hang the command; what a process substitution
    (``<(...)``) writes is read as it comes.
    """
    if name == "-":
        if sys.stdin is None:
            raise OSError("stdin is closed")
        data = sys.stdin.buffer.read(cap)
        # The rest is read and dropped, so that a writer such as `cat big.eml |` ends cleanly rather than on a
        # broken pipe; up to a bound, so that an endless stdin (/dev/zero) cannot hold the command.
        drained = 0
        while drained < _STDIN_DRAIN and (chunk := sys.stdin.buffer.read(1 << 20)):
            drained += len(chunk)
        return data
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        return f.read(cap)


def _set_up_output(json_out: bool) -> None:
    """Output that no character can break: JSON always in UTF-8, text in the locale's encoding.

    JSON is a contract with other programs, so a Latin-1 or ASCII locale
    must not change its bytes; text is for the terminal, and a character
    its encoding cannot show is written as an escape (``\\xe9``).
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                if stream is sys.stdout and json_out:
                    reconfigure(encoding="utf-8", errors="backslashreplace")
                else:
                    reconfigure(errors="backslashreplace")


def _shown(name: str) -> str:
    """A file name as printable UTF-8: bytes that are not UTF-8 (kept as surrogates by Python) as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _emit(
    as_json: bool,
    name: str,
    scores: Mapping[str, float] | None,
    labels: list[str],
    note: str | None,
    explained: Mapping[str, Explanation] | None = None,
) -> None:
    """One result: a line (then the explanation's lines) or one JSON object (with "explain" when explained)."""
    name = _shown(name)
    if as_json:
        obj: dict[str, object] = {"file": name}
        if scores is None:
            # The same keys as every record, so a reader never trips on a file that failed.
            obj["scores"] = {label: 0.0 for label in LABELS}
            obj["labels"] = []
            obj["error"] = note
        else:
            obj["scores"] = {k: round(v, 4) for k, v in scores.items()}
            obj["labels"] = labels
            if note:
                obj["note"] = note
            if explained is not None:
                from filter.explain import explanation_json

                obj["explain"] = explanation_json(explained)
        print(json.dumps(obj, ensure_ascii=False))
    elif scores is None:
        print(f"{name}: {note}")
    else:
        shown = " ".join(f"{k}={v:.2f}" for k, v in scores.items())
        print(f"{name}: {shown} -> {', '.join(labels) or 'none'}" + (f" ({note})" if note else ""))
        if explained is not None:
            from filter.explain import explanation_lines

            for line in explanation_lines(explained):
                print(line)


def _filter_keywords(
    config: Config | None, data: bytes, sender: str, scores: Mapping[str, float], thresholds: Mapping[str, float]
) -> tuple[str, ...]:
    """The keywords the daemon's policy would give this message, with the ledger read when -c names a state."""
    from filter.config import DEFAULT_FOLDERS, PolicyConfig
    from filter.mailbox import header_date, header_fields
    from filter.policy import SenderHistory, decide, normalise_address
    from filter.runner import sent_time

    address = normalise_address(sender)
    arrived = time.time()  # a delivery filter runs as the message arrives
    dated = header_date(header_fields(data))
    when = sent_time(dated, arrived, arrived)
    history = SenderHistory()
    if config is not None and config.action != "dry-run" and address and config.state_path.exists():
        from filter.imap import message_id_of
        from filter.mailbox import Fingerprint
        from filter.state import State, fingerprint_key, ledger_key

        fingerprint = fingerprint_key(Fingerprint(message_id_of(data), len(data), None))
        own = ledger_key(fingerprint, address, dated)
        try:
            state = State.open_reader(config.state_path)
        except StateError as exc:
            # A delivery filter must still answer: the message is judged as from a sender never seen.
            log.warning("%s; judged without the sender's history", exc)
        else:
            try:
                # As the daemon reads it: nothing dated later, and not this message (recorded from another account).
                history = state.history(address, before=when, exclude=[own])
            finally:
                state.close()
    decision = decide(
        scores,
        thresholds,
        DEFAULT_FOLDERS,
        "flag",
        sender=address,
        history=history,
        policy=config.policy if config is not None else PolicyConfig(),
        now=when,
    )
    return decision.keywords


def with_headers(
    data: bytes, scores: Mapping[str, float], thresholds: Mapping[str, float], keywords: Sequence[str] = ()
) -> bytes:
    """The message with X-Ploy-Scores, X-Ploy-Labels and X-Ploy-Keywords put first (after an mbox "From " line).

    X-Ploy-Keywords carries what the daemon would set as IMAP keywords
    ($PloyArticle, $PloyFavour, $PloyPattern, $PloyReview), or "none".

    Any X-Ploy- field the message came with is taken out of its header
    first (as SpamAssassin does with X-Spam-), so that a sender cannot
    answer a filter's question for it; every other byte stays as it was,
    which matters for signed mail. The added lines end as the message's
    first line does (CRLF, LF or a lone CR).
    """
    eol = _first_line_end(data)
    shown = "; ".join(f"{label}={scores.get(label, 0.0):.3f}" for label in LABELS)
    labels = [label for label in LABELS if scores.get(label, 0.0) >= thresholds[label]]
    headers = (
        f"X-Ploy-Scores: {shown}".encode()
        + eol
        + f"X-Ploy-Labels: {', '.join(labels) or 'none'}".encode()
        + eol
        + f"X-Ploy-Keywords: {' '.join(keywords) or 'none'}".encode()
        + eol
    )
    start = 0
    if data.startswith(b"From "):
        found = _LINE_END.search(data)
        if found is None:
            return data + eol + headers
        start = found.end()
    return data[:start] + headers + _without_ploy_fields(data, start)


_LINE_END = re.compile(rb"\r\n|\n|\r")
_PLOY_FIELD = re.compile(rb"x-ploy-[!-9;-~]*[ \t]*:", re.I)
_PLOY_LINE = re.compile(rb"(?:^|(?<=[\r\n]))x-ploy-", re.I)
# The blank line that ends the header: a line end right after another (CRLF taken whole, never as CR then LF).
_BLANK_LINE = re.compile(rb"(?>\r\n|\n|\r)(\r\n|\n|\r)")


def _first_line_end(data: bytes) -> bytes:
    found = _LINE_END.search(data)
    return found.group() if found else b"\n"


def _without_ploy_fields(data: bytes, start: int) -> bytes:
    """``data[start:]`` without the header fields named X-Ploy-..., continuation lines included."""
    if _LINE_END.match(data, start):
        return data[start:]  # no header at all
    blank = _BLANK_LINE.search(data, start)
    header_end = blank.start(1) if blank else len(data)
    if _PLOY_LINE.search(data, start, header_end) is None:
        return data[start:]
    kept: list[bytes] = []
    position = start
    dropping = False
    while position < header_end:
        found = _LINE_END.search(data, position, header_end)
        end = found.end() if found else header_end
        line = data[position:end]
        if line[:1] not in (b" ", b"\t"):
            dropping = _PLOY_FIELD.match(line) is not None
        if not dropping:
            kept.append(line)
        position = end
    return b"".join(kept) + data[header_end:]


def _need_data(args: argparse.Namespace) -> None:
    if not args.data:
        raise UsageError(
            f"{args.command}: no DATA to read; give the mail folders or files first: --labels takes every path "
            "after it (or end its list with --)"
        )


def _train(args: argparse.Namespace) -> int:
    from filter.dataset import read_labelled
    from filter.model import ModelBundle
    from filter.train import deduplicate, metric_lines, train, training_summary

    _check_out(args.out)  # before the minutes of training, not after
    data = read_labelled(
        args.data, label_files=args.labels, group_by=args.group_by, skip_unlabelled=args.skip_unlabelled
    )
    examples = deduplicate(data.messages)
    if len(examples) < len(data.messages):
        log.info(
            "%d duplicate messages (same Message-ID, or same subject and text) left out",
            len(data.messages) - len(examples),
        )
    if not examples:
        raise UsageError("train: no labelled message could be read")
    for label in LABELS:
        if all(e.labels.get(label) for e in examples):
            raise UsageError(
                f"train: all {len(examples)} messages are labelled {label}: the model would flag every message; "
                "give it mail without that label too (a folder named ham/, or 0 in a labels CSV)"
            )
    groups = [e.group for e in examples]
    kind = "senders" if args.group_by == "sender" else "folders"
    if len(set(groups)) < 2:
        raise UsageError(f"train: cross-validation needs labelled mail from 2 or more {kind}; found {len(set(groups))}")
    kinds_by_group: dict[str, set[tuple[bool, ...]]] = {}
    for e in examples:
        kinds_by_group.setdefault(e.group, set()).add(tuple(bool(e.labels.get(label)) for label in LABELS))
    one_kind_each = all(len(k) == 1 for k in kinds_by_group.values())
    if args.group_by == "folder" and one_kind_each and len(set().union(*kinds_by_group.values())) > 1:
        log.warning(
            "every one of the %d %s holds one kind of mail only: each fold then holds out whole labels, and "
            "the figures and thresholds mean little. With label folders (articles/, favours/, ham/), leave "
            "--group-by at sender (the default), or group by folders that each mix kinds of mail",
            len(kinds_by_group),
            kind,
        )
    for label in LABELS:
        if not any(e.labels.get(label) for e in examples):
            log.warning("no message is labelled %s: the model will never flag it", label)
    log.info(
        "training on %d messages from %d %s, %d-fold cross-validation over %d partition(s)",
        len(examples),
        len(set(groups)),
        kind,
        min(args.folds, len(set(groups))),
        args.repeats,
    )
    try:
        pipeline, metrics = train(
            [(e.message, e.labels) for e in examples],
            groups,
            n_splits=args.folds,
            sources=[e.source for e in examples],
            repeats=args.repeats,
        )
    except ValueError as exc:
        if any(words in str(exc) for words in ("no terms remain", "empty vocabulary", "max_df corresponds")):
            raise UsageError(
                f"train: {len(examples)} messages are too few, or hold too little text, to learn from in each fold; "
                "give more labelled mail" + (", or fewer --folds" if args.folds > 2 else "")
            ) from exc
        raise UsageError(f"train: cannot train on these {len(examples)} messages ({exc})") from exc
    metrics["cv"]["grouped_by"] = "sender address" if args.group_by == "sender" else "folder or mailbox"
    summary = training_summary(examples)
    summary["label_files"] = [str(f) for f in data.label_files]
    summary["labels_from"] = data.labels_from
    summary["left_out"] = {
        "unreadable": len(data.unreadable),
        "undecided": len(data.undecided),
        "unlabelled": len(data.unlabelled),
        "duplicates": len(data.messages) - len(examples),
    }
    summary["note"] = "trained with `ployfilter train` on the DATA paths listed in by_source"
    try:
        card = ModelBundle.save(
            pipeline,
            args.out,
            thresholds=metrics["thresholds"],
            metrics=metrics,
            training_summary=summary,
            language_offsets=metrics["language_offsets"],
        )
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write the bundle ({exc.strerror or exc})") from exc
    cv = metrics["cv"]
    print(
        f"wrote {_shown(str(args.out))} ({card['size_bytes'] / 1e6:.1f} MB, sha256 {card['sha256'][:12]}): "
        f"{len(examples)} messages, {cv['folds']}-fold cross-validation grouped by {cv['grouped_by']}"
    )
    print("\n".join(metric_lines(metrics)))
    return 0


def _check_out(out: Path) -> None:
    """Refuse an --out that cannot take a bundle: a file, or a place that cannot be written."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; give a folder (a new one, or a bundle to replace)")
    existing = out if out.exists() else next((p for p in out.absolute().parents if p.exists()), Path("/"))
    if not existing.is_dir():
        raise UsageError(f"--out {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {existing} cannot be written")


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from filter.dataset import read_labelled
    from filter.evaluate import (
        curves,
        evaluate,
        format_report,
        format_sweep,
        plot_format,
        report_dict,
        sweep,
        sweep_dict,
        write_plot,
    )
    from filter.runner import score_each

    if args.plot:
        plot_format(args.plot)
        if not args.plot.absolute().parent.is_dir():
            raise UsageError(f"--plot {args.plot}: {args.plot.absolute().parent} is not a folder")
    config = load_config(args.config) if args.config else None
    model = load_model(config, args.model)
    thresholds = thresholds_for(config, model)
    cap = config.max_message_bytes if config else DEFAULT_MAX_MESSAGE_BYTES
    data = read_labelled(args.data, label_files=args.labels, skip_unlabelled=args.skip_unlabelled, max_bytes=cap)
    if not data.messages:
        raise UsageError("evaluate: no labelled message could be read")
    truth: list[list[bool]] = []
    scores: list[list[float]] = []
    languages: list[str] = []
    for start in range(0, len(data.messages), 256):
        batch = data.messages[start : start + 256]
        for item, result in zip(batch, score_each(model, [m.message for m in batch], "evaluate"), strict=True):
            if result is None:
                log.warning("%s: could not be scored; left out", item.id)
                continue
            truth.append([bool(item.labels.get(label)) for label in LABELS])
            scores.append([result.values.get(label, 0.0) for label in LABELS])
            languages.append(item.message.language)
        done = start + len(batch)
        if done % 2048 == 0:
            log.info("scored %d of %d messages", done, len(data.messages))
    if not truth:
        raise ModelError(f"{model.path}: the model could not score any message")
    report = evaluate(np.array(truth), np.array(scores), thresholds, languages)
    swept = sweep(np.array(truth), np.array(scores), thresholds) if args.sweep else []
    configured = sorted(config.thresholds) if config else []
    if len(configured) == len(LABELS):
        origin = f"the configuration {args.config}"
    elif configured:
        origin = f"the configuration {args.config} for {', '.join(configured)}, the model's card for the rest"
    else:
        origin = "the model's card"
    points = language_points(model, thresholds)
    if args.json:
        shown = {"model": _shown(str(model.path)), "thresholds_from": origin, "language_points": points}
        extra = {"sweep": sweep_dict(swept)} if args.sweep else {}
        print(json.dumps({**shown, **report_dict(report), **extra}, indent=2))
    else:
        print(f"model {_shown(str(model.path))}, thresholds from {origin}")
        for language, line in points.items():
            print(f"{language} scores are shifted to their own point: {line}")
        print(format_report(report))
        if swept:
            print()
            print(format_sweep(swept))
    sys.stdout.flush()  # the report stands even if the plot cannot be written
    if args.plot:
        title = f"Precision-recall: {_shown(model.path.name)}"
        write_plot(args.plot, curves(np.array(truth), np.array(scores), report), title)
        log.info("wrote the precision-recall plot to %s", args.plot)
    return 0
