"""bytes -> ParsedMessage: headers, the text the sender wrote, quoted and forwarded parts, links.

Pure and total: ``parse_message`` never raises. Mail is written by anyone,
so every step assumes the worst: unknown or lying charsets, broken base64,
MIME trees a thousand levels deep, header fields of megabytes. Each such
case is bounded (parts walked, nesting depth, header size, decoded text) and
reflected in the result (``defects``, ``limits_hit``, ``error``) instead of
being swallowed.

The split between ``own_text``, ``quoted_text`` and ``forwarded_text``
follows LABELS.md: a message is judged on what its sender wrote or chose to
send, and quoted replies are context only. Forwarded content is kept apart
from quoted replies because forwarding someone else's article is exactly the
"article sharing" pattern.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.errors
import email.header
import email.message
import email.policy
import email.utils
import itertools
import quopri
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email.parser import BytesParser
from html import unescape as _unescape
from html.parser import HTMLParser
from typing import NamedTuple, TypeVar

MAX_INPUT_BYTES = 16 * 1024 * 1024
MAX_PARTS = 200
MAX_DEPTH = 20
MAX_STRUCTURE_MARKERS = 64
MAX_HEADER_CHARS = 4096
MAX_PARAM_HEADER_BYTES = 4096
MAX_LINKS = 50
MAX_ATTACHMENTS = 50
_MAX_HTML_FACTOR = 6

_T = TypeVar("_T")

_FORWARD_PREFIX = re.compile(r"^\s*(?:(?:fwd?|tr|wg|rv|fw)\s*:\s*)+", re.I)
# A reply's subject, after any list tags: "Re: x", "[team] Re: x", "Re[2]: x", "AW: x".
_REPLY_PREFIX = re.compile(r"^\s*(?:\[[^\]]{0,80}\]\s*)*(?:(?:re|aw|réf|ref|sv)(?:\[\d{1,4}\])?\s*:\s*)+", re.I)


class Attachment(NamedTuple):
    """A part that is not text to read: its type, its file name and its encoded size in bytes."""

    content_type: str
    filename: str
    size: int


@dataclass(frozen=True)
class BulkHeaders:
    """The headers that mark mail as sent by a list or a robot (RFC 2369, RFC 2919, RFC 3834)."""

    list_id: str = ""
    list_unsubscribe: str = ""
    precedence: str = ""
    auto_submitted: str = ""

    @property
    def is_bulk(self) -> bool:
        """True when any header says the mail came from a list, a bulk sender or a robot."""
        return bool(
            self.list_id
            or self.list_unsubscribe
            or self.precedence.lower() in ("bulk", "list", "junk")
            or self.auto_submitted.lower() not in ("", "no")
        )


@dataclass(frozen=True)
class ParsedMessage:
    """One message, read. Every field is always present; an unreadable message has ``error`` set."""

    subject: str = ""
    sender: str = ""
    sender_name: str = ""
    to_count: int = 0
    message_id: str = ""
    in_reply_to: str = ""
    own_text: str = ""
    quoted_text: str = ""
    forwarded_text: str = ""
    links: tuple[str, ...] = ()
    bulk: BulkHeaders = field(default_factory=BulkHeaders)
    language: str = "unknown"
    attachments: tuple[Attachment, ...] = ()
    has_html: bool = False
    part_count: int = 0
    limits_hit: tuple[str, ...] = ()
    defects: int = 0
    error: str = ""

    @property
    def is_reply(self) -> bool:
        return bool(self.in_reply_to) or bool(_REPLY_PREFIX.match(self.subject))

    @property
    def is_forward(self) -> bool:
        return bool(_FORWARD_PREFIX.match(self.subject))


# ---------------------------------------------------------------------------
# Entry point


def parse_message(data: bytes, *, max_text_chars: int = 20000) -> ParsedMessage:
    """Read one RFC 5322 message. Never raises: failures end up in ``error`` and ``defects``."""
    try:
        return _parse(bytes(data), max(1, max_text_chars))
    except Exception as exc:  # the contract is "never raises"; the reason is kept in ``error``
        return ParsedMessage(error=f"unreadable message ({type(exc).__name__})", defects=1)


def _parse(data: bytes, max_text_chars: int) -> ParsedMessage:
    if not data.strip():
        return ParsedMessage(error="empty message")
    data, stripped = _strip_lead(data)
    if _looks_binary(data):
        return ParsedMessage(error="binary data, not a mail message")
    limits: list[str] = []
    data = _defuse(data, limits)
    msg = _parse_single_part(data)
    if msg is None:
        try:
            msg = BytesParser(policy=email.policy.compat32).parsebytes(data)
        except RecursionError:
            limits.append("depth")
            msg = BytesParser(policy=email.policy.compat32).parsebytes(data, headersonly=True)
    head = _Headers(msg)
    body = _Body(max_text_chars)
    body.walk(msg, head.fields)
    subject = head.text("Subject")
    own, quoted, forwarded = split_text(body.main_text(), subject=subject)
    forwarded = _join(forwarded, body.forwarded_text())
    own, quoted, forwarded = _tidy(own), _tidy(quoted), _tidy(forwarded)
    message_id, in_reply_to = head.text("Message-ID").strip(), head.text("In-Reply-To").strip()
    if quoted and not own and _passed_on(quoted, subject, in_reply_to or head.text("References").strip()):
        quoted, forwarded = "", _join(quoted, forwarded)
    name, address = parse_address(head.text("From"))
    to_count = _address_count(head.text("To")) + _address_count(head.text("Cc"))
    bulk = _frozen(
        BulkHeaders,
        list_id=head.text("List-Id").strip(),
        list_unsubscribe=head.text("List-Unsubscribe").strip(),
        precedence=head.text("Precedence").strip(),
        auto_submitted=head.text("Auto-Submitted").strip(),
    )
    limits.extend(body.limits)
    if head.truncated:
        limits.append("header")
    return _frozen(
        ParsedMessage,
        subject=subject,
        sender=address.strip().lower(),
        sender_name=name.strip(),
        to_count=to_count,
        message_id=message_id,
        in_reply_to=in_reply_to,
        own_text=own,
        quoted_text=quoted,
        forwarded_text=forwarded,
        links=_links(own, forwarded, body.hrefs),
        bulk=bulk,
        language=detect_language(_join(subject, own) if _has_words(own, 5) else _join(subject, own, forwarded)),
        attachments=tuple(body.attachments),
        has_html=body.has_html,
        part_count=body.part_count,
        limits_hit=tuple(dict.fromkeys(limits)),
        defects=head.defects + body.defects + stripped,
        error="",
    )


# A header block's subject line, as forwards and Outlook-style quotes show the message they carry.
_QUOTED_SUBJECT_LINE = re.compile(r"^(?:>|[^\S\n])*(?:subject|objet|sujet|betreff)\s?:", re.I | re.M)
# The line a reply's quote opens with: "On Mon, Jo wrote:", "Le lundi, Jo a écrit :".
_WROTE = re.compile(r"(?:\bwrote|\ba écrit|\bschrieb)\s?:", re.I)


def _passed_on(quoted: str, subject: str, thread: str) -> bool:
    """Whether a message whose only text is a quoted one passes it on rather than answers it: it is no reply
    (no In-Reply-To or References, no reply prefix) and the quoted part shows the message's own headers, as a
    forward does, rather than an "On ... wrote:" line, under or over which a reply may have been written."""
    if thread or _REPLY_PREFIX.match(subject) or _WROTE.search(quoted, 0, 1500):
        return False
    return bool(_QUOTED_SUBJECT_LINE.search(quoted, 0, 1500))


def _frozen(cls: type[_T], **fields: object) -> _T:
    """``cls(**fields)`` for a frozen dataclass without __post_init__, given all its fields in declared order.

    The __init__ of a frozen dataclass sets each field through
    ``object.__setattr__``: for the 18 fields of ParsedMessage, some 4% of
    ``parse_message``. Filling the new instance's dict in one step makes the
    same object (same dict, same order) in a fourth of the time.
    """
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


# ---------------------------------------------------------------------------
# Hostile input: decide what is not mail, and cut what would cost unbounded time

_HEADER_START = re.compile(rb"\A[!-9;-~]{1,76}[ \t]*:")
# A boundary parameter, RFC 2231 forms (boundary*0=, boundary*=) included, or a message/* type.
_STRUCTURE = re.compile(rb"boundary\s*(?:\*\d*)?\*?\s*=|message/", re.I)
_BOUNDARY_VALUE = re.compile(rb"""boundary\s*(?:\*\d*)?\*?\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))""", re.I)
MAX_DELIMITERS = MAX_PARTS * 4
_PARAM_FIELD = re.compile(rb"(?:content-type|content-disposition)[ \t]*:", re.I)


_TEXT_BYTES = bytes(range(32, 127)) + b"\t\n\r\x0b\x0c" + bytes(range(128, 256))


def _strip_lead(data: bytes) -> tuple[bytes, int]:
    """Drop a UTF-8 byte order mark and blank lines before a header: (data, 1 when anything went).

    Neither belongs before a header (RFC 5322 section 2.1), but editors and
    exporters leave them, and the parser would read the whole header as body.
    """
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    while data.startswith((b"\r\n", b"\n"), start):
        start += 1 if data[start] == 0x0A else 2
    if start and _HEADER_START.match(data[start : start + 128]):
        return data[start:], 1
    return data, 0


def _looks_binary(data: bytes) -> bool:
    """Binary junk: many control bytes in the first 4 KiB, or a NUL with no header line to start with.

    After a header, a stray NUL or two is a defect the text cleaning drops,
    not a reason to leave the message unjudged.
    """
    sample = data[:4096]
    junk = len(sample.translate(None, _TEXT_BYTES)) > len(sample) // 10
    if _HEADER_START.match(sample.lstrip()):
        return junk
    return junk or b"\x00" in sample


def _defuse(data: bytes, limits: list[str]) -> bytes:
    """Cut the input where the stdlib parser would spend unbounded time or recurse without end.

    The parser recurses once per nested multipart or message/* part, and
    parses Content-Type parameters in time quadratic in their length; both
    are bounded here, before it runs, by truncating the raw bytes.
    """
    if len(data) > MAX_INPUT_BYTES:
        data = data[:MAX_INPUT_BYTES]
        limits.append("size")
    lowered = data.lower()
    markers = lowered.count(b"boundary") + lowered.count(b"message/")
    if markers > MAX_STRUCTURE_MARKERS:
        for count, match in enumerate(_STRUCTURE.finditer(data), start=1):
            if count > MAX_STRUCTURE_MARKERS:
                data = data[: max(data.rfind(b"\n", 0, match.start()), 0)]
                limits.append("depth")
                break
    data = _cut_part_flood(data, limits)
    if len(data) > MAX_PARAM_HEADER_BYTES:
        data = _shorten_param_fields(data, limits)
    return data


def _cut_part_flood(data: bytes, limits: list[str]) -> bytes:
    """Cut the bytes after MAX_DELIMITERS delimiter lines of the declared boundaries.

    The parser builds every part before MAX_PARTS can stop the walk, so a
    flood of empty parts is cut here first. Only lines that start with "--"
    and a boundary the message declares count: signatures and "-- item"
    lists in a plain body are not parts.
    """
    if data.count(b"\n--") <= MAX_DELIMITERS:  # cheap, and without it no cut is due
        return data
    boundaries = {b"\n--" + (m.group(1) or m.group(2)) for m in _BOUNDARY_VALUE.finditer(data)}
    if sum(data.count(b) for b in boundaries) <= MAX_DELIMITERS:
        return data
    delimiter = re.compile(b"|".join(re.escape(b) for b in sorted(boundaries, key=len, reverse=True)))
    for count, match in enumerate(delimiter.finditer(data), start=1):
        if count > MAX_DELIMITERS:
            limits.append("parts")
            return data[: match.start()]
    return data


def _shorten_param_fields(data: bytes, limits: list[str]) -> bytes:
    """Cut every Content-Type or Content-Disposition field (with its folded lines) to a bounded size."""
    pieces: list[bytes] = []
    last = 0
    for start in _param_field_starts(data):
        if start < last:
            continue
        end = start
        while True:
            nl = data.find(b"\n", end)
            if nl < 0:
                end = len(data)
                break
            end = nl + 1
            if data[end : end + 1] not in (b" ", b"\t"):
                break
        if end - start > MAX_PARAM_HEADER_BYTES:
            pieces.append(data[last : start + MAX_PARAM_HEADER_BYTES] + b"\n")
            last = end
            if "header" not in limits:
                limits.append("header")
    if not pieces:
        return data
    pieces.append(data[last:])
    return b"".join(pieces)


def _param_field_starts(data: bytes) -> list[int]:
    starts: list[int] = []
    for needle in (b"ontent-", b"ONTENT-"):
        pos = data.find(needle)
        while pos >= 0:
            begin = pos - 1
            at_line_start = begin == 0 or (begin > 0 and data[begin - 1 : begin] == b"\n")
            if at_line_start and _PARAM_FIELD.match(data, begin):
                starts.append(begin)
            pos = data.find(needle, pos + 1)
    return sorted(starts)


# ---------------------------------------------------------------------------
# The single-part reader

# The lines the stdlib feed parser takes as header lines (its ``headerRE``): a field ("Name:"), a
# folded continuation, or an mbox "From " line; each up to and including its end of line (CRLF, CR, LF).
# The repeats are possessive: a line once read is never given back, so the engine keeps no state per
# line (a plain repeat would, for every line of a header block that may be megabytes long). Most mail
# has no CR in its header, and there the _LF patterns, which the engine runs faster, find the same lines.
_HEADER_BLOCK = re.compile(rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*+:|[\t ])[^\r\n]*+(?:\r\n|\r|\n|\Z))*+")
_HEADER_BLOCK_LF = re.compile(rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*+:|[\t ])[^\n]*+(?:\n|\Z))*+")
_FIRST_LINE = re.compile(r"\A[^\r\n]*(?:\r\n|\r|\n)?")
# The end of a line that the next field follows (the next line is not folded): fields are split there.
_FIELD_BREAK = re.compile(r"(?:\r\n|\r|\n)(?=[^ \t\n])")
# Without CR: a field's name and its value as compat32's header_source_parse keeps it (blanks after
# the colon dropped, folded lines kept with their line ends, the last line end dropped). Searched for
# in the block after a "\n" put before it: a literal start lets the search skip ahead, where "^" with
# re.M is tried at every character.
_FIELD_LF = re.compile(r"\n([^:\n]*+):[ \t]*+(.*+(?:\n[ \t].*+)*+)")
_COMPAT32 = email.policy.compat32


def _parse_single_part(data: bytes) -> email.message.Message | None:
    """The message ``BytesParser(policy=compat32)`` builds from ``data`` when it has one part, else None.

    Most mail is a single text part, and the feed parser spends most of its
    time reading it line by line. This finds the header block the way the
    feed parser does (the same line ends, the same test for a header line)
    and, when every line in it is a plain field or a folded continuation
    (an mbox "From " envelope line first is fine), splits and unfolds the
    fields as the feed parser does and takes the rest as the payload in one
    slice. Anything else (multipart and message/* bodies, a header block
    that starts folded, a misplaced "From " line, a field with no name) is
    left to the feed parser.
    """
    match = _HEADER_BLOCK_LF.match(data)
    end = match.end() if match else 0
    has_cr = b"\r" in data[:end]
    if has_cr:
        match = _HEADER_BLOCK.match(data)
        end = match.end() if match else 0
    block = data[:end].decode("ascii", "surrogateescape")
    if block.startswith("From "):
        block = _FIRST_LINE.sub("", block, count=1)
    # a first line folded, a misplaced "From " line or a field with no name: the feed parser's special cases
    if block[:1] in (" ", "\t", ":") or block.startswith("From ") or "\nFrom " in block or "\n:" in block:
        return None
    msg = email.message.Message()
    if not has_cr:
        for name, value in _FIELD_LF.findall("\n" + block):
            msg.set_raw(name, value)
    elif "\rFrom " in block or "\r:" in block:
        return None
    else:
        for lines in _FIELD_BREAK.split(block) if block else ():
            # as compat32's header_source_parse: blanks after the colon go, folded line ends stay
            name, _, value = lines.partition(":")
            msg.set_raw(name, value.lstrip(" \t").rstrip("\r\n"))
    if end < len(data):
        if data[end] in b"\r\n":
            end += 2 if data.startswith(b"\r\n", end) else 1
        else:
            msg.defects.append(email.errors.MissingHeaderBodySeparatorDefect())
    if _is_container(msg):
        return None
    msg.set_payload(data[end:].decode("ascii", "surrogateescape"))
    return msg


def _is_container(msg: email.message.Message) -> bool:
    """Whether ``msg.get_content_maintype()`` is "message" or "multipart", read the way it reads it.

    That method looks the field up and converts its value through the
    policy on every call; an ASCII value needs no conversion, and the rest
    is its splitting of the value, done here directly.
    """
    for name, value in msg.raw_items():
        if name.lower() == "content-type":
            if not value.isascii():
                return msg.get_content_maintype() in ("message", "multipart")
            ctype = value.partition(";")[0].strip().lower()
            return ctype.count("/") == 1 and ctype.partition("/")[0] in ("message", "multipart")
    return False


# ---------------------------------------------------------------------------
# Headers


class _Fields:
    """The first occurrence of each header field of one part, read as ``Message.get`` reads it.

    ``Message.get`` scans and lowercases every field name on each call, and
    a part is asked for the same few fields many times; this indexes them
    once and converts a value only when it is asked for.
    """

    def __init__(self, part: email.message.Message) -> None:
        fields = list(part.raw_items())
        # built backwards, so that the first occurrence of a name is the one kept
        self.raw: dict[str, tuple[str, str]] = {name.lower(): (name, value) for name, value in reversed(fields)}

    def get(self, name: str) -> object:
        """The value of the field ``name`` (lowercase): a str, an email.header.Header, or None."""
        found = self.raw.get(name)
        if found is None:
            return None
        field, value = found
        # An ASCII value holds no undecodable bytes, and compat32 returns it as it is.
        return value if value.isascii() else _COMPAT32.header_fetch_parse(field, value)

    def str(self, name: str) -> str:
        """The value of the field ``name`` (lowercase) as a capped string, "" when it is absent."""
        value = self.get(name)
        return "" if value is None else str(value)[:MAX_HEADER_CHARS]


class _Headers:
    """Header access that decodes RFC 2047 words safely and caps the size of every value."""

    def __init__(self, msg: email.message.Message) -> None:
        self.fields = _Fields(msg)
        self.defects = len(msg.defects)
        self.truncated = False

    def text(self, name: str) -> str:
        value = self.fields.get(name.lower())
        if value is None:
            return ""
        text, ok, truncated = decode_header_value(value)
        self.defects += 0 if ok else 1
        self.truncated = self.truncated or truncated
        return text


def decode_header_value(value: object) -> tuple[str, bool, bool]:
    """Decode one header value (str or email.header.Header): (text, decoded cleanly, truncated)."""
    ok = True
    raw = value if isinstance(value, email.header.Header) else str(value)
    truncated = isinstance(raw, str) and len(raw) > MAX_HEADER_CHARS
    if isinstance(raw, str) and "=?" not in raw:
        text = raw[:MAX_HEADER_CHARS]  # no encoded word: decode_header would return it as it is
    else:
        try:
            chunks = email.header.decode_header(raw if isinstance(raw, email.header.Header) else raw[:MAX_HEADER_CHARS])
        except Exception:
            chunks = [(str(value)[:MAX_HEADER_CHARS], None)]
            ok = False
        parts: list[str] = []
        for chunk, charset in chunks:
            if isinstance(chunk, bytes):
                decoded, clean = decode_bytes(chunk, charset)
                ok = ok and clean
                parts.append(decoded)
            else:
                parts.append(chunk)
        text = "".join(parts)
    if not text.isprintable():  # one pass; \r, \n, \x00 and \t are all unprintable
        text = text.replace("\r", "").replace("\n", " ").replace("\x00", "")
        text = text.replace("\t", " ")
    while "  " in text:  # each pass halves every run of blanks
        text = text.replace("  ", " ")
    text = text.strip()
    return text[:MAX_HEADER_CHARS], ok, truncated or len(text) > MAX_HEADER_CHARS


_ADDRESS = re.compile(r"[\w.+'&/=-]+@[\w-]+(?:\.[\w-]+)+")
# The same for ASCII text, where \w is [A-Za-z0-9_]: a set of ASCII characters costs one table lookup
# per character, where \w asks the Unicode database. The repeats are possessive, as nothing they could
# give back is an "@" or a ".": backtracking into them never finds another match.
_ASCII_ADDRESS = re.compile(r"[A-Za-z0-9_.+'&/=-]++@[A-Za-z0-9_-]++(?:\.[A-Za-z0-9_-]++)++")


_QUOTED_LOCAL = re.compile(r'"(?:[^"\\]|\\.)*"@[^\s"@<>]+')


def parse_address(value: str) -> tuple[str, str]:
    """(display name, address) of a From-like header; a fast reading of the common forms."""
    match = re.search(r"<([^<>\s]*@[^<>\s]*)>", value)
    if match:
        return value[: match.start()].strip().strip('"').strip(), match.group(1)
    if '"' in value:  # a quoted local part ("ann lee"@example.org): the full parser reads it
        name, address = email.utils.parseaddr(value)
        if _QUOTED_LOCAL.fullmatch(address):
            return name, address
    match = (_ASCII_ADDRESS if value.isascii() else _ADDRESS).search(value)
    if match:
        rest = (value[: match.start()] + value[match.end() :]).strip()
        return rest.strip("()").strip().strip('"').strip(), match.group(0)
    return value.strip().strip('"'), ""


def _address_count(value: str) -> int:
    """Distinct addresses in an address header; a fast count rather than a full RFC 5322 parse."""
    if "@" not in value:
        return 0
    return len(set(map(str.lower, (_ASCII_ADDRESS if value.isascii() else _ADDRESS).findall(value))))


# ---------------------------------------------------------------------------
# Charsets


def decode_bytes(raw: bytes, charset: str | None) -> tuple[str, bool]:
    """Decode text in its declared charset, falling back safely: (text, declared charset worked).

    Order: the declared charset (strict), UTF-8 (strict), UTF-8 with
    replacement when most non-ASCII characters are valid UTF-8 and only a
    few bytes are broken, else Windows-1252 and finally Latin-1, which
    cannot fail. Raw UTF-8 in headers (RFC 6532, charset "unknown-8bit" to
    the email package) is not a defect.
    """
    codec = _codec(charset)
    if codec is not None:
        try:
            text = raw.decode(codec)
        except (UnicodeError, LookupError, ValueError, TypeError):
            pass
        else:
            if codec in _SURROGATE_CODECS:  # these can spell a lone surrogate, which no encoder takes
                text = _LONE_SURROGATE.sub("\ufffd", text)
            return text, True
    try:
        return raw.decode("utf-8"), not charset or charset.lower() == "unknown-8bit"
    except UnicodeDecodeError:
        pass
    text = raw.decode("utf-8", "replace")
    broken = text.count("\ufffd")
    if sum(1 for ch in text if ch > "\x7f") - broken > broken * 4:
        return text, False
    try:
        return raw.decode("cp1252"), False
    except UnicodeDecodeError:
        return raw.decode("latin-1"), False


# Codecs that decode to lone surrogates; the *unicode_escape ones are Python's, not charsets, and are refused.
_SURROGATE_CODECS = frozenset({"utf-7", "punycode"})
_NOT_CHARSETS = frozenset({"unicode-escape", "raw-unicode-escape"})
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _codec(charset: str | None) -> str | None:
    if not charset or not isinstance(charset, str) or len(charset) > 40:
        return None
    name = charset.strip().strip('"').lower()
    if name in ("unknown-8bit", "x-unknown", "x-user-defined", "unknown", "default"):
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return info.name


# ---------------------------------------------------------------------------
# The MIME tree


# A uuencoded file: "begin", its mode, its name, then a first line of data; a full data line is "M" and 60
# characters of the uu alphabet (space to backquote), a short last one starts with a smaller length letter.
_UU_BEGIN = re.compile(r"^begin [0-7]{3,4} ([^\r\n]{1,255})\r?\n(?=[!-M][ -`]{0,62}\r?(?:\n|\Z))", re.M)


@dataclass
class _Text:
    kind: str  # "plain", "html", or "head" (the headers of an attached message)
    text: str
    forwarded: bool


class _Body:
    """Walks the MIME tree iteratively, with caps, collecting text parts and attachment metadata."""

    def __init__(self, max_text_chars: int) -> None:
        self.max_text_chars = max_text_chars
        self.html_budget = max_text_chars * _MAX_HTML_FACTOR
        self.raw_cap = max(4096, max_text_chars * 8)
        self.texts: list[_Text] = []
        self.hrefs: list[str] = []
        self.attachments: list[Attachment] = []
        self.has_html = False
        self.part_count = 0
        self.defects = 0
        self.limits: list[str] = []
        self.budget = max_text_chars

    def walk(self, msg: email.message.Message, fields: _Fields) -> None:
        """Read the tree under ``msg``, whose header fields are ``fields``."""
        stack: list[tuple[email.message.Message, int, bool]] = [(msg, 0, False)]
        while stack:
            part, depth, forwarded = stack.pop()
            if self.part_count >= MAX_PARTS:
                self.limits.append("parts")
                return
            self.part_count += 1
            if part is not msg:
                self.defects += len(getattr(part, "defects", ()))
                fields = _Fields(part)
            ctype = _content_type(fields)
            payload = _raw_payload(part)
            if isinstance(payload, list):
                if depth >= MAX_DEPTH:
                    self.limits.append("depth")
                    continue
                inner = forwarded or ctype == "message/rfc822"
                children = [p for p in payload if isinstance(p, email.message.Message)]
                if ctype == "message/rfc822" and children:
                    self._forwarded_headers(children[0])
                if ctype == "multipart/alternative":
                    children, dropped_html = _prefer_plain(children)
                    self.has_html = self.has_html or dropped_html
                stack.extend((child, depth + 1, inner) for child in reversed(children))
                continue
            self._leaf(part, fields, ctype, forwarded)

    def _leaf(self, part: email.message.Message, fields: _Fields, ctype: str, forwarded: bool) -> None:
        disposition = fields.str("content-disposition").split(";", 1)[0].strip().lower()
        filename = _filename(fields)
        is_text = ctype in ("text/plain", "text/html", "text/enriched")
        if ctype == "text/html":
            self.has_html = True
        if disposition == "attachment" or filename or not is_text:
            if len(self.attachments) < MAX_ATTACHMENTS:
                self.attachments.append(Attachment(ctype, filename, _encoded_size(part, fields)))
            else:
                self.limits.append("attachments")
            return
        if self.budget <= 0:
            self.limits.append("text")
            return
        cte = fields.str("content-transfer-encoding").strip().lower()
        raw, clean = self._payload_bytes(part, cte)
        text, ok = decode_bytes(raw, _param(fields.str("content-type"), "charset") or None)
        self.defects += (0 if clean else 1) + (0 if ok else 1)
        if ctype == "text/html":
            if self.html_budget <= 0:
                self.limits.append("text")
                return
            text = text[: self.html_budget]
            self.html_budget -= len(text)  # every HTML part is read from one allowance: its markup costs too
            text, hrefs = html_to_text(text)
            self.hrefs.extend(hrefs)
            kind = "html"
        else:
            text = _clean_qp_leftovers(text) if cte != "quoted-printable" else text
            if "begin " in text:
                text = self._take_uuencoded(text)
            if _looks_like_html(text):  # markup sent as plain text (old webmail, mail flattened by an archive)
                self.has_html = True
                if self.html_budget <= 0:  # markup costs what an HTML part's does, words or not
                    self.limits.append("text")
                    return
                text = text[: self.html_budget]
                self.html_budget -= len(text)
                text, hrefs = _strip_tags(text)
                self.hrefs.extend(hrefs)
            kind = "plain"
        if len(text) > self.budget:
            text = text[: self.budget]
            self.limits.append("text")
        self.budget -= len(text)
        self.texts.append(_Text(kind, text, forwarded))

    def _take_uuencoded(self, text: str) -> str:
        """``text`` without its uuencoded files, each recorded as an attachment (mail of the 1990s and early
        2000s carried files in the text this way). A block runs from its ``begin`` line to its ``end`` line, or
        to the end of a text that was cut short."""
        kept: list[str] = []
        start = 0
        for found in _UU_BEGIN.finditer(text):
            if found.start() < start:
                continue
            end = text.find("\nend", found.end())
            while end != -1 and text[end + 4 : end + 5] not in ("", "\n", "\r"):
                end = text.find("\nend", end + 4)
            stop = len(text) if end == -1 else end + 4
            kept.append(text[start : found.start()])
            start = stop
            filename = found.group(1).strip()
            if len(self.attachments) < MAX_ATTACHMENTS:
                self.attachments.append(Attachment("application/octet-stream", filename, stop - found.start()))
            else:
                self.limits.append("attachments")
        if not kept:
            return text
        kept.append(text[start:])
        return "".join(kept)

    def _forwarded_headers(self, inner: email.message.Message) -> None:
        head = _Headers(inner)
        lines = [f"{name}: {head.text(name)}" for name in ("From", "Date", "Subject") if head.fields.get(name.lower())]
        self.defects += head.defects
        if lines:
            self.texts.append(_Text("head", "\n".join(lines) + "\n", True))

    def _payload_bytes(self, part: email.message.Message, cte: str) -> tuple[bytes, bool]:
        """The part's body decoded from its transfer encoding ``cte``, reading at most ``raw_cap`` characters."""
        payload = _raw_payload(part)
        if not isinstance(payload, str):
            return b"", False
        if len(payload) > self.raw_cap:
            payload = payload[: self.raw_cap]
            self.limits.append("text")
        data = payload.encode("utf-8", "surrogateescape")
        if cte == "base64":
            return _b64decode(data)
        if cte == "quoted-printable":
            try:
                return quopri.decodestring(data), True
            except (ValueError, binascii.Error):
                return data, False
        if cte in ("", "7bit", "8bit", "binary"):
            return data, True
        return data, False

    def main_text(self) -> str:
        return self._select(forwarded=False)

    def forwarded_text(self) -> str:
        return self._select(forwarded=True)

    def _select(self, *, forwarded: bool) -> str:
        """Plain text parts, or the HTML ones when the plain parts are (nearly) empty; headers of attached
        messages are kept in place."""
        texts = [t for t in self.texts if t.forwarded == forwarded]
        if not texts:
            return ""
        has_html = any(t.kind == "html" for t in texts)
        plain_is_empty = has_html and len("".join(t.text for t in texts if t.kind == "plain").strip()) < 20
        body_kind = "html" if plain_is_empty else "plain"
        return "\n".join(t.text for t in texts if t.kind in ("head", body_kind))


def _raw_payload(part: email.message.Message) -> object:
    """The body as parsed: undecodable bytes kept as surrogate escapes.

    ``Message.get_payload()`` would already replace them using the declared
    charset, which is the very decision ``decode_bytes`` has to make when
    that charset is unknown or wrong; so the stored payload is read as is.
    """
    return getattr(part, "_payload", None)


def _prefer_plain(children: list[email.message.Message]) -> tuple[list[email.message.Message], bool]:
    """In multipart/alternative keep only the plain part when it has text (RFC 2046 5.1.4).

    Returns the children to read and whether an HTML alternative was dropped;
    converting HTML is the costly step, so it is done only when needed.
    """
    types = [_content_type(_Fields(c)) for c in children]
    plain = [c for c, ctype in zip(children, types, strict=True) if ctype == "text/plain" and _has_text(c)]
    html = [c for c, ctype in zip(children, types, strict=True) if ctype == "text/html"]
    if plain and html:
        return plain, True
    return children, False


def _has_text(part: email.message.Message) -> bool:
    payload = _raw_payload(part)
    return isinstance(payload, str) and len(payload.strip()) >= 40


_TOKEN = re.compile(r"^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*/\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)")


