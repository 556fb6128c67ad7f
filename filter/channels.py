"""The text channels and statistics a model reads from a ParsedMessage. Pure; no scikit-learn.

Each channel maps a sequence of ParsedMessage to a list of strings (for a
vectoriser) or to a float32 matrix (statistics). ``features.build_pipeline``
puts them into a scikit-learn Pipeline for training, and ``scoring`` calls
the very same functions when it scores with a model's exported weights, so
the two can never read a message differently. This module imports only
numpy, which keeps scoring free of scikit-learn's import time.
"""

from __future__ import annotations

import itertools
import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from filter.message import ParsedMessage

# A pickled pipeline calls the functions of this module by name, so changing what they compute
# silently changes a shipped model. Bump this whenever a change here alters the features of an
# already fitted pipeline; ModelBundle refuses a bundle built with another version.
FEATURE_VERSION = 7

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

# What r"https?://\S+" matches with re.I ("ſ" is an "s" to re.I), spelled out case by case: re.I would
# stop the search from skipping ahead to the next "h", and makes it twice as slow.
_URL = re.compile(r"[hH][tT][tT][pP][sS\u017f]?://\S+")

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
_ASCII_NEWS_WORDS = tuple(word for word in _NEWS_WORDS if word.isascii())
# The owner's own request, visible in the quoted part of a reply: "could you send me that piece?".
# Matched on lower-cased text: a third of the time of re.I for this many alternatives.
# An article or link sent because the recipient asked for it is not a share (LABELS.md).
# One pattern per phrase, each opening with literal text so that the search skips ahead to where
# that text occurs: one alternation of them all is tried at nearly every letter, five times slower.
_SEND_WHAT = r"(?:me|it|that|this|over|along)\b"
_ASKED_WHAT = r"(?:moi|le|la|les|me)\b"
_THE_ITEM = r"(?:encore |toujours )?(?:le|la|ce|cet|l') ?(?:lien|article|papier|[ée]tude|r[ée]f[ée]rence)"
_ASKED_FOR = tuple(
    re.compile(pattern)
    for pattern in (
        r"c(?:ould|an) you (?:please )?(?:send|forward|share|dig up|find)",
        r"w(?:ould|ill) you (?:please )?(?:send|forward|share|dig up|find)",
        r"send " + _SEND_WHAT,
        r"forward " + _SEND_WHAT,
        r"pass " + _SEND_WHAT,
        r"do you (?:still )?have (?:the|that|a) (?:link|article|piece|paper|report|study)",
        r"wh(?:at|ere) (?:was|is) (?:the|that) (?:link|article|piece)",
        r"envo(?:ie|yer)[- ]" + _ASKED_WHAT,
        r"trans(?:f[eé]rer?|mets)[- ]" + _ASKED_WHAT,
        r"partager?[- ]" + _ASKED_WHAT,
        r"m(?:'|e l'|e les |e )(?:envoyer|envoies|transmettre|transf[eé]rer|faire suivre|renvoyer)",
        r"t(?:u |')as " + _THE_ITEM,
        r"vous avez " + _THE_ITEM,
        r"tu aurais " + _THE_ITEM,
        r"vous auriez " + _THE_ITEM,
    )
)
# The sender saying, in their own words, that the recipient asked for it: "as promised", "comme
# tu me l'as demandé". Searched in the start of the own text. Each phrase opens with its first word,
# literally, for the search to skip ahead to it; the lookbehind then checks that a word starts there.
_SAYS_ASKED = tuple(
    re.compile(rf"{first}(?<=\b{first}){rest}")
    for first, rest in (
        ("as ", r"(?:(?:you )?(?:requested|asked|promised)|per your request)"),
        ("you asked ", r"(?:me )?for"),
        ("here", r"(?:'s| is| are) the (?:link|article|piece|paper|report|study) you (?:wanted|asked|mentioned)"),
        ("comme ", r"(?:promis|convenu|demand[ée]e?s?|(?:tu|vous) (?:me )?l'(?:as|avez|avais|aviez) demand[ée])"),
        ("que ", r"(?:tu|vous) m'(?:as|avez|avais|aviez) demand[ée]"),
        ("l", r"(?:e|a|es) (?:lien|article|[ée]tude|r[ée]f[ée]rence)s? demand[ée]e?s?"),
    )
)
QUOTED_CHARS = 1500
OWN_ASKED_CHARS = 600
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
    return [_replace_links(m.own_text[:limit], " httplink ") or EMPTY_MARK for m in messages]


def forwarded_text(messages: Sequence[ParsedMessage], limit: int = FORWARDED_CHARS) -> list[str]:
    return [_replace_links(m.forwarded_text[:limit], " httplink ") or EMPTY_MARK for m in messages]


