"""YAML configuration -> frozen, validated dataclasses. The only importer of yaml.

Everything is checked before the first connection: a typo in a key, a value
of the wrong type or out of range is a ``ConfigError`` that names the key,
the bad value and what would be valid. Unknown keys are errors, because a
misspelt ``treshold`` silently ignored would leave the owner wondering why
tuning has no effect.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import logging
import os
import re
import reprlib
import selectors
import signal
import ssl
import stat
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from filter.errors import AuthError, ConfigError

log = logging.getLogger(__name__)

LABELS = ("article_share", "favour_request")
SECURITY_MODES = ("tls", "starttls", "plain")
# How an account logs in: with a password (AUTH=PLAIN, else LOGIN), or with an OAuth 2.0 access token
# (SASL XOAUTH2, as Gmail and Microsoft 365 take it), which password_command prints afresh at each login.
AUTH_MODES = ("password", "xoauth2")
ACTIONS = ("move", "flag", "dry-run")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_STATE_PATH = "~/.local/state/ployfilter/state.sqlite3"
DEFAULT_MAX_MESSAGE_BYTES = 262144
PASSWORD_COMMAND_SECONDS = 60
DEFAULT_FOLDERS = {"article_share": "Networking/Articles", "favour_request": "Networking/Requests"}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a tab may stay
_NUL = re.compile(r"\x00")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
CORRESPONDENT_ACTIONS = ("keep", "stricter")


@dataclass(frozen=True)
class PolicyConfig:
    """How a sender's history and the owner's lists change a decision (top-level YAML keys).

    ``review_band``: width of the band below each threshold whose mail is
    marked for review (0 = no review band). ``correspondent_days``: the owner
    wrote to the sender within this many days (0 = no reciprocity rule);
    ``correspondents``: "keep" leaves their mail in place, "stricter" adds
    ``correspondent_raise`` to each threshold. ``pattern_shares``: article
    shares with no reply before an ask that marks the give-then-ask pattern.
    ``drip_shares`` shares within ``drip_days`` days lower the sender's
    thresholds by ``drip_lower`` (``drip_shares`` 0 = off). ``allow`` and
    ``block``: lower-cased address or domain patterns, ``*`` and ``?`` wildcards.
    """

    review_band: float = 0.0
    correspondent_days: float = 365.0
    correspondents: str = "keep"
    correspondent_raise: float = 0.15
    pattern_shares: int = 2
    drip_shares: int = 3
    drip_days: float = 7.0
    drip_lower: float = 0.15
    allow: tuple[str, ...] = ()
    block: tuple[str, ...] = ()


@dataclass(frozen=True)
class DigestConfig:
    """The weekly summary appended to ``folder`` of each account, on ``weekday``, naming ``senders`` senders."""

    folder: str
    weekday: str = "monday"
    senders: int = 10


@dataclass(frozen=True)
class AccountConfig:
    """One IMAP account to watch."""

    name: str
    host: str
    port: int
    security: str
    ca_file: Path | None
    username: str
    password_command: str | None
    password_env: str | None
    password: str | None = field(repr=False)
    watch: str
    folders: Mapping[str, str]
    timeout: float
    sent: str | None = None  # the owner's sent folder; None: the folder LIST marks \Sent (RFC 6154)
    review_folder: str | None = None  # where review-band mail goes; None: keyword $PloyReview in place
    auth: str = "password"  # one of AUTH_MODES

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


@dataclass(frozen=True)
class Config:
    """The whole configuration, validated."""

    accounts: tuple[AccountConfig, ...]
    thresholds: Mapping[str, float]
    action: str
    state_path: Path
    model: Path | None
    batch_size: int
    max_message_bytes: int
    poll_interval: float
    idle_renew: float
    reconnect_max: float
    log_level: str
    source: Path | None = None
    policy: PolicyConfig = PolicyConfig()
    digest: DigestConfig | None = None

    def threshold(self, label: str, card_default: float) -> float:
        """The configured threshold for ``label``, else the model card's."""
        return self.thresholds.get(label, card_default)


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False


