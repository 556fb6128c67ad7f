"""The exported scorer: the pipeline's probabilities without scikit-learn, and refused when altered."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from tiny_model import message, save_tiny_bundle

from filter.errors import ModelError
from filter.message import ParsedMessage, parse_message
from filter.model import SCORER_FILE, ModelBundle, default_model_path
from filter.scoring import (
    LinearScorer,
    ScorerFormatError,
    TextChannel,
    _count_terms,
    _Keys,
    char_wb_ngrams,
    export,
    strip_accents,
    word_ngrams,
)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"

# Texts that stress the tokenisers: accents, capitals, one-letter words, runs of
# whitespace, punctuation, digits, an emoji, a NUL, CJK, empty and blank text.
AWKWARD = [
    "Thought you'd like this: https://example.org/a?b=1 — a GREAT read!",
    "Pourriez-vous m'aider ? Je cherche un emploi à Montréal, ça serait génial.",
    "a b c  d\te\n\nf   I x",
    "",
    "   \n\t ",
    "naïve café résumé Ångström œuvre ﬁnance",
    "emoji 🎉 party 🎉🎉 and \x00 nul",
    "数据 科学 的 文章",
    "it's 2024-06-01; 3.5% of $1,000,000",
    "The the THE tHe",
]


def _random_text(rng: random.Random) -> str:
    alphabet = "abcdeéèàçôïü ABC xyz  \n\t.,'-?!0123😀ſ"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))


def _messages() -> list[ParsedMessage]:
    files = sorted(DATA.glob("*.eml")) + sorted((DATA / "hard-cases").glob("*.eml"))
    parsed = [parse_message(f.read_bytes()) for f in files]
    parsed += [message(text, text[:20]) for text in AWKWARD]
    parsed.append(ParsedMessage())
    return parsed


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def test_exported_scorer_gives_the_pipelines_probabilities(tiny: Path) -> None:
    bundle = ModelBundle.load(tiny)
    assert bundle.scorer is not None
    messages = _messages()
    fast = bundle.scorer.score(messages)
    slow = bundle.pipeline.predict_proba(messages)
    np.testing.assert_allclose(fast, slow, atol=1e-6)


def test_shipped_model_scores_the_same_through_its_scorer() -> None:
    bundle = ModelBundle.load(default_model_path())
    assert bundle.scorer is not None, "models/default should carry scorer.npz"
    messages = _messages() + [
        parse_message(f.read_bytes()) for f in sorted((REPO / "models/written").glob("*/*.eml"))[:150]
    ]
    np.testing.assert_allclose(bundle.scorer.score(messages), bundle.pipeline.predict_proba(messages), atol=1e-6)


@pytest.mark.parametrize("ngram_range", [(2, 3), (3, 4), (3, 5), (4, 5)])
def test_char_wb_ngrams_are_scikit_learns(ngram_range: tuple[int, int]) -> None:
    analyse = TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, lowercase=False).build_analyzer()
    rng = random.Random(7)
    for text in AWKWARD + [_random_text(rng) for _ in range(300)]:
        assert sorted(char_wb_ngrams(text, ngram_range)) == sorted(analyse(text)), repr(text)


@pytest.mark.parametrize("ngram_range", [(1, 1), (1, 2), (1, 3), (2, 2)])
def test_word_ngrams_and_accents_are_scikit_learns(ngram_range: tuple[int, int]) -> None:
    vectorizer = TfidfVectorizer(ngram_range=ngram_range, strip_accents="unicode")
    analyse = vectorizer.build_analyzer()
    rng = random.Random(8)
    for text in AWKWARD + [_random_text(rng) for _ in range(300)]:
        tokens = vectorizer.build_tokenizer()(strip_accents(text.lower()))
        assert word_ngrams(tokens, ngram_range) == analyse(text), repr(text)


@pytest.mark.parametrize(("analyzer", "ngram_range"), [("char_wb", (3, 4)), ("char_wb", (2, 5)), ("word", (1, 2))])
def test_keyed_counting_matches_counting_term_strings(analyzer: str, ngram_range: tuple[int, int]) -> None:
    rng = random.Random(9)
    corpus = AWKWARD + [_random_text(rng) for _ in range(400)]
    # NUL separates documents when they are keyed, so (like an exported scorer) the vocabulary has none.
    fitted = [text for text in corpus[::2] if "\x00" not in text]
    vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=ngram_range, strip_accents="unicode").fit(fitted)
    channel = TextChannel(
        name="test",
        function="own_text",
        kwargs={},
        analyzer=analyzer,
        ngram_range=ngram_range,
        lowercase=True,
        strip_accents=True,
        token_pattern=vectorizer.token_pattern,
        sublinear_tf=True,
        vocabulary=dict(vectorizer.vocabulary_),
        idf=np.asarray(vectorizer.idf_),
    )
    keys = _Keys.build(channel)
    assert keys is not None
    got = keys.count(channel.documents(corpus))
    want = _count_terms(channel, corpus)
    assert sorted(zip(*(a.tolist() for a in got), strict=True)) == sorted(zip(*(a.tolist() for a in want), strict=True))


def test_scoring_does_not_import_scikit_learn() -> None:
    code = (
        "import sys\n"
        "from filter.cli import main\n"
        f"main(['classify', '--json', {str(DATA / 'newsletter_en.eml')!r}])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy', 'joblib'))\n"
        "print(json_loaded := ' '.join(loaded) or 'none', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stderr.strip() == "none"
    assert json.loads(result.stdout)["labels"] == []


def test_altered_scorer_file_is_refused(tiny: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny, copy)
    data = bytearray((copy / SCORER_FILE).read_bytes())
    data[-10] ^= 0xFF
    (copy / SCORER_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the card"):
        ModelBundle.load(copy)


def test_missing_scorer_file_is_refused(tiny: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny, copy)
    (copy / SCORER_FILE).unlink()
    with pytest.raises(ModelError, match="missing"):
        ModelBundle.load(copy)


def test_bundle_without_a_scorer_scores_through_the_pipeline(tiny: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny, copy)
    card = json.loads((copy / "card.json").read_text())
    del card["scorer"]
    (copy / "card.json").write_text(json.dumps(card))
    (copy / SCORER_FILE).unlink()
    bundle = ModelBundle.load(copy)
    assert bundle.scorer is None
    assert bundle.score([message("Could you introduce me to your HR team?", "a favour")])[0].values


def test_scorer_naming_an_unknown_function_is_refused(tiny: Path, tmp_path: Path) -> None:
    with np.load(tiny / SCORER_FILE, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    spec = json.loads(arrays["spec"].tobytes())
    spec["dense"][0]["function"] = "os.system"
    arrays["spec"] = np.frombuffer(json.dumps(spec).encode(), dtype=np.uint8)
    np.savez(tmp_path / "scorer.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(ScorerFormatError, match="unknown function"):
        LinearScorer.load(tmp_path / "scorer.npz")


def test_a_pickle_inside_the_scorer_file_is_not_loaded(tmp_path: Path) -> None:
    np.savez(tmp_path / "scorer.npz", spec=np.array([{"format": 1}], dtype=object))
    with pytest.raises(ScorerFormatError):
        LinearScorer.load(tmp_path / "scorer.npz")


def test_a_scorer_file_that_is_no_archive_is_refused_without_advice_to_unpickle(tmp_path: Path) -> None:
    (tmp_path / "scorer.npz").write_text("hello, not numpy")
    with pytest.raises(ScorerFormatError, match="not an .npz archive of arrays") as info:
        LinearScorer.load(tmp_path / "scorer.npz")
    assert "pickle" not in str(info.value)


def test_a_pipeline_of_another_shape_is_not_exported() -> None:
    with pytest.raises((ScorerFormatError, KeyError, AttributeError)):
        export(object(), ("article_share", "favour_request"))
