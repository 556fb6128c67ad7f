"""Scoring from a model's exported weights: numpy only, no unpickling, no scikit-learn.

A fitted pipeline (``features.build_pipeline``) is linear once its features
are computed: tf-idf columns of a few text channels, some statistics, then
one weight vector per label and a Platt sigmoid. ``export`` writes exactly
that, as plain arrays in an ``.npz`` file: per text channel the vocabulary,
the idf weights and how its text is cut into terms; the weights; the
sigmoid. ``LinearScorer`` reads it back with ``allow_pickle=False`` and
scores with the same channel functions (``filter.channels``) and the same
tokenisation rules as scikit-learn's ``TfidfVectorizer`` (lower-casing,
accent stripping, the token pattern, word n-grams, ``char_wb`` n-grams,
sublinear tf, idf, l2 norm), so its probabilities equal the pipeline's to
float rounding; a test holds the two together.

Why it exists: importing scikit-learn and SciPy takes about 1.5 s, and
building sparse matrices through the general-purpose vectoriser is most of
the per-message cost. Counting terms with ``collections.Counter`` and one
vectorised product per batch is about twice as fast, and a data-only file
is safer to load than a pickle.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from filter import channels
from filter.channels import FEATURE_VERSION
from filter.message import ParsedMessage

SCORER_FORMAT = 1

# The channel functions an exported scorer may name; anything else is refused on load.
TEXT_FUNCTIONS: dict[str, Callable[..., list[str]]] = {
    "subject_text": channels.subject_text,
    "own_text": channels.own_text,
    "forwarded_text": channels.forwarded_text,
    "char_text": channels.char_text,
    "link_domains": channels.link_domains,
}
DENSE_FUNCTIONS: dict[str, Callable[[Sequence[ParsedMessage]], np.ndarray[Any, Any]]] = {
    "structure": channels.structure,
    "asked_for": channels.asked_for,
    "favour_cues": channels.favour_cues,
}
_TERM_SEPARATOR = "\x00"


class ScorerFormatError(ValueError):
    """An exported scorer file that cannot be read or does not describe a model this code can score."""


@dataclass(frozen=True)
class TextChannel:
    """One tf-idf channel: how its text is cut into terms, its vocabulary and idf weights."""

    name: str
    function: str
    kwargs: dict[str, Any]
    analyzer: str  # "word" or "char_wb"
    ngram_range: tuple[int, int]
    lowercase: bool
    strip_accents: bool
    token_pattern: str
    sublinear_tf: bool
    vocabulary: dict[str, int]
    idf: np.ndarray[Any, np.dtype[np.float64]]

    def settings(self) -> dict[str, Any]:
        """How the channel cuts text into terms, as the scorer file's spec stores it (no vocabulary, no idf)."""
        return {
            "name": self.name,
            "function": self.function,
            "kwargs": dict(self.kwargs),
            "analyzer": self.analyzer,
            "ngram_range": list(self.ngram_range),
            "lowercase": self.lowercase,
            "strip_accents": self.strip_accents,
            "token_pattern": self.token_pattern,
            "sublinear_tf": self.sublinear_tf,
        }

    def normalise(self, text: str) -> str:
        """Lower-casing and accent stripping, in scikit-learn's order."""
        if self.lowercase:
            text = text.lower()
        return strip_accents(text) if self.strip_accents else text

    def documents(self, texts: Sequence[str]) -> list[str] | list[list[str]]:
        """Texts made ready for ``_Keys``: words joined by single spaces and padded (char_wb), or tokens (word)."""
        out: list[Any] = []
        for text in map(self.normalise, texts):
            if self.analyzer == "char_wb":
                words = text.split()
                out.append(" " + " ".join(words) + " " if words else "")
            else:
                out.append(_token_re(self.token_pattern).findall(text))
        return out

    def terms(self, text: str) -> list[str]:
        """The terms of one document, as the fitted vectoriser would produce them (before the vocabulary)."""
        text = self.normalise(text)
        if self.analyzer == "char_wb":
            return char_wb_ngrams(text, self.ngram_range)
        return word_ngrams(_token_re(self.token_pattern).findall(text), self.ngram_range)


def _count_terms(channel: TextChannel, texts: Sequence[str]) -> tuple[np.ndarray[Any, Any], ...]:
    """(row, column, count) of vocabulary terms, one term string at a time: the reference for ``_Keys``."""
    rows: list[int] = []
    columns: list[int] = []
    counts: list[int] = []
    for row, text in enumerate(texts):
        for term, count in Counter(channel.terms(text)).items():
            column = channel.vocabulary.get(term)
            if column is not None:
                rows.append(row)
                columns.append(column)
                counts.append(count)
    return (np.asarray(rows, dtype=np.int64), np.asarray(columns, dtype=np.int64), np.asarray(counts, dtype=np.int64))


