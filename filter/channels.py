"""The text channels and statistics a model reads from a ParsedMessage. Pure; no scikit-learn.

Each channel maps a sequence of ParsedMessage to a list of strings (for a
vectoriser) or to a float32 matrix (statistics). ``features.build_pipeline``
puts them into a scikit-learn Pipeline for training, and ``scoring`` calls
the very same functions when it scores with a model's exported weights, so
the two can never read a message differently. This module imports only
numpy, which keeps scoring free of scikit-learn's import time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from filter.message import ParsedMessage

# A pickled pipeline calls the functions of this module by name, so changing what they compute
# silently changes a shipped model. Bump this whenever a change here alters the features of an
# already fitted pipeline; ModelBundle refuses a bundle built with another version.
FEATURE_VERSION = 2

OWN_CHARS = 3000
FORWARDED_CHARS = 3000
CHAR_NGRAM_CHARS = 400
NEWS_MARKER_CHARS = 1500

STRUCTURE_FEATURES = (
    "links_log",
    "own_links_log",
    "link_only",
    "own_length_log",
    "forwarded_length_log",
    "quoted_length_log",
    "own_share",
    "question_marks",
    "bulk_headers",
    "list_id",
    "attachments_log",
    "to_count_log",
    "many_recipients",
    "is_reply",
    "is_forward",
    "has_forwarded",
    "robot_sender",
    "news_markers_own",
    "news_markers_forwarded",
    "lang_en",
    "lang_fr",
    "lang_unknown",
)

_URL = re.compile(r"https?://\S+", re.I)

# Local parts of addresses that robots send from: what such a sender sends is bulk, whatever it contains.
_ROBOT_SENDER = re.compile(
    r"(?:^|[._-])(?:no-?reply|do-?not-?reply|newsletters?|news|rss\w*|digest|alerts?|notifications?|mailer"
    r"|bounces?|announce\w*|marketing|updates?|webmaster|feedback|deals|offers|info|list\w*|owner-\S+)"
    r"(?:$|[._-])",
    re.I,
)
# What a press article looks like when pasted into a mail: wire services, copyright lines, bylines.
# Counted with str.count on lower-cased text, which is far cheaper than one regex alternation.
_NEWS_WORDS = (
    "copyright",
    "all rights reserved",
    "associated press",
    "reuters",
    "dow jones",
    "newswire",
    "staff writer",
    "(c) 19",
    "(c) 20",
    "©",
    "tous droits réservés",
    "le monde",
    "les echos",
    "le figaro",
)
# The owner's own request, visible in the quoted part of a reply: "could you send me that piece?".
# Matched on lower-cased text: a third of the time of re.I for this many alternatives.
# An article or link sent because the recipient asked for it is not a share (LABELS.md).
_ASKED_FOR = re.compile(
    r"(?:could|can|would|will) you (?:please )?(?:send|forward|share|dig up|find)"
    r"|(?:send|forward|pass) (?:me|it|that|this|over|along)\b"
    r"|do you (?:still )?have (?:the|that|a) (?:link|article|piece|paper|report|study)"
    r"|(?:what|where) (?:was|is) (?:the|that) (?:link|article|piece)"
    r"|(?:envoie|envoyer|transf[eé]rer?|transmets|partager?)[- ](?:moi|le|la|les|me)\b"
    r"|(?:m'|me l'|me les |me )(?:envoyer|envoies|transmettre|transf[eé]rer|faire suivre|renvoyer)"
    r"|(?:tu as|vous avez|t'as) (?:le|ce|cet|l') ?(?:lien|article|papier|[ée]tude)",
)
QUOTED_CHARS = 1500
_BYLINE = re.compile(r"\b(?:By|BY|Par|PAR) [A-Z][A-Za-z]+ [A-Z][A-Za-z]+")

# Stands for an empty channel: a token of its own, so that "nothing forwarded" can be learnt
# and a vectoriser never meets a training set without any vocabulary.
EMPTY_MARK = "emptychannel"


# ---------------------------------------------------------------------------
# Channels: each maps a sequence of ParsedMessage to a list of strings


def subject_text(messages: Sequence[ParsedMessage]) -> list[str]:
    return [m.subject or EMPTY_MARK for m in messages]


def own_text(messages: Sequence[ParsedMessage], limit: int = OWN_CHARS) -> list[str]:
    """The sender's own words; each link becomes the token "httplink" (its domain has a channel of its own)."""
    return [_URL.sub(" httplink ", m.own_text[:limit]) or EMPTY_MARK for m in messages]