def _content_type(fields: _Fields) -> str:
    match = _TOKEN.match(fields.str("content-type"))
    if match:
        return f"{match.group(1)}/{match.group(2)}".lower()
    return "text/plain"


_PARAMS = {
    name: re.compile(rf"(?:^|;)\s*{name}\*?(?:0\*?)?\s*=\s*(\"[^\"]*\"|[^;\s]*)", re.I)
    for name in ("charset", "filename", "name")
}


def _param(raw: str, name: str) -> str:
    if raw.isascii() and name not in raw.lower():  # for ASCII, re.I matches exactly what lower() finds
        return ""
    match = _PARAMS[name].search(raw)
    if not match:
        return ""
    value = match.group(1).strip('"')
    if "''" in value:
        value = value.split("''", 1)[1]
        value = urllib.parse.unquote(value, errors="replace")
    return value


def _filename(fields: _Fields) -> str:
    name = _param(fields.str("content-disposition"), "filename") or _param(fields.str("content-type"), "name")
    return decode_header_value(name)[0][:255] if name else ""


def _encoded_size(part: email.message.Message, fields: _Fields) -> int:
    payload = _raw_payload(part)
    if not isinstance(payload, str):
        return 0
    if fields.str("content-transfer-encoding").strip().lower() == "base64":
        return len(payload) * 3 // 4
    return len(payload)