def strip_accents(text: str) -> str:
    """Decompose (NFKD) and drop combining marks; ASCII text is returned as it is."""
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def word_ngrams(tokens: list[str], ngram_range: tuple[int, int]) -> list[str]:
    """Tokens, then space-joined runs of n tokens for each n of the range."""
    low, high = ngram_range
    out = list(tokens) if low == 1 else []
    for n in range(max(low, 2), min(high, len(tokens)) + 1):
        out.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return out


def char_wb_ngrams(text: str, ngram_range: tuple[int, int]) -> list[str]:
    """Character n-grams inside words, each word padded with one space on both sides.

    Works on the words joined by single spaces: an n-gram of the joined text
    belongs to one padded word exactly when no space is inside it (a space
    may only open or close it). A word shorter than the smallest n gives its
    padded self once, and nothing for larger n.
    """
    words = text.split()
    if not words:
        return []
    low, high = ngram_range
    joined = " " + " ".join(words) + " "
    size = len(joined)
    out: list[str] = []
    for n in range(low, high + 1):
        if n == 2:
            out.extend(joined[i : i + 2] for i in range(size - 1))
        elif n == 3:
            out.extend(joined[i : i + 3] for i in range(size - 2) if joined[i + 1] != " ")
        else:
            out.extend(gram for i in range(size - n + 1) if " " not in (gram := joined[i : i + n])[1:-1])
    short = [f" {w} " for w in words if len(w) + 2 < low]
    out.extend(short)
    return out