def forwarded_text(messages: Sequence[ParsedMessage], limit: int = FORWARDED_CHARS) -> list[str]:
    return [_URL.sub(" httplink ", m.forwarded_text[:limit]) or EMPTY_MARK for m in messages]


def char_text(messages: Sequence[ParsedMessage], limit: int = CHAR_NGRAM_CHARS) -> list[str]:
    """Subject and the start of the own text, for character n-grams (robust to spelling and inflection)."""
    return [f"{m.subject}\n{_URL.sub(' ', m.own_text[: limit * 2])}"[:limit] for m in messages]


def link_domains(messages: Sequence[ParsedMessage]) -> list[str]:
    """One token per linked domain ("dom_nytimes_com"), so news sites can be learnt as such."""
    return [" ".join(_domain_token(url) for url in m.links[:20]) or EMPTY_MARK for m in messages]


def _domain_token(url: str) -> str:
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return "dom_invalid"
    if host.startswith("www."):
        host = host[4:]
    return "dom_" + re.sub(r"[^a-z0-9]+", "_", host)[:60]


def structure(messages: Sequence[ParsedMessage]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Text statistics, each scaled to about [0, 1] so they sit beside tf-idf columns without a scaler."""
    rows = np.zeros((len(messages), len(STRUCTURE_FEATURES)), dtype=np.float32)
    for i, m in enumerate(messages):
        own = m.own_text[:OWN_CHARS]
        without_links, own_links = _URL.subn(" ", own)
        own_words = len(without_links.split())
        own_len = len(m.own_text)
        forwarded_len = len(m.forwarded_text)
        rows[i] = (
            _log_scale(len(m.links), 4),
            _log_scale(own_links, 3),
            float(bool(m.links) and own_words < 12),
            _log_scale(own_len, 10),
            _log_scale(forwarded_len, 10),
            _log_scale(len(m.quoted_text), 10),
            own_len / (own_len + forwarded_len) if own_len + forwarded_len else 0.0,
            min(own.count("?"), 5) / 5,
            float(m.bulk.is_bulk),
            float(bool(m.bulk.list_id)),
            _log_scale(len(m.attachments), 3),
            _log_scale(m.to_count, 5),
            float(m.to_count >= 10),
            float(m.is_reply),
            float(m.is_forward),
            float(bool(m.forwarded_text)),
            float(bool(_ROBOT_SENDER.search(m.sender.partition("@")[0]))),
            _news_markers(own),
            _news_markers(m.forwarded_text),
            float(m.language == "en"),
            float(m.language == "fr"),
            float(m.language == "unknown"),
        )
    return rows


def asked_for(messages: Sequence[ParsedMessage]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """1 when the quoted part of a reply shows the recipient asking for what is now sent."""
    column = [bool(m.quoted_text) and bool(_ASKED_FOR.search(m.quoted_text[:QUOTED_CHARS].lower())) for m in messages]
    return np.asarray(column, dtype=np.float32).reshape(-1, 1)


def asked_for_names(transformer: Any, names: Any) -> list[str]:
    return ["quoted_asks_for_it"]


def _news_markers(text: str) -> float:
    """How much the start of a text looks like a pasted press article: 0, 0.25, ... 1 (four markers or more)."""
    head = text[:NEWS_MARKER_CHARS]
    lower = head.lower()
    found = sum(lower.count(word) for word in _NEWS_WORDS) + len(_BYLINE.findall(head))
    return min(found, 4) / 4


def _log_scale(value: float, scale: float) -> float:
    return min(math.log1p(max(value, 0)) / scale, 1.5)