_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")


def _b64decode(data: bytes) -> tuple[bytes, bool]:
    compact = _NOT_BASE64.sub(b"", data)
    try:
        return binascii.a2b_base64(compact), len(compact) == len(data.replace(b"\n", b"").replace(b"\r", b""))
    except binascii.Error:
        pass
    usable = compact.rstrip(b"=")
    usable = usable[: len(usable) // 4 * 4]
    try:
        return base64.b64decode(usable), False
    except (binascii.Error, ValueError):
        return data, False


_QP_SOFT = re.compile(r"=\r?\n")
_QP_ESCAPE = re.compile(r"=(20|09|3D|A0)")
_QP_ESCAPES = {"20": " ", "09": "\t", "3D": "=", "A0": " "}


def _clean_qp_leftovers(text: str) -> str:
    """Undo quoted-printable that was never decoded (common in Enron bodies declared 7bit).

    Only the unambiguous pieces are undone (soft line breaks, =20, =09, =3D),
    and only when they occur more than once, so that an equals sign at the
    end of a line of code is left alone.
    """
    if "=" not in text or text.count("=\n") + text.count("=\r\n") + text.count("=20") < 2:
        return text
    text = _QP_SOFT.sub("", text)
    return _QP_ESCAPE.sub(lambda m: _QP_ESCAPES[m.group(1)], text)


# ---------------------------------------------------------------------------
# HTML


class _HtmlText(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "title", "noscript", "template"})
    _BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "blockquote", "pre", "ul"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip = 0
        self.quote = 0
        self.hrefs: list[str] = []

    def updatepos(self, i: int, j: int) -> int:
        """Skip the line and column bookkeeping (a count of newlines per token); positions are never reported."""
        return j

    def _newline(self) -> None:
        line = " ".join("".join(self.current).split())
        self.current = []
        if line or (self.lines and self.lines[-1]):
            self.lines.append(("> " * self.quote + line) if line else "")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip += 1
        elif tag in self._BLOCK:
            self._newline()
        if tag == "blockquote":
            self.quote += 1
        elif tag == "a" and not self.quote and len(self.hrefs) < MAX_LINKS:
            href = dict(attrs).get("href") or ""
            if href.lower().startswith(("http://", "https://")):
                self.hrefs.append(href.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self._BLOCK:
            self._newline()
        if tag == "blockquote":
            self._newline()
            self.quote = max(0, self.quote - 1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "hr"):
            self._newline()

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.current.append(data)


# html.parser rescans from the "<" of a tag it cannot close to the end of the input, and
# again for the next one: quadratic time on a few hundred KB of '<a "' or '<a b=">"'. So a
# "<" whose tag does not reach its ">" before the next "<" becomes "&lt;", the text a
# browser shows for it; so does every "<!--" after the last "-->". Quotes count as
# html.parser counts them, only around a value after "=", so that sloppy tags it reads
# (src="x.gif"">) stay tags. No part of the lookahead crosses a "<", so each one ends
# before the next "<" and the whole is linear; a tag with "<" in a quoted value is read as text.
_TAG_BODY = r"""[^<>=]*+(?:=++\s*+(?:"[^"<]*+"|'[^'<]*+')?+[^<>=]*+)*+"""
_BROKEN_TAG = re.compile(r"<(?!!--)(?!" + _TAG_BODY + r">)")


# A marked section runs to its end, which html.parser looks for from each one: "]]>" for "<![CDATA[" (and
# temp, ignore, include, rcdata), "]>" for Outlook's "<![if", "<![else", "<![endif", whitespace allowed
# between. Those with no such end after them (outside comments, which all close by then) are made text,
# which is what html.parser would make of them, so that the whole stays linear.
_MARKUP_MARKS = re.compile(r"<!--.*?-->|<!\[([a-zA-Z][-_.a-zA-Z0-9]*)?|(\]\s*\]\s*>)|\]\s*>", re.S)
_DOUBLE_END_SECTIONS = frozenset({"temp", "cdata", "ignore", "include", "rcdata"})
_SINGLE_END_SECTIONS = frozenset({"if", "else", "endif"})


def _defuse_marked_sections(html: str) -> str:
    sections: list[tuple[int, str]] = []
    last_single = last_double = -1  # where the last end of each kind starts
    for found in _MARKUP_MARKS.finditer(html):
        mark = found.group()
        if mark.startswith("<!--"):
            continue
        if mark.startswith("<!["):
            sections.append((found.start(), (found.group(1) or "").lower()))
            continue
        last_single = found.start()  # "]]>" ends an "<![if" too: its last "]" and ">" are "]>"
        if found.group(2):
            last_double = found.start()
    unclosed = [
        start
        for start, name in sections
        if (name in _DOUBLE_END_SECTIONS and start > last_double)
        or (name in _SINGLE_END_SECTIONS and start > last_single)
    ]
    if not unclosed:
        return html
    pieces, position = [], 0
    for start in unclosed:
        pieces += [html[position:start], "&lt;"]
        position = start + 1
    return "".join(pieces) + html[position:]


def _defuse_html(html: str) -> str:
    html = _BROKEN_TAG.sub("&lt;", html)
    tail = html.rfind("-->") + 1
    if html.find("<!--", tail) >= 0:
        html = html[:tail] + html[tail:].replace("<!--", "&lt;!--")
    if "<![" in html:
        html = _defuse_marked_sections(html)
    return html


# Tags that plain text almost never starts with and holds three of at once. The name must end the word
# ("<b>", "<a href"): "<a.smith@example.org>" is an address.
_HTML_TAG = re.compile(
    r"</?(?:html|head|body|p|br|div|font|table|tr|td|span|b|i|a|meta|!doctype)(?=[\s/>])[^<>]{0,500}>", re.I
)
# A comment's ends break lines too: what sits between them is a block of its own.
_BREAKING_TAG = re.compile(
    r"<(?:br|hr|/?p|/?div|/?tr|/?li|/?h[1-6]|/?table|/?blockquote)(?=[\s/>])[^<>]{0,2000}>|<!--|-->", re.I
)
# Names with a prefix ("<o:p>", "<st1:place>", Word's), Word's "<![if !supportLists]>" and "<![endif]>",
# and its "<?xml:namespace ...>".
_ANY_TAG = re.compile(
    r"<(?:/?[a-z][a-z0-9]*(?::[a-z0-9]+)?(?=[\s/>])|!doctype|!\[(?:if|endif)\b|\?xml)[^<>]{0,2000}>", re.I
)
_HREF = re.compile(r"""\bhref\s*=\s*["']?([^"'\s<>]{1,2000})""", re.I)


def _looks_like_html(text: str) -> bool:
    """Whether a plain text part is HTML markup: it starts with a tag and has at least three known tags early on.

    Plain prose that quotes a tag or two, or ends with markup pasted below it, stays plain."""
    start = len(text) - len(text.lstrip())
    return text[start : start + 1] == "<" and len(_HTML_TAG.findall(text, start, start + 5000)) >= 3


def _strip_tags(text: str) -> tuple[str, list[str]]:
    """Markup sent as plain text, as its reader sees it without the tags: every word kept (what a style or
    script element holds too, since a plain-text reader shows it), line breaks where the tags break lines."""
    hrefs = [h for h in _HREF.findall(text, 0, 200_000) if h.lower().startswith(("http://", "https://"))]
    text = _ANY_TAG.sub("", _BREAKING_TAG.sub("\n", text))
    return _unescape(text), hrefs[:MAX_LINKS]


def html_to_text(html: str) -> tuple[str, list[str]]:
    """Visible text of an HTML body (script and style dropped, blockquotes as "> " lines) and its links."""
    parser = _HtmlText()
    try:
        parser.feed(_defuse_html(html))
        parser.close()
    except (AssertionError, ValueError):
        pass
    parser._newline()
    return "\n".join(parser.lines), parser.hrefs


# ---------------------------------------------------------------------------
# Own text, quoted replies and forwarded parts

# Each family of markers is one alternation, tried in one search; "^" stays outside the
# alternation so that a search that fails at the start of the line stops there.
_FORWARD_MARKER = re.compile(
    r"^(?:\s*-{2,}\s*(?:forwarded message|forwarded e-?mail)\s*-{2,}"
    r"|\s*-{2,}\s*message transf[ée]r[ée]\s*-{2,}"
    r"|\s*-{2,}\s*forwarded by\b"
    r"|\s*begin forwarded message\s*:?\s*$"
    r"|\s*d[ée]but du message r[ée]exp[ée]di[ée]\s*:?\s*$)",
    re.I,
)
_QUOTE_MARKER = re.compile(
    r"^(?:\s*-{2,}\s*original message\s*-{2,}"
    r"|\s*-{2,}\s*message d'origine\s*-{2,}"
    r"|\s*-{2,}\s*message original\s*-{2,}"
    r"|\s*_{10,}\s*$)",
    re.I,
)
_ATTRIBUTION = re.compile(
    r"^\s*(?:-{2,}\s*)?on\b.{0,300}\bwrote\s*:\s*$"
    r"|^\s*(?:-{2,}\s*)?le\b.{0,300}\ba\s+[ée]crit\s*:\s*$",
    re.I,
)
_HEADER_LINE = re.compile(
    r"^\s*(?:from|sent|date|to|cc|subject|de|envoy[ée]|[àa]|objet|reply-to|please respond to|content-[a-z-]+"
    r"|mime-version)\s*:",
    re.I,
)
_FROM_LINE = re.compile(r"^\s*(?:from|de)\s*:", re.I)
# Any RFC 5322 field or folded continuation: raw headers pasted above a forwarded message's From line.
_ANY_HEADER_LINE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]{1,40}:\s|[ \t]+\S)")
_NOTES_DATE = re.compile(r"(?:^|\son\s)\s*\d{1,2}/\d{1,2}/\d{2,4}\s+\d{1,2}:\d{2}")
_TO_LINE = re.compile(r"^\s*to\s*:", re.I)
# A line that may open a reply or forward block starts (after blanks) with one of these, or has a
# "1/2/2001"-like date within its first 120 characters. Each is searched for in the whole text at
# once; the lookahead lets the search skip, in one step, the lines no alternative can start.
_CANDIDATE_START = re.compile(
    r"\n[^\S\n]*(?=[-_>olbdfst])(?:-{2,}|_{10,}|>|on\b|le\b|begin\b|d[ée]but\b|(?:from|de|sent|date|to)[^\S\n]*:)",
    re.I,
)
_DATE_SLASH = re.compile(r"/(?=\d{1,2}/\d)")
_DATE_COLUMN = 120