def is_loopback_host(host: str) -> bool:
    """True for "localhost" and literal loopback addresses (127.0.0.0/8, ::1).

    Only these may carry a password in plaintext: a name that merely resolves
    to loopback today may resolve elsewhere tomorrow. "localhost." (with the
    root dot) is such a name: the C library asks DNS for it rather than
    reading /etc/hosts.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Reader:
    """Walks one mapping of the YAML, remembering the key path for error messages."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path or 'the file'}: expected a mapping of keys, got {_show(data)}")
        for key in data:
            if not isinstance(key, str):
                where = f"{path}: key" if path else "key"
                raise ConfigError(
                    f"{where} {_show(key)} is not valid; keys are names such as 'action' "
                    "(YAML reads a bare number, yes, no, on or off as a value: quote it)"
                )
        self.data: dict[str, Any] = data
        self.path = path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, default: Any = None) -> Any:
        self.used.add(name)
        return self.data.get(name, default)

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def string(
        self, name: str, default: str | None = None, *, required: bool = False, control: re.Pattern[str] | None = None
    ) -> str:
        """A non-empty string without control characters (``control``: those refused, by default all but tab)."""
        value = self.get(name, default)
        if value is None and required:
            raise ConfigError(f"{self.key(name)}: missing; this key is required")
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{self.key(name)}: {_show(value)} is not valid; expected a non-empty string")
        found = (control or _CONTROL).search(value)
        if found is not None:
            raise ConfigError(
                f"{self.key(name)}: {_show(value)} is not valid; it holds the control character "
                f"{found.group()!r}, which no host, path, command or folder name takes"
            )
        return value

    def optional_string(self, name: str) -> str | None:
        if self.get(name) is None:
            return None
        return self.string(name)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name, default)
        if value not in choices:
            raise ConfigError(f"{self.key(name)}: {_show(value)} is not valid; expected one of {', '.join(choices)}")
        return str(value)

    def number(self, name: str, default: float, low: float, high: float, *, integer: bool = False) -> float:
        value = self.get(name, default)
        kind = "a whole number" if integer else "a number"
        bad = isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int))
        if bad or not low <= value <= high:
            expected = f"expected {kind} from {_bound(low)} to {_bound(high)}"
            raise ConfigError(f"{self.key(name)}: {_show(value)} is not valid; {expected}")
        return value  # type: ignore[no-any-return]

    def finish(self, extra_allowed: tuple[str, ...] = ()) -> None:
        self.only(self.used | set(extra_allowed))

    def only(self, allowed: set[str] | tuple[str, ...]) -> None:
        """Refuse any key not in ``allowed``, naming the closest valid one when there is one."""
        unknown = sorted(set(self.data) - set(allowed))
        if unknown:
            known = sorted(allowed)
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{self.key(unknown[0])}: unknown key{hint}; valid keys here are {', '.join(known)}")


def _beside(path: Path, base: Path | None) -> Path:
    """``path`` with ~ expanded and, when relative, taken from ``base`` (the config file's folder, when known).

    So a relative state_path, model or ca_file means the same wherever the daemon is started from.
    """
    path = path.expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def _is(path: Path, test: Callable[[Path], bool]) -> bool:
    """``test(path)``, False when the path cannot even be looked at (a name too long, a folder not searchable)."""
    try:
        return test(path)
    except OSError:
        return False