class _Keys:
    """A channel's vocabulary as integer keys, so a whole batch is looked up with one sorted search.

    Each term is a sequence of units (characters for ``char_wb``, tokens
    for ``word``). Every unit that occurs in the vocabulary gets a number
    from 1; a term's key is its units' numbers read as digits in base
    ``units + 1``, one sorted key array per term length. A unit outside the
    vocabulary is digit 0, so a term holding it matches nothing, which is
    right: it cannot be in the vocabulary. Nor can a ``char_wb`` n-gram with
    a space inside, or one that runs across two documents joined by a NUL,
    so the text is keyed whole and no n-gram is ever built as a string.
    """

    def __init__(
        self,
        chars: bool,
        units: Sequence[str],
        keys: dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
    ) -> None:
        self.chars = chars
        self.units = {unit: number for number, unit in enumerate(units, start=1)}
        self.base = len(self.units) + 1
        self.keys = keys
        if chars:
            top = max((ord(unit) for unit in self.units), default=0)
            self.table = np.zeros(top + 2, dtype=np.int64)
            for unit, number in self.units.items():
                self.table[ord(unit)] = number

    @classmethod
    def build(cls, channel: TextChannel) -> _Keys | None:
        """The keys of a channel's vocabulary; None when they would not fit in 62 bits."""
        chars = channel.analyzer == "char_wb"
        if chars and channel.ngram_range[0] < 2:
            return None  # single characters count spaces in a way the joined text does not
        terms = sorted(channel.vocabulary, key=channel.vocabulary.__getitem__)
        parts = [list(term) if chars else term.split(" ") for term in terms]
        numbers: dict[str, int] = {}
        for units in parts:
            for unit in units:
                numbers.setdefault(unit, len(numbers) + 1)
        base = len(numbers) + 1
        lengths = sorted({len(units) for units in parts})
        if not parts or float(base) ** max(lengths) >= 2.0**62 or (chars and "\x00" in numbers):
            return None  # keys would overflow, or NUL (which separates documents) is a unit
        keys = {}
        for length in lengths:
            columns = np.asarray([k for k, units in enumerate(parts) if len(units) == length], dtype=np.int64)
            key = np.zeros(len(columns), dtype=np.int64)
            for position in range(length):
                key = key * base + np.asarray([numbers[parts[k][position]] for k in columns], dtype=np.int64)
            order = np.argsort(key, kind="stable")
            keys[length] = (key[order], columns[order])
        return cls(chars, list(numbers), keys)

    def arrays(self, prefix: str) -> dict[str, np.ndarray[Any, Any]]:
        """The keys as named arrays for the scorer file."""
        out = {f"{prefix}units": _encode_terms(list(self.units))}
        for length, (key, columns) in self.keys.items():
            out[f"{prefix}keys{length}"] = key
            out[f"{prefix}columns{length}"] = columns
        return out

    @classmethod
    def from_arrays(cls, chars: bool, prefix: str, arrays: Mapping[str, np.ndarray[Any, Any]]) -> _Keys:
        units = _decode_terms(arrays[f"{prefix}units"])
        keys = {}
        for name in arrays:
            if name.startswith(f"{prefix}keys"):
                length = int(name[len(prefix) + 4 :])
                key = np.asarray(arrays[name], dtype=np.int64)
                columns = np.asarray(arrays[f"{prefix}columns{length}"], dtype=np.int64)
                if key.shape != columns.shape or np.any(key[1:] < key[:-1]):
                    raise ScorerFormatError(f"{prefix}keys{length}: not sorted, or not one column per key")
                keys[length] = (key, columns)
        return cls(chars, units, keys)

    def digits(
        self, documents: Sequence[Sequence[str]] | Sequence[str]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Unit numbers of all documents in a row, and the document each unit belongs to."""
        if self.chars:
            text = "\x00".join(documents)  # type: ignore[arg-type]
            points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
            digits = self.table[np.minimum(points, len(self.table) - 1)]
            sizes = np.fromiter((len(d) + 1 for d in documents), dtype=np.int64, count=len(documents))
        else:
            get = self.units.get
            total = sum(len(d) for d in documents)
            digits = np.fromiter(
                map(get, (unit for d in documents for unit in d), repeat(0)), dtype=np.int64, count=total
            )
            sizes = np.fromiter((len(d) for d in documents), dtype=np.int64, count=len(documents))
        owner = np.repeat(np.arange(len(documents), dtype=np.int64), sizes)[: len(digits)]
        return digits, owner

    def count(self, documents: Sequence[Sequence[str]] | Sequence[str]) -> tuple[np.ndarray[Any, Any], ...]:
        """(row, column, count) of every vocabulary term found in the documents."""
        digits, owner = self.digits(documents)
        rows: list[np.ndarray[Any, Any]] = []
        columns: list[np.ndarray[Any, Any]] = []
        for length, (keys, key_columns) in self.keys.items():
            span = len(digits) - length + 1
            if span <= 0:
                continue
            key = digits[:span].copy()
            for position in range(1, length):
                key = key * self.base + digits[position : position + span]
            where = np.searchsorted(keys, key)
            where[where == len(keys)] = 0
            found = keys[where] == key
            if not self.chars and length > 1:
                found &= owner[:span] == owner[length - 1 : length - 1 + span]
            rows.append(owner[:span][found])
            columns.append(key_columns[where[found]])
        if not rows:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        row = np.concatenate(rows)
        column = np.concatenate(columns)
        width = int(column.max(initial=0)) + 1
        pairs, counts = np.unique(row * width + column, return_counts=True)
        return pairs // width, pairs % width, counts


_TOKEN_RES: dict[str, re.Pattern[str]] = {}


def _token_re(pattern: str) -> re.Pattern[str]:
    compiled = _TOKEN_RES.get(pattern)
    if compiled is None:
        compiled = _TOKEN_RES[pattern] = re.compile(pattern)
    return compiled


class LinearScorer:
    """Scores messages from exported weights: ``score(messages)`` -> array (n, labels) of probabilities."""

    def __init__(
        self,
        labels: Sequence[str],
        text_channels: Sequence[TextChannel],
        dense: Sequence[tuple[str, str, int]],
        coef: np.ndarray[Any, np.dtype[np.float64]],
        intercept: np.ndarray[Any, np.dtype[np.float64]],
        scale: np.ndarray[Any, np.dtype[np.float64]],
        offset: np.ndarray[Any, np.dtype[np.float64]],
        order: Sequence[str],
        keyed: Mapping[str, _Keys] | None = None,
    ) -> None:
        self.labels = tuple(labels)
        self.text_channels = tuple(text_channels)
        self.dense = tuple(dense)
        self.coef = coef
        self.intercept = intercept
        self.scale = scale
        self.offset = offset
        self.order = tuple(order)
        # Each channel's first column in ``coef``, in the pipeline's column order.
        sizes = {c.name: len(c.vocabulary) for c in text_channels} | {name: n for name, _, n in dense}
        self.start: dict[str, int] = {}
        column = 0
        for name in self.order:
            self.start[name] = column
            column += sizes[name]
        if column != coef.shape[1]:
            raise ScorerFormatError(f"the channels have {column} columns but the weights have {coef.shape[1]}")
        self.keyed: dict[str, _Keys] = dict(keyed or {})

    def decision(self, messages: Sequence[ParsedMessage]) -> np.ndarray[Any, np.dtype[np.float64]]:
        """The linear part: features times weights plus intercept, shape (n, labels)."""
        n = len(messages)
        out = np.tile(self.intercept, (n, 1))
        for channel in self.text_channels:
            texts = TEXT_FUNCTIONS[channel.function](messages, **channel.kwargs)
            start = self.start[channel.name]
            keys = self.keyed.get(channel.name)
            if keys is not None:
                row_index, index, counted = keys.count(channel.documents(texts))
            else:
                row_index, index, counted = _count_terms(channel, texts)
            if not len(row_index):
                continue
            weight = counted.astype(np.float64)
            if channel.sublinear_tf:
                weight = np.log(weight) + 1.0
            weight *= channel.idf[index]
            norms = np.sqrt(np.bincount(row_index, weights=weight * weight, minlength=n))
            weight /= norms[row_index]
            contribution = self.coef[:, start + index] * weight
            for j in range(len(self.labels)):
                out[:, j] += np.bincount(row_index, weights=contribution[j], minlength=n)
        for name, function, width in self.dense:
            block = np.asarray(DENSE_FUNCTIONS[function](messages), dtype=np.float64)
            if block.shape != (n, width):
                raise ScorerFormatError(f"channel {name} gave shape {block.shape}, expected ({n}, {width})")
            start = self.start[name]
            out += block @ self.coef[:, start : start + width].T
        return out

    def score(self, messages: Sequence[ParsedMessage]) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Calibrated probabilities, shape (n, labels)."""
        z = self.decision(messages) * self.scale + self.offset
        proba: np.ndarray[Any, np.dtype[np.float64]] = 1.0 / (1.0 + np.exp(-z))
        return proba

    # -- the file ------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path, content: bytes | None = None) -> LinearScorer:
        """Read an exported scorer (from ``content`` when given, ``path`` naming it); raises ScorerFormatError."""
        try:
            with np.load(path if content is None else io.BytesIO(content), allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError) as exc:
            # numpy's own text for a file that is no .npz suggests unpickling it, which is never wanted here
            why = "not an .npz archive of arrays" if "pickle" in str(exc) else str(exc)
            raise ScorerFormatError(f"{path}: not a readable scorer file ({why})") from exc
        try:
            spec = json.loads(arrays["spec"].tobytes().decode("utf-8"))
            return cls._from_arrays(spec, arrays)
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise ScorerFormatError(f"{path}: not a scorer this ployfilter can read ({exc})") from exc

    @classmethod
    def _from_arrays(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray[Any, Any]]) -> LinearScorer:
        if spec.get("format") != SCORER_FORMAT:
            raise ScorerFormatError(f"scorer format {spec.get('format')}, expected {SCORER_FORMAT}")
        if spec.get("features") != FEATURE_VERSION:
            raise ScorerFormatError(f"feature code version {spec.get('features')}, this code has {FEATURE_VERSION}")
        text_channels = []
        for i, c in enumerate(spec["text"]):
            if c["function"] not in TEXT_FUNCTIONS or c["analyzer"] not in ("word", "char_wb"):
                raise ScorerFormatError(f"channel {c['name']}: unknown function or analyzer")
            vocabulary = {term: k for k, term in enumerate(_decode_terms(arrays[f"terms{i}"]))}
            idf = np.asarray(arrays[f"idf{i}"], dtype=np.float64)
            if len(idf) != len(vocabulary):
                raise ScorerFormatError(f"channel {c['name']}: {len(vocabulary)} terms but {len(idf)} idf weights")
            text_channels.append(
                TextChannel(
                    name=c["name"],
                    function=c["function"],
                    kwargs=dict(c["kwargs"]),
                    analyzer=c["analyzer"],
                    ngram_range=(int(c["ngram_range"][0]), int(c["ngram_range"][1])),
                    lowercase=bool(c["lowercase"]),
                    strip_accents=bool(c["strip_accents"]),
                    token_pattern=str(c["token_pattern"]),
                    sublinear_tf=bool(c["sublinear_tf"]),
                    vocabulary=vocabulary,
                    idf=idf,
                )
            )
        keyed = {
            c.name: _Keys.from_arrays(c.analyzer == "char_wb", f"text{i}_", arrays)
            for i, c in enumerate(text_channels)
            if f"text{i}_units" in arrays
        }
        dense = []
        for d in spec["dense"]:
            if d["function"] not in DENSE_FUNCTIONS:
                raise ScorerFormatError(f"channel {d['name']}: unknown function {d['function']!r}")
            dense.append((str(d["name"]), str(d["function"]), int(d["width"])))
        return cls(
            labels=spec["labels"],
            text_channels=text_channels,
            dense=dense,
            coef=np.asarray(arrays["coef"], dtype=np.float64),
            intercept=np.asarray(arrays["intercept"], dtype=np.float64),
            scale=np.asarray(arrays["scale"], dtype=np.float64),
            offset=np.asarray(arrays["offset"], dtype=np.float64),
            order=spec["order"],
            keyed=keyed,
        )