def _matching_lines(pattern: re.Pattern[str], text: str) -> Iterator[int]:
    """Indexes, in order, of the lines of ``text`` (split at "\\n") at whose start ``pattern`` matches.

    ``pattern`` opens with "\\n": searching the whole text for "\\n" and what
    follows is much faster than matching every line on its own.
    """
    text = "\n" + text  # the "\n" before each line, the first one included, marks where it starts
    line = last = 0
    for match in pattern.finditer(text):
        line += text.count("\n", last, match.start())
        last = match.start()
        yield line


def _date_lines(text: str) -> Iterator[int]:
    """Indexes, in order, of the lines of ``text`` with a "1/2/2001"-like date in their first 120 characters."""
    text = "\n" + text
    line, last, line_start = -1, 0, 0
    for match in _DATE_SLASH.finditer(text):
        slash = match.start()
        newlines = text.count("\n", last, slash)
        if newlines:
            line += newlines
            line_start = text.rfind("\n", last, slash) + 1
        last = slash
        if text[slash - 1].isdecimal() and slash - 1 - line_start <= _DATE_COLUMN:
            yield line


def _candidate_lines(text: str) -> Iterator[int]:
    """Indexes, in order and each once, of the lines of ``text`` worth testing for a reply or forward marker.

    They are searched for only as they are asked for, so the rest of a long
    thread below the first marker is never searched.
    """
    markers = _matching_lines(_CANDIDATE_START, text)
    if "/" not in text:
        return markers
    return _union(markers, _date_lines(text))