def _bound(value: float) -> str:
    """A range bound as written in the README: 67108864, not 6.71089e+07."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _show(value: Any) -> str:
    """A value for an error message, cut short: YAML aliases can make a value of any size out of a few lines."""
    if value is None:
        return "nothing"
    shown = _SHORT.repr(value)
    if len(shown) > 120:
        shown = shown[:117] + "..."
    return shown if isinstance(value, str) else f"{shown} ({type(value).__name__})"


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlevel = 2


# The keys an account mapping may hold: AccountConfig's fields, but for review_folder (folders.review).
_ACCOUNT_KEYS = tuple(f.name for f in fields(AccountConfig) if f.name != "review_folder")


def _folder_name(name: str) -> str:
    """INBOX in any case is INBOX (RFC 9051 section 5.1); every other name is as written."""
    return "INBOX" if name.upper() == "INBOX" else name


def _account(data: Any, path: str, base: Path | None = None) -> AccountConfig:
    r = _Reader(data, path)
    r.only(_ACCOUNT_KEYS)  # first: a misspelt password key must be named as such, not as a missing one
    name = r.string("name", required=True)
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(f"{r.key('name')}: {_show(name)} is not valid; use letters, digits, '.', '_' or '-'")
    host = r.string("host", required=True)
    if "://" in host:
        raise ConfigError(
            f"{r.key('host')}: {_show(host)} is a URL; give the server's name alone, e.g. imap.example.org"
        )
    if host.startswith("[") and host.endswith("]") and _is_ipv6(host[1:-1]):
        raise ConfigError(f"{r.key('host')}: {_show(host)}: write an IPv6 address without brackets ({host[1:-1]})")
    if ":" in host and not _is_ipv6(host):
        raise ConfigError(
            f"{r.key('host')}: {_show(host)} is not a host name; give the port under 'port' "
            "(an IPv6 address is written bare, e.g. ::1)"
        )
    if any(c.isspace() or c in "/@" for c in host):
        raise ConfigError(f"{r.key('host')}: {_show(host)} is not a host name; e.g. imap.example.org")
    security = r.choice("security", SECURITY_MODES, "tls")
    port = int(r.number("port", 993 if security == "tls" else 143, 1, 65535, integer=True))
    if security == "plain" and not is_loopback_host(host):
        raise ConfigError(
            f"{r.key('security')}: 'plain' sends the password unencrypted and is refused for host "
            f"{host!r}; use tls or starttls (plain is allowed only to localhost, 127.0.0.0/8 or ::1)"
        )
    ca_file = r.optional_string("ca_file")
    ca_path = _beside(Path(ca_file), base) if ca_file else None
    if ca_path is not None and not _is(ca_path, Path.is_file):
        raise ConfigError(f"{r.key('ca_file')}: {_show(ca_file)} is not a readable file; expected a PEM CA bundle")
    if ca_path is not None:
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(ca_path))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"{r.key('ca_file')}: {_show(ca_file)} cannot be loaded as a PEM CA certificate ({exc}); "
                "expected a PEM CA bundle"
            ) from None
    username = r.string("username", required=True)
    auth = r.choice("auth", AUTH_MODES, "password")
    sources = [k for k in ("password_command", "password_env", "password") if r.has(k)]
    if auth == "xoauth2" and sources != ["password_command"]:
        raise ConfigError(
            f"{r.key('auth')}: xoauth2 logs in with an access token, which expires within the hour: give "
            "password_command, a command that prints a current token (it runs at every login), and neither "
            "password_env nor password"
        )
    if len(sources) != 1:
        raise ConfigError(
            f"{r.key('password_command')}: give exactly one of password_command, password_env or "
            f"password (found {', '.join(sources) or 'none'})"
        )
    # A shell command may span lines (a YAML block scalar ends in a line break); only a NUL cannot be run.
    password_command = r.string("password_command", control=_NUL) if r.has("password_command") else None
    password_env = r.optional_string("password_env")
    password = r.get("password")
    if password is not None and (not isinstance(password, str) or not password):
        raise ConfigError(f"{r.key('password')}: expected a non-empty string")
    if password is not None and _CONTROL.search(password):
        raise ConfigError(f"{r.key('password')}: holds a control character (a line break?), which IMAP cannot send")
    watch = _folder_name(r.string("watch", "INBOX"))
    sent = r.optional_string("sent")
    sent = None if sent is None else _folder_name(sent)
    if sent == watch:
        raise ConfigError(f"{r.key('sent')}: {sent!r} is the watched folder; name the folder your sent mail is in")
    folders_reader = _Reader(r.get("folders", dict(DEFAULT_FOLDERS)), r.key("folders"))
    folders = {label: _folder_name(folders_reader.string(label, DEFAULT_FOLDERS[label])) for label in LABELS}
    review_folder = folders_reader.optional_string("review")
    review_folder = None if review_folder is None else _folder_name(review_folder)
    folders_reader.finish()
    targets = {**folders, "review": review_folder}
    for key, folder in targets.items():
        if folder == watch:
            raise ConfigError(f"{folders_reader.key(key)}: {folder!r} is the watched folder; choose another")
        if folder is not None and folder == sent:
            raise ConfigError(
                f"{folders_reader.key(key)}: {folder!r} is also the sent folder, whose mail is read as yours; "
                "choose another"
            )
    timeout = r.number("timeout", 60, 5, 3600)
    r.finish()
    return AccountConfig(
        name=name,
        host=host,
        port=port,
        security=security,
        ca_file=ca_path,
        username=username,
        password_command=password_command,
        password_env=password_env,
        password=password,
        watch=watch,
        folders=folders,
        timeout=timeout,
        sent=sent,
        review_folder=review_folder,
        auth=auth,
    )


def _section(r: _Reader, name: str) -> _Reader:
    """The reader of an optional mapping under ``name``: absent or null reads as empty, so every default applies."""
    value = r.get(name)
    return _Reader({} if value is None else value, r.key(name))


def _policy(r: _Reader) -> PolicyConfig:
    review_band = r.number("review_band", 0.0, 0.0, 0.5)
    cr = _section(r, "correspondents")
    correspondent_days = float(cr.number("window_days", 365, 0, 3650))
    correspondents = cr.choice("action", CORRESPONDENT_ACTIONS, "keep")
    correspondent_raise = cr.number("raise", 0.15, 0.0, 1.0)
    cr.finish()
    pr = _section(r, "pattern")
    pattern_shares = int(pr.number("shares_before_ask", 2, 1, 100, integer=True))
    pr.finish()
    dr = _section(r, "drip")
    drip_shares = int(dr.number("shares", 3, 0, 1000, integer=True))
    drip_days = float(dr.number("days", 7, 0.1, 365))
    drip_lower = dr.number("lower", 0.15, 0.0, 0.5)
    dr.finish()
    allow = _sender_list(r, "allow")
    block = _sender_list(r, "block")
    for entry in sorted(set(allow) & set(block)):
        log.warning("%s is on both the allow and the block list; the allow list wins", entry)
    return PolicyConfig(
        review_band=review_band,
        correspondent_days=correspondent_days,
        correspondents=correspondents,
        correspondent_raise=correspondent_raise,
        pattern_shares=pattern_shares,
        drip_shares=drip_shares,
        drip_days=drip_days,
        drip_lower=drip_lower,
        allow=allow,
        block=block,
    )


_SENDER_FORMS = "an address (ann@example.org), an address pattern (*@example.org) or a domain (example.org)"


def _sender_list(r: _Reader, name: str) -> tuple[str, ...]:
    """Addresses, address patterns and domains, lower-cased: how the allow and block lists are written."""
    value = r.get(name)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{r.key(name)}: {_show(value)} is not valid; expected a list, each entry {_SENDER_FORMS}")
    entries = []
    for i, item in enumerate(value):
        entry = item.strip().lower() if isinstance(item, str) else ""
        local, at, domain = entry.rpartition("@")
        if not entry or any(c.isspace() for c in entry) or "@" in local or (at and not (local and domain)):
            raise ConfigError(f"{r.key(name)}[{i}]: {_show(item)} is not valid; expected {_SENDER_FORMS}")
        entries.append(entry)
    return tuple(entries)


def _digest(r: _Reader) -> DigestConfig | None:
    value = r.get("digest")
    if value is None:
        return None
    dr = _Reader(value, r.key("digest"))
    digest = DigestConfig(
        folder=_folder_name(dr.string("folder", required=True)),
        weekday=dr.choice("weekday", WEEKDAYS, "monday"),
        senders=int(dr.number("senders", 10, 1, 100, integer=True)),
    )
    dr.finish()
    return digest


def parse_config(data: Any, source: Path | None = None) -> Config:
    """Validate the YAML document ``data`` (already parsed) into a Config."""
    r = _Reader(data, "")
    raw_accounts = r.get("accounts")
    if not isinstance(raw_accounts, list) or not raw_accounts:
        raise ConfigError(f"accounts: {_show(raw_accounts)} is not valid; expected a list of one or more accounts")
    base = source.parent if source is not None else None
    accounts = tuple(_account(item, f"accounts[{i}]", base) for i, item in enumerate(raw_accounts))
    names = [a.name for a in accounts]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"accounts[{i}].name: {name!r} is used twice; account names must be unique")
    thresholds: dict[str, float] = {}
    if r.get("thresholds") is not None:
        tr = _Reader(r.get("thresholds"), "thresholds")
        for label in LABELS:
            if tr.has(label):
                thresholds[label] = tr.number(label, 0.5, 0.0, 1.0)
        tr.finish(LABELS)
    action = r.choice("action", ACTIONS, "move")
    state_path = _beside(Path(r.string("state_path", DEFAULT_STATE_PATH)), base)
    model_value = r.optional_string("model")
    model = _beside(Path(model_value), base) if model_value else None
    if model is not None and not _is(model, Path.is_dir):
        raise ConfigError(f"model: {_show(model_value)} is not a directory; expected a model bundle folder or null")
    config = Config(
        accounts=accounts,
        thresholds=thresholds,
        action=action,
        state_path=state_path,
        model=model,
        batch_size=int(r.number("batch_size", 100, 1, 10000, integer=True)),
        max_message_bytes=int(
            r.number("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES, 4096, 64 * 1024 * 1024, integer=True)
        ),
        poll_interval=r.number("poll_interval", 60, 1, 86400),
        idle_renew=r.number("idle_renew", 540, 10, 600),
        reconnect_max=r.number("reconnect_max", 300, 1, 3600),
        log_level=r.choice("log_level", LOG_LEVELS, "info"),
        source=source,
        policy=_policy(r),
        digest=_digest(r),
    )
    r.finish()
    return config


# What a running daemon cannot take over from a reloaded file: the connection, the state, the model.
_RESTART_KEYS = (
    "host",
    "port",
    "security",
    "ca_file",
    "username",
    "password_command",
    "password_env",
    "password",
    "auth",
    "timeout",
    "watch",
    "state_path",
    "model",
    "idle_renew",
    "reconnect_max",
    "poll_interval",
)


def config_changes(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """What differs between two configurations: (changes, changes that need a restart), one line each.

    Passwords written in the file are never shown, only that they changed.
    """
    before, after = _flatten(old), _flatten(new)
    changes: list[str] = []
    restart: list[str] = []
    for key in sorted(set(before) | set(after)):
        if before.get(key, _ABSENT) == after.get(key, _ABSENT):
            continue
        secret = key.endswith(".password")
        shown = (
            f"{key} changed"
            if secret
            else f"{key}: {_value(before.get(key, _ABSENT))} -> {_value(after.get(key, _ABSENT))}"
        )
        changes.append(shown)
        if key.rsplit(".", 1)[-1] in _RESTART_KEYS or key.startswith("accounts[") and key.endswith("]"):
            restart.append(shown)
    return changes, restart


_ABSENT = object()
# PolicyConfig's fields by the YAML keys the owner writes.
_POLICY_KEYS = {
    "review_band": "review_band",
    "correspondent_days": "correspondents.window_days",
    "correspondents": "correspondents.action",
    "correspondent_raise": "correspondents.raise",
    "pattern_shares": "pattern.shares_before_ask",
    "drip_shares": "drip.shares",
    "drip_days": "drip.days",
    "drip_lower": "drip.lower",
    "allow": "allow",
    "block": "block",
}


def _flatten(config: Config) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, value in vars(config).items():
        if name in ("accounts", "source"):
            continue
        if name == "thresholds":
            for label in LABELS:
                out[f"thresholds.{label}"] = value.get(label, "the model's default")
        elif name == "policy":
            out.update({_POLICY_KEYS[k]: v for k, v in vars(value).items()})
        elif name == "digest":
            out["digest"] = "on" if value else "off"
            out.update({f"digest.{k}": v for k, v in (vars(value).items() if value else [])})
        else:
            out[name] = value
    for account in config.accounts:
        out[f"accounts[{account.name}]"] = "present"
        for key, value in vars(account).items():
            if key == "folders":
                out.update({f"accounts[{account.name}].folders.{k}": v for k, v in value.items()})
            elif key == "review_folder":
                out[f"accounts[{account.name}].folders.review"] = value
            elif key != "name":
                out[f"accounts[{account.name}].{key}"] = value
    return out


def _value(value: object) -> str:
    if value is _ABSENT:
        return "(none)"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing a key written twice in one mapping.

    Plain YAML keeps the last: a file saying ``action: dry-run`` near the top
    and ``action: move`` further down would move mail while its owner
    believes nothing is touched. Keys brought in by a merge (``<<``) may
    still be overridden, as YAML means them to be.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, str] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            mark = key_node.start_mark
            try:
                first = seen.get(key)
                if first is None:
                    seen[key] = f"line {mark.line + 1}, column {mark.column + 1}"
                    continue
            except TypeError:
                continue  # an unhashable key: the base class refuses it with its own message
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is written twice, first at {first}", mark)
        return super().construct_mapping(node, deep)


_CONFIG_MAX_BYTES = 1 << 20


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the YAML file at ``path``."""
    p = Path(path).expanduser()
    try:
        # A pipe or a device would block or never end: the file must be a file (opened without waiting).
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError(f"{p}: not a regular file; give the path of a YAML file")
            raw = f.read(_CONFIG_MAX_BYTES + 1)
        if len(raw) > _CONFIG_MAX_BYTES:
            raise ConfigError(f"{p}: larger than {_CONFIG_MAX_BYTES // 1024} KiB; that is no configuration")
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the configuration ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a subclass of SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply to be a configuration") from None
    try:
        config = parse_config(data, source=p.resolve())
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply to be a configuration") from None
    if any(a.password for a in config.accounts):
        _warn_if_others_can_read(p)
    return config