def _replace_links(text: str, replacement: str) -> str:
    """``_URL.sub``, without a search in the many texts that hold no link (every link holds "://")."""
    return _URL.sub(replacement, text) if "://" in text else text


def char_text(messages: Sequence[ParsedMessage], limit: int = CHAR_NGRAM_CHARS) -> list[str]:
    """Subject and the start of the own text, for character n-grams (robust to spelling and inflection).

    Only a placeholder for English mail. The n-grams carry French inflection and accents
    (French shares lose 0.10 F1 without them), but on English mail they
    mostly learned the style of the training set's written mail: without
    them, English shares gain 0.03 to 0.05 F1 in grouped cross-validation.
    """
    return [
        EMPTY_MARK if m.language == "en" else f"{m.subject}\n{_replace_links(m.own_text[: limit * 2], ' ')}"[:limit]
        for m in messages
    ]


def link_domains(messages: Sequence[ParsedMessage]) -> list[str]:
    """One token per linked domain ("dom_nytimes_com"), so news sites can be learnt as such."""
    return [" ".join(map(_domain_token, m.links[:20])) or EMPTY_MARK for m in messages]


# The host part of an ASCII "http(s)://host..." link holding none of the characters urlsplit treats
# specially there (brackets, tab, CR, LF): for such a link, its hostname is read directly, without
# the general parser, which costs ten times as much.
_PLAIN_HOST = re.compile(r"[hH][tT][tT][pP][sS]?://([^/?#\[\]\t\r\n]*)(?:[/?#]|\Z)")
_NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


def _domain_token(url: str) -> str:
    plain = _PLAIN_HOST.match(url) if url.isascii() else None
    if plain:
        # as urlsplit(url).hostname: after any "user:password@", before any ":port"
        host = plain.group(1).rpartition("@")[2].partition(":")[0].lower()
    else:
        try:
            host = (urlsplit(url).hostname or "").lower()
        except ValueError:
            return "dom_invalid"
    if host.startswith("www."):
        host = host[4:]
    return "dom_" + _NOT_ALPHANUMERIC.sub("_", host)[:60]