def _union(first: Iterator[int], second: Iterator[int]) -> Iterator[int]:
    """The non-negative integers of two ascending iterators, in ascending order and each once.

    What ``heapq.merge`` and a filter of repeats would give, in one generator
    and without a heap: this runs once for every candidate line.
    """
    previous = -1
    a, b = next(first, None), next(second, None)
    while True:
        if a is None:
            if b is None:
                return
            value, b = b, next(second, None)
        elif b is None or a <= b:
            value, a = a, next(first, None)
        else:
            value, b = b, next(second, None)
        if value != previous:
            yield value
            previous = value


def split_text(text: str, *, subject: str = "") -> tuple[str, str, str]:
    """Split a body into (own, quoted, forwarded) text.

    Lines before the first reply or forward marker are the sender's own;
    from the marker on, the rest is quoted (a reply) or forwarded. Markers
    cover Gmail ("On ... wrote:", "---------- Forwarded message ---------"),
    Apple Mail, Thunderbird, Outlook ("-----Original Message-----", a
    "From: ... Sent: ..." block, "De : ... Envoyé :") in English and French,
    and Lotus Notes ("----- Forwarded by ...", "Name <addr> on 01/02/2001").
    Outlook uses the same markers for replies and forwards, so the subject
    prefix (Fwd:, FW:, TR:) decides; it also turns "> " quoted lines
    (webmail forwards) into forwarded text. Otherwise isolated "> " lines
    above the first marker are quoted. Webmail advertising footers are
    dropped first.
    """
    text = _strip_ad_footers(text.replace("\r\n", "\n").replace("\r", "\n"))
    candidates = iter(_candidate_lines(text))
    first = next(candidates, None)
    if first is None:  # no line can open a block: all of it is the sender's own (half of all mail)
        return text, "", ""
    lines = text.split("\n")
    forward_subject = bool(_FORWARD_PREFIX.match(subject))
    own: list[str] = []
    quoted: list[str] = []
    after = 0
    for i in itertools.chain((first,), candidates):
        own.extend(lines[after:i])
        after = i + 1
        line = lines[i]
        kind, start = _marker(lines, i, forward_subject)
        if kind:
            block = "\n".join(lines[start:])
            own = own[: len(own) - (i - start)] if start < i else own
            if kind == "forward" or forward_subject:
                return "\n".join(own), "\n".join(quoted), block
            return "\n".join(own), _join("\n".join(quoted), block), ""
        if line.lstrip().startswith(">"):
            quoted.append(line)
        else:
            own.append(line)
    own.extend(lines[after:])
    if forward_subject:
        return "\n".join(own), "", "\n".join(quoted)
    return "\n".join(own), "\n".join(quoted), ""