def _warn_if_others_can_read(path: Path) -> None:
    """A file holding a password should be readable by its owner alone."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "%s holds a password and other users can read it (mode %o); chmod 600 it, or use password_command",
            path,
            stat.S_IMODE(mode),
        )


def read_password(account: AccountConfig, should_stop: Callable[[], bool] = lambda: False) -> str:
    """The account's password, from its command, the environment or the file.

    The command gets PASSWORD_COMMAND_SECONDS, and gives up early when
    ``should_stop`` turns true (a daemon told to stop does not wait for a
    command that hangs). A password written in the file works but is
    warned about: the file then has to be kept as secret as the password.
    """
    if account.password_command:
        return _run_password_command(account, should_stop)
    if account.password_env:
        value = os.environ.get(account.password_env)
        if not value:
            raise AuthError(f"account {account.name}: environment variable {account.password_env} is not set")
        return value
    log.warning(
        "account %s: password is written in the config file; prefer password_command or password_env",
        account.name,
    )
    return account.password or ""


# What of a password_command's output is kept: its first line is what counts.
MAX_PASSWORD_OUTPUT = 1 << 20
# Once the command has ended, how long its output may stay silent before what came is taken as all of it.
PASSWORD_QUIET_SECONDS = 1.0


def _run_password_command(account: AccountConfig, should_stop: Callable[[], bool]) -> str:
    """The first line the account's password_command prints; its process group is killed if it must stop.

    Its output is read until every writer has closed it or, once the command itself has ended and nothing
    more is waiting, until it holds a whole line or nothing has come for PASSWORD_QUIET_SECONDS: a child
    it left running (an agent it started) may hold the pipe open for ever."""
    command = account.password_command or ""
    deadline = time.monotonic() + PASSWORD_COMMAND_SECONDS
    process = subprocess.Popen(
        command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    assert process.stdout is not None
    out = bytearray()
    eof = False
    last_news = time.monotonic()  # when the command last printed, or was seen to end
    ended = False
    with process.stdout, selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            if eof:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=0.2)
            elif selector.select(0.2):
                chunk = os.read(process.stdout.fileno(), 65536)
                eof = not chunk
                if len(out) < MAX_PASSWORD_OUTPUT:
                    out += chunk
                last_news = time.monotonic()
            now = time.monotonic()
            if process.poll() is not None:
                if not ended:
                    ended, last_news = True, now
                quiet = eof or not selector.select(0)
                if eof or (quiet and (b"\n" in out or now - last_news >= PASSWORD_QUIET_SECONDS)):
                    break
            stopping = should_stop()
            if stopping or now >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                if stopping:
                    raise AuthError(f"account {account.name}: stopped while password_command was running") from None
                raise AuthError(
                    f"account {account.name}: password_command did not finish in {PASSWORD_COMMAND_SECONDS} s"
                ) from None
    process.wait()
    try:
        if process.returncode != 0:
            raise AuthError(f"account {account.name}: password_command exited with status {process.returncode}")
        first = out.split(b"\n", 1)[0].removesuffix(b"\r")  # the first line, whatever else it holds
        if not first:
            raise AuthError(f"account {account.name}: password_command printed nothing on its first line")
        try:
            return first.decode("utf-8")
        except UnicodeDecodeError:
            raise AuthError(
                f"account {account.name}: password_command printed a first line that is not UTF-8 text"
            ) from None
    except AuthError:
        # a command that failed leaves nothing behind; one that gave a password may have started an agent
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        raise