def structure(messages: Sequence[ParsedMessage]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Text statistics, each scaled to about [0, 1] so they sit beside tf-idf columns without a scaler."""
    log1p = math.log1p
    rows: list[tuple[float, ...]] = []
    for m in messages:
        own = m.own_text[:OWN_CHARS]
        links = m.links
        own_links = 0
        link_only = 0.0
        if links:
            without_links, own_links = _URL.subn(" ", own) if "://" in own else (own, 0)
            # fewer than 12 words, without splitting all of a long text
            link_only = float(len(without_links.split(maxsplit=11)) < 12)
        elif "://" in own:
            own_links = _URL.subn(" ", own)[1]
        own_len = len(m.own_text)
        forwarded = m.forwarded_text
        forwarded_len = len(forwarded)
        to_count = m.to_count
        language = m.language
        # counts as min(log1p(count) / scale, 1.5), written out: a call per column costs more than the log
        rows.append(
            (
                min(log1p(len(links)) / 4, 1.5),
                min(log1p(own_links) / 3, 1.5),
                link_only,
                min(log1p(own_len) / 10, 1.5),
                min(log1p(forwarded_len) / 10, 1.5),
                min(log1p(len(m.quoted_text)) / 10, 1.5),
                own_len / (own_len + forwarded_len) if own_len + forwarded_len else 0.0,
                min(own.count("?"), 5) / 5,
                float(m.bulk.is_bulk),
                float(bool(m.bulk.list_id)),
                min(log1p(len(m.attachments)) / 3, 1.5),
                min(log1p(to_count) / 5, 1.5),
                float(to_count >= 10),
                float(m.is_reply),
                float(m.is_forward),
                float(bool(forwarded)),
                float(bool(_ROBOT_SENDER.search(m.sender.partition("@")[0]))),
                _news_markers(own) if own else 0.0,
                _news_markers(forwarded) if forwarded else 0.0,
                float(language == "en"),
                float(language == "fr"),
                float(language == "unknown"),
            )
        )
    return np.array(rows, dtype=np.float32).reshape(len(messages), len(STRUCTURE_FEATURES))


def asked_for(messages: Sequence[ParsedMessage]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """1 when the message shows the recipient asked for what is now sent.

    Either the quoted part of a reply holds the recipient's request, or the
    sender says so in their own first lines ("as promised", "comme tu me
    l'as demandé"). A requested article is not a share (LABELS.md).
    """
    column = [
        (bool(m.quoted_text) and _asks_for(m.quoted_text[:QUOTED_CHARS].lower()))
        or _says_asked(m.own_text[:OWN_ASKED_CHARS].lower())
        for m in messages
    ]
    return np.asarray(column, dtype=np.float32).reshape(-1, 1)


def _asks_for(text: str) -> bool:
    return any(pattern.search(text) for pattern in _ASKED_FOR)


def _says_asked(text: str) -> bool:
    return any(pattern.search(text) for pattern in _SAYS_ASKED)


def asked_for_names(transformer: Any, names: Any) -> list[str]:
    return ["quoted_asks_for_it"]


def _news_markers(text: str) -> float:
    """How much the start of a text looks like a pasted press article: 0, 0.25, ... 1 (four markers or more)."""
    head = text[:NEWS_MARKER_CHARS]
    lower = head.lower()
    # isascii() is free (CPython keeps the flag), and ASCII text holds none of the non-ASCII words
    found = sum(map(lower.count, _ASCII_NEWS_WORDS if lower.isascii() else _NEWS_WORDS))
    # every byline holds one of these, and searching for them is far cheaper than running the regex
    if "By " in head or "BY " in head or "Par " in head or "PAR " in head:
        found += len(_BYLINE.findall(head))
    return min(found, 4) / 4


# ---------------------------------------------------------------------------
# Favour cues: what a favour is about and how it is asked, pooled over many rare words

# What a favour is about (LABELS.md): a job, a CV, an introduction, advice, a cause to back, and the
# relative or friend it is for. Pooled into one count, so that a word the training mail holds twice
# ("pledge", "parrainer") weighs as much as "resume" does; the word channels learn each word apart
# and need far more mail for it. Matched as substrings of lower-cased text.
_FAVOUR_TOPICS_EN = (
    "resume", "résumé", "my cv", " cv ", "cv.", "job search", "looking for a job", "looking for work",
    "new job", "a job", "position", "opening", "opportunit", "career", "internship", "interview",
    "laid off", "out of work", "unemployed", "leads", "in mind", "reference", "recommend", "introduc",
    "in touch with", "contact", "pick your brain", "advice", "mentor", "sponsor", "pledge", "donat",
    "fundrais", "charity", "my son", "my daughter", "my nephew", "my niece", "friend of mine", "my friend",
    "network",
)  # fmt: skip
_FAVOUR_TOPICS_FR = (
    " cv ", "cv.", "emploi", "poste", "stage", "candidature", "entretien", "chômage", "carrière",
    "recommandation", "présenter", "mettre en relation", "contact", "conseil", "réseau", "parrain",
    "association", "cagnotte", "mon fils", "ma fille", "mon neveu", "ma nièce", "un ami", "une amie",
)  # fmt: skip
# How a sender asks: a question, a polite request, an open door ("if you hear of anything").
_ASKS_EN = (
    "could you", "can you", "would you", "will you", "would it be possible", "if you could", "if you hear",
    "if you know", "if you have", "let me know", "appreciate", "grateful", "any chance", "wondering if",
    "please", "help", "?",
)  # fmt: skip
_ASKS_FR = (
    "pourrais-tu", "pourriez-vous", "peux-tu", "pouvez-vous", "est-ce que", "auriez-vous", "aurais-tu",
    "merci de", "j'aimerais", "je voudrais", "serait-il possible", "si tu", "si vous", "aide", "?",
)  # fmt: skip
# Each language's words; mail whose language is not known is searched for both.
_CUE_WORDS = {
    "en": (_FAVOUR_TOPICS_EN, _ASKS_EN),
    "fr": (_FAVOUR_TOPICS_FR, _ASKS_FR),
}
_ALL_CUE_WORDS = (
    tuple(dict.fromkeys(_FAVOUR_TOPICS_EN + _FAVOUR_TOPICS_FR)),
    tuple(dict.fromkeys(_ASKS_EN + _ASKS_FR)),
)
_SENTENCE_END = re.compile(r"[.!?\n]")
FAVOUR_CUE_FEATURES = ("favour_topics", "favour_topics_forwarded", "asks", "asks_about_topic", "own_cv", "recruiting")
# The sender's own CV, named in their words or attached, is a request for job help (LABELS.md), unless
# it answers an advertised post or comes from a recruiter (the recipient's job), or the owner asked
# for it in the quoted part (an existing arrangement). Enron's archive names attachments in the body.
_OWN_CV = ("resume attached", "attached resume")
# "my resume", "my updated resume", "mon dernier CV": the possessive and up to two words before the CV
_MY_CV = re.compile(r"\b(?:my|mon)\s+(?:[\w'-]+\s+){0,2}?(?:r[eé]sum[eé]|cv|curriculum)\b")
_CV_FILE = re.compile(r"r[eé]sum[eé]|(?<![a-z])cv(?![a-z])|curriculum", re.I)
# A file name in the text: "JDoeResume.doc", or Enron's attachment marker "<<Resume Kent 1024.doc>>".
# One list of extensions for the pattern and for the cheap test before it, so the two cannot drift.
_CV_EXTENSIONS = (".doc", ".docx", ".pdf", ".rtf", ".txt")
_CV_EXTENSION = "(?:" + "|".join(re.escape(extension) for extension in _CV_EXTENSIONS) + ")"
_CV_FILE_IN_TEXT = re.compile(
    rf"(?:r[eé]sum[eé]|cv)[^\s/]*{_CV_EXTENSION}\b"
    rf"|<<[^<>\n]*(?:r[eé]sum[eé]|(?<![a-z])cv(?![a-z]))[^<>\n]*{_CV_EXTENSION}>>"
)
# A recruiter at work: a role to fill, a client, a bonus for referrals. Their asks ("point anyone
# from your network our way") are their business, not a favour (LABELS.md). Both languages, always.
_RECRUITING = (
    "recruiter", "recruiting", "talent acquisition", "talent team", "headhunter", "head hunter",
    "we're hiring", "we are hiring", "referral bonus", "search firm", "executive search", "my client",
    "our client", "chasseur de têtes", "chasseuse de têtes", "cabinet de recrutement", "nous recrutons",
    "chargé de recrutement", "chargée de recrutement", "notre client",
)  # fmt: skip
_FORMAL_APPLICATION = (
    "application for",
    "apply for",
    "applying for the",
    "req-",
    "ref:",
    "réf",
    "reference number",
    "job posting",
    "vacancy",
    "candidate",
    "postuler",
    "offre d'emploi",
    "votre annonce",
    "your posting",
    "your advert",
)


def favour_cues(messages: Sequence[ParsedMessage]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Pooled favour cues, each in [0, 1]; ``FAVOUR_CUE_FEATURES`` names the columns.

    Topic words in the own text and in the forwarded part, asks in the own
    text, and the sentences of the own text that hold both: "if you hear of
    any openings, let me know" is a favour, where "please send the
    position report" is not. Last, whether the sender sends their own CV
    outside a formal application (``_sends_own_cv``), and whether they
    write as a recruiter does.
    """
    rows: list[tuple[float, ...]] = []
    for m in messages:
        own = m.own_text[:OWN_CHARS].lower()
        forwarded = m.forwarded_text[:FORWARDED_CHARS].lower()
        topic_words, ask_words = _CUE_WORDS.get(m.language, _ALL_CUE_WORDS)
        topic_counts = list(map(own.count, topic_words))
        ask_counts = list(map(own.count, ask_words))
        topics, asks = sum(topic_counts), sum(ask_counts)
        both = 0
        if topics and asks:
            ends = [end.start() for end in _SENTENCE_END.finditer(own)]
            both = len(
                _sentences_with(own, itertools.compress(topic_words, topic_counts), ends)
                & _sentences_with(own, itertools.compress(ask_words, ask_counts), ends)
            )
        rows.append(
            (
                min(topics, 4) / 4,
                min(sum(map(forwarded.count, topic_words)), 4) / 4 if forwarded else 0.0,
                min(asks, 4) / 4,
                min(both, 2) / 2,
                float(_sends_own_cv(m, own)),
                min(sum(map(own.count, _RECRUITING)), 2) / 2,
            )
        )
    return np.array(rows, dtype=np.float32).reshape(len(messages), len(FAVOUR_CUE_FEATURES))


def _sends_own_cv(m: ParsedMessage, own: str) -> bool:
    """The sender's own CV, named or attached, outside a formal application and not asked for by the owner."""
    names_cv = (
        any(word in own for word in _OWN_CV)
        or (("resum" in own or "résum" in own or "cv" in own or "curriculum" in own) and _MY_CV.search(own) is not None)
        or any(_CV_FILE.search(a.filename) for a in m.attachments)
        or (any(extension in own for extension in _CV_EXTENSIONS) and _CV_FILE_IN_TEXT.search(own) is not None)
    )
    if not names_cv:
        return False
    subject = m.subject.lower()
    if any(word in own or word in subject for word in _FORMAL_APPLICATION):
        return False
    return not (m.quoted_text and _asks_for(m.quoted_text[:QUOTED_CHARS].lower()))


def _sentences_with(text: str, words: Iterable[str], ends: Sequence[int]) -> set[int]:
    """The sentences (numbered by the sentence end that closes them) in which any of ``words`` starts."""
    found: set[int] = set()
    for word in words:
        at = text.find(word)
        while at != -1:
            found.add(bisect_left(ends, at))
            at = text.find(word, at + 1)
    return found


def favour_cue_names(transformer: Any, names: Any) -> list[str]:
    return list(FAVOUR_CUE_FEATURES)