_AD_FOOTER_LINE = re.compile(
    r"\n[^\S\n]*(?=[cdegjmps])(?:do you yahoo!?\?|get your free download of msn|"
    r"join the world's largest e-mail service|chat with friends online|send and receive hotmail|"
    r"get more from the web|msn photos is the easiest|express yourself instantly with msn|protect your pc|"
    r"send instant messages)",
    re.I,
)
_UNDERSCORES = re.compile(r"_{10,}")


def _strip_ad_footers(text: str) -> str:
    """Drop the advertising footers webmail services appended to every message (Hotmail, Yahoo!).

    They are not the sender's words, and their links would make any short
    note look like a shared link. A footer runs from its first line (or the
    line of underscores above it) over at most five lines, up to a blank one.
    """
    if "____" not in text and "Yahoo!" not in text:
        return text
    starts = set(_matching_lines(_AD_FOOTER_LINE, text))
    if not starts:
        return text
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    for at in sorted(starts | {start - 1 for start in starts if start}):
        if at < i:
            continue
        out.extend(lines[i:at])
        i = at
        if at in starts:
            skip = 1
        elif _UNDERSCORES.fullmatch(lines[at].strip()):
            skip = 2
        else:
            continue
        i += skip
        while i < len(lines) and lines[i].strip() and skip < 5:
            i += 1
            skip += 1
    out.extend(lines[i:])
    return "\n".join(out)