def export(pipeline: Any, labels: Sequence[str]) -> bytes:
    """The ``.npz`` bytes of a fitted ``features.build_pipeline`` pipeline's scorer.

    Raises ScorerFormatError for a pipeline of another shape (a channel this
    module cannot reproduce): such a model is then scored through the
    pipeline itself.
    """
    union = pipeline.named_steps["features"]
    classifier = pipeline.named_steps["classify"]
    spec: dict[str, Any] = {
        "format": SCORER_FORMAT,
        "features": FEATURE_VERSION,
        "labels": list(labels),
        "text": [],
        "dense": [],
        "order": [],
    }
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for name, step in union.transformer_list:
        spec["order"].append(name)
        steps = getattr(step, "steps", None)
        if steps is None:
            function_name = str(getattr(getattr(step, "func", None), "__name__", ""))
            if function_name not in DENSE_FUNCTIONS:
                raise ScorerFormatError(f"channel {name}: {function_name!r} is not a known statistics function")
            width = int(DENSE_FUNCTIONS[function_name]([]).shape[1])
            spec["dense"].append({"name": name, "function": function_name, "width": width})
            continue
        (_, source), (_, vectorizer) = steps
        function_name = str(getattr(getattr(source, "func", None), "__name__", ""))
        if function_name not in TEXT_FUNCTIONS:
            raise ScorerFormatError(f"channel {name}: {function_name!r} is not a known text function")
        _check_vectorizer(name, vectorizer)
        index = len(spec["text"])
        vocabulary = vectorizer.vocabulary_
        channel = TextChannel(
            name=name,
            function=function_name,
            kwargs=dict(source.kw_args or {}),
            analyzer=vectorizer.analyzer,
            ngram_range=tuple(vectorizer.ngram_range),
            lowercase=bool(vectorizer.lowercase),
            strip_accents=vectorizer.strip_accents == "unicode",
            token_pattern=vectorizer.token_pattern,
            sublinear_tf=bool(vectorizer.sublinear_tf),
            vocabulary=dict(vocabulary),
            idf=np.asarray(vectorizer.idf_, dtype=np.float64),
        )
        spec["text"].append(channel.settings())
        arrays[f"terms{index}"] = _encode_terms(sorted(vocabulary, key=vocabulary.__getitem__))
        arrays[f"idf{index}"] = channel.idf
        keys = _Keys.build(channel)
        if keys is not None:
            arrays.update(keys.arrays(f"text{index}_"))
    arrays["coef"] = np.asarray(classifier.coef_, dtype=np.float64)
    arrays["intercept"] = np.asarray(classifier.intercept_, dtype=np.float64)
    arrays["scale"] = np.asarray(classifier.scale_, dtype=np.float64)
    arrays["offset"] = np.asarray(classifier.offset_, dtype=np.float64)
    arrays["spec"] = np.frombuffer(json.dumps(spec, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def _encode_terms(terms: Sequence[str]) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Terms as one NUL-separated UTF-8 byte array: a plain array, loaded without pickle."""
    if any(_TERM_SEPARATOR in term for term in terms):
        raise ScorerFormatError("a term holds the separator character")
    return np.frombuffer(_TERM_SEPARATOR.join(terms).encode("utf-8"), dtype=np.uint8)


def _decode_terms(array: np.ndarray[Any, Any]) -> list[str]:
    text = array.tobytes().decode("utf-8")
    return text.split(_TERM_SEPARATOR) if text else []


def _check_vectorizer(name: str, vectorizer: Any) -> None:
    """Refuse a vectoriser whose settings this module does not reproduce."""
    settings = {
        "analyzer": vectorizer.analyzer in ("word", "char_wb"),
        "strip_accents": vectorizer.strip_accents in (None, "unicode"),
        "norm": vectorizer.norm == "l2",
        "use_idf": bool(vectorizer.use_idf),
        "binary": not vectorizer.binary,
        "stop_words": vectorizer.stop_words is None,
        "tokenizer": vectorizer.tokenizer is None,
        "preprocessor": vectorizer.preprocessor is None,
        "input": vectorizer.input == "content",
        "ngram_range": vectorizer.analyzer == "word" or vectorizer.ngram_range[0] >= 2,
    }
    bad = [key for key, ok in settings.items() if not ok]
    if bad:
        raise ScorerFormatError(f"channel {name}: vectoriser setting {', '.join(bad)} cannot be exported")