def _marker(lines: list[str], i: int, forward_subject: bool) -> tuple[str, int]:
    """("forward" | "quote" | "", first line of the block) for the block that may start at line i."""
    line = lines[i]
    if _FORWARD_MARKER.search(line):
        return "forward", i
    outlook = "forward" if forward_subject else "quote"
    if _QUOTE_MARKER.search(line):
        if line.strip().startswith("_") and not (i + 1 < len(lines) and _FROM_LINE.match(lines[i + 1])):
            return "", i
        return outlook, i
    if len(line) < 400:
        joined = f"{line} {lines[i + 1]}" if i + 1 < len(lines) else line
        # an attribution ends with a colon, which most lines lack: the pattern runs only where there is one
        if ":" in joined and (_ATTRIBUTION.match(line) or (len(joined) < 400 and _ATTRIBUTION.match(joined))):
            return "quote", i
    if _FROM_LINE.match(line):
        window = lines[max(0, i - 3) : i + 6]
        if sum(1 for w in window if _HEADER_LINE.match(w)) >= 3:
            start = i
            while start > 0 and i - start < 30 and _ANY_HEADER_LINE.match(lines[start - 1]):
                start -= 1
            return outlook, start
    notes_date = "/" in line and _NOTES_DATE.search(line)  # the date has slashes: most lines are passed over
    if notes_date and len(line) < 200 and any(_TO_LINE.match(w) for w in lines[i + 1 : i + 5]):
        start = i - 1 if _NOTES_DATE.match(line) and i > 0 and lines[i - 1].strip() else i
        return outlook, start
    return "", i


def forwarded_message(msg: ParsedMessage) -> ParsedMessage | None:
    """The first message embedded in ``msg``'s forwarded (else quoted) part, as if it had been sent directly.

    Lets a labelled corpus use the request that was forwarded to its owner
    (the inner message) even though the outer message only says "FYI".
    None when there is no embedded message with text of its own.
    """
    block = msg.forwarded_text or msg.quoted_text
    if not block.strip():
        return None
    lines = block.split("\n")
    body_lines = [line for line in lines[1:] if line.strip()]
    if body_lines and sum(1 for line in body_lines if line.lstrip().startswith(">")) * 2 > len(body_lines):
        lines = [re.sub(r"^\s*> ?", "", line) for line in lines]
    start, headers = _skip_embedded_header(lines)
    body = "\n".join(lines[start:])
    own, quoted, forwarded = split_text(body, subject=headers.get("subject", ""))
    own = _tidy(own)
    if not own:
        return None
    subject = headers.get("subject") or _FORWARD_PREFIX.sub("", _REPLY_PREFIX.sub("", msg.subject))
    to_line = headers.get("to", "")
    return replace(
        msg,
        subject=subject,
        sender="",
        sender_name="",
        to_count=max(1, to_line.count("@") or len([p for p in to_line.split(",") if p.strip()])),
        message_id="",
        in_reply_to="",
        own_text=own,
        quoted_text=_tidy(quoted),
        forwarded_text=_tidy(forwarded),
        links=_links(own, forwarded, []),
        attachments=(),
        language=detect_language(_join(subject, own)),
    )


def _skip_embedded_header(lines: list[str]) -> tuple[int, dict[str, str]]:
    """Where the body of an embedded message starts, and the header lines found before it.

    The block opens with a marker ("-----Original Message-----", "On ...
    wrote:", a Lotus Notes name and date line) and usually a header block
    (From:, Sent:, To:, Subject:), whose lines may wrap. The body starts
    after the Subject line (or after the last header line) at the first
    line that is not blank.
    """
    limit = min(len(lines), 60)
    if not any(_HEADER_LINE.match(line) for line in lines[:8]):
        for i, line in enumerate(lines[:3]):
            if re.search(r"(?:wrote|[ée]crit)\s*:\s*$", line, re.I):
                return i + 1, {}
        return 1, {}
    headers: dict[str, str] = {}
    subject_at = last_header = -1
    i = 0
    while i < limit:
        line = lines[i]
        stripped = line.strip()
        if _HEADER_LINE.match(line) or (last_header == i - 1 and _ANY_HEADER_LINE.match(line)):
            key, _, value = stripped.partition(":")
            key = _HEADER_ALIASES.get(key.strip().lower(), key.strip().lower())
            headers.setdefault(key, value.strip())
            last_header = i
            if key == "subject":
                subject_at = i
        elif not stripped:
            pass
        elif subject_at >= 0:
            after = lines[i + 1] if i + 1 < len(lines) else ""
            wrapped = i == subject_at + 1 and len(lines[subject_at].strip()) > 60
            if not (wrapped and (not after.strip() or _ANY_HEADER_LINE.match(after))):
                return i, headers
            last_header = i
        elif last_header >= 0 and not lines[i - 1].strip():
            return i, headers
        i += 1
    return i, headers


_HEADER_ALIASES = {"objet": "subject", "de": "from", "à": "to", "a": "to", "envoyé": "sent", "envoye": "sent"}


# ---------------------------------------------------------------------------
# Links, language, tidying

# The scheme is spelled out case by case ("ſ" is an "s" to re.I) rather than with re.I, which would
# stop the search from skipping ahead to the next "h".
_URL = re.compile(r"[hH][tT][tT][pP][sS\u017f]?://[^\s<>\"'\]\[{}|\\^`]+")


def _links(own: str, forwarded: str, hrefs: list[str]) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for text in (own, forwarded):
        if "://" not in text:
            continue
        for match in _URL.finditer(text):
            found.setdefault(_trim_url(match.group(0)), None)
            if len(found) >= MAX_LINKS:
                return tuple(found)
    for href in hrefs:
        found.setdefault(_trim_url(href), None)
        if len(found) >= MAX_LINKS:
            break
    return tuple(u for u in found if len(u) > len("https://"))


def _trim_url(url: str) -> str:
    url = url[:2000].rstrip(".,;:!?*")
    while url.endswith(")") and url.count(")") > url.count("("):
        url = url[:-1]
    return url


# French letters, and enough others to keep Spanish and Portuguese words whole
_WORD = re.compile(r"[a-zàâäçéèêëîïôöûùüÿœæáíóúñãõ']+")
_EN = frozenset(
    ("the", "and", "to", "of", "you", "is", "that", "for", "it", "with", "this", "have", "be", "are")
    + ("your", "my", "we", "would", "could", "please", "thanks", "was", "will", "what", "about", "from")
    + ("they", "i", "if", "can", "just", "not", "in", "at", "hi", "hey", "so", "do", "has", "but", "all")
    + ("our", "know", "see", "here", "there", "been", "how", "who", "get", "he", "she", "his", "her", "him")
    + ("them", "their", "thank", "i'm", "it's", "don't", "thought", "some", "any", "when", "did", "should")
    + ("which", "an", "or")
)
_FR = frozenset(  # disjoint from _EN: a word counts for one language only
    ("le", "la", "les", "et", "des", "un", "une", "est", "pour", "que", "qui", "dans", "vous", "je")
    + ("nous", "pas", "sur", "avec", "ce", "cette", "mon", "votre", "merci", "bonjour", "au", "du")
    + ("mes", "vos", "être", "très", "suis", "ai", "de", "à", "tu", "ça", "il", "elle", "mais", "ou", "où")
    + ("nos", "ton", "ta", "tes", "te", "moi", "toi", "aux", "ses", "leur", "comme", "bien", "salut")
    + ("coucou", "bises", "bisous", "cordialement", "oui", "voici", "aussi", "tout", "fait", "été", "avez")
    + ("vu", "quand", "déjà", "sont", "peux", "pourriez")
)
# French elision at the start of a word: "c'est", "j'ai", "l'a", "qu'il" (no English word starts so).
# Searched from the apostrophe, which the regex engine finds fast; the letters before it are checked after.
_APOSTROPHE_WORD = re.compile(r"'[a-zàâäçéèêëîïôöûùüÿœæ]", re.I)
_ELIDING = frozenset(("c", "j", "l", "d", "m", "n", "s", "t", "qu"))
# Common words of other languages (Spanish, Italian, Portuguese, Catalan, German, Dutch) found in neither
# list: a text made mostly of them is in no language the model knows, not French by a shared "de" or "la".
_OTHER = frozenset(
    ("el", "los", "las", "por", "para", "con", "es", "del", "muy", "mucho", "hola", "este", "esta", "hoy")
    + ("creo", "gracias", "usted", "pero", "porque", "también", "más", "buenos", "días", "tiene", "qué")
    + ("ciao", "ti", "mi", "di", "che", "sono", "della", "gli", "questo", "questa", "molto", "è")
    + ("hai", "ho", "anche", "grazie", "buongiorno", "olá", "oi", "você", "não", "uma", "muito", "tudo")
    + ("bem", "obrigado", "obrigada", "em", "da", "sua", "seu", "agora", "amb", "els", "és", "molt", "què")
    + ("vaig", "und", "ist", "nicht", "ich", "sie", "mit", "zu", "auf", "das", "ein", "eine", "den", "dem")
    + ("wir", "der", "hast", "hallo", "guten", "mir", "het", "een", "van", "niet", "ik", "zijn")
    + ("heb", "maar", "wat", "voor", "ook", "echt", "hoi")
)


# For ASCII text, _WORD's words are the runs left when every other character becomes a blank.
_ASCII_NON_WORD = str.maketrans({chr(c): " " for c in range(128) if not _WORD.fullmatch(chr(c))})


def detect_language(text: str) -> str:
    """ "en", "fr" or "unknown", from counts of common words in the first 2,000 characters.

    Two words of one language are enough ("salut, regarde ça"), but a text mostly made of another
    language's common words is "unknown"."""
    cased = text[:2000]
    if "\u2019" in cased:
        cased = cased.replace("\u2019", "'")  # the apostrophe phones and word processors type
    text = cased.lower()
    words = text.translate(_ASCII_NON_WORD).split() if text.isascii() else _WORD.findall(text)
    en = sum(map(_EN.__contains__, words))
    fr = sum(map(_FR.__contains__, words)) + (_elisions(cased) if "'" in text else 0)
    if en + fr < 2 or sum(map(_OTHER.__contains__, words)) >= max(en, fr):
        return "unknown"
    if fr > en:
        return "fr"
    return "en"


def _elisions(text: str) -> int:
    """How many words of ``text`` start with a French elision. A capital on both sides of the apostrophe,
    then a small letter, is a name ("D'Amato", "D'Souza"), not an elision ("C'EST" is one)."""
    count = 0
    for found in _APOSTROPHE_WORD.finditer(text):
        start = found.start()
        if text[start - 1 : start].isupper() and text[start + 1].isupper() and text[start + 2 : start + 3].islower():
            continue
        head = text[max(0, start - 3) : start].lower()
        for prefix in ("qu", head[-1:]):
            before = head[: -len(prefix)][-1:]
            if head.endswith(prefix) and prefix in _ELIDING and not (before.isalpha() or before == "'"):
                count += 1
                break
    return count


def _has_words(text: str, count: int) -> bool:
    """Whether ``text`` has at least ``count`` words, without splitting all of a long text."""
    return len(text.split(maxsplit=count - 1)) >= count


def _join(*texts: str) -> str:
    return "\n".join(t for t in texts if t and not t.isspace())


_BLANKS = re.compile(r"\n\n\n+")  # not \n{3,}: a literal start lets the search skip ahead
# A line end with a blank before it (the blanks that str.rstrip removes). Found from its "\n", which
# the search skips ahead to; most texts have none, and are then not split into lines at all.
_BLANK_AT_LINE_END = re.compile(r"\n(?<=[^\S\n]\n)")


def _tidy(text: str) -> str:
    if not text:
        return text
    text = text.replace("\x00", "")
    # the blanks ending the last line go with the final strip()
    if _BLANK_AT_LINE_END.search(text):
        text = "\n".join(map(str.rstrip, text.split("\n")))
    return (_BLANKS.sub("\n\n", text) if "\n\n\n" in text else text).strip()
