"""METEOR similarity between completions to different prompts: a reward-hacking signal.

The paper (SuperHF, section on reward hacking) scores METEOR (nltk `meteor_score`, WordNet
synonyms) between completions to *different* prompts, averaged over both orderings and many
random pairs, pairing only prompts of the same dataset. A policy that says the same thing
whatever it is asked (mode collapse, a typical result of over-optimising a reward model)
scores high. The interval resamples prompts, not pairs: every pair shares its two answers
with many other pairs, so pairs are not independent.

WordNet comes from Debian's `wordnet-base` + `wordnet-sense-index` (WordNet 3.0 under
/usr/share/wordnet), copied by `scripts/install_wordnet.py` (run by `make setup`) into
`$SUPERHF_CACHE/nltk_data/corpora/wordnet` with the `lexnames` file nltk needs and Debian
omits. Without it METEOR still runs (exact and stem matches only) and says so loudly:
`MeteorResult.uses_wordnet` is False.

Speed (measured 2026-11-26 on the project's 2-core development CPU, shared with other jobs):
500 pairs x 2 orderings of 100-word HH-RLHF texts take 2.3 s with WordNet (1.0 s once the
per-word caches are warm; 0.3 s without WordNet), plus about 4 s to load WordNet once per
process. nltk's defaults uncached take about 4.7 s for the same 1,000 orderings. The
synonym and stem look-ups are memoised per word, which gives identical scores (checked:
largest difference 0.0 over 100 orderings) since both are pure functions of the word.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from nltk.stem.porter import PorterStemmer
from nltk.tokenize import TreebankWordTokenizer
from nltk.translate.meteor_score import single_meteor_score

from superhf.files import temporary_beside
from superhf.models import cache_dir

logger = logging.getLogger(__name__)

WORDNET_SOURCE = Path("/usr/share/wordnet")
"""Where Debian's `wordnet-base` puts WordNet 3.0."""

WORDNET_FILES = (
    "cntlist.rev",
    "index.sense",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
)
"""The files nltk's WordNetCorpusReader opens, besides `lexnames`."""

# WordNet 3.0's lexicographer files, lexnames(5WN): number, name, syntactic category
# (1 noun, 2 verb, 3 adjective, 4 adverb). Debian ships the man page but not the file.
LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3),
    ("adj.pert", 3),
    ("adv.all", 4),
    ("noun.Tops", 1),
    ("noun.act", 1),
    ("noun.animal", 1),
    ("noun.artifact", 1),
    ("noun.attribute", 1),
    ("noun.body", 1),
    ("noun.cognition", 1),
    ("noun.communication", 1),
    ("noun.event", 1),
    ("noun.feeling", 1),
    ("noun.food", 1),
    ("noun.group", 1),
    ("noun.location", 1),
    ("noun.motive", 1),
    ("noun.object", 1),
    ("noun.person", 1),
    ("noun.phenomenon", 1),
    ("noun.plant", 1),
    ("noun.possession", 1),
    ("noun.process", 1),
    ("noun.quantity", 1),
    ("noun.relation", 1),
    ("noun.shape", 1),
    ("noun.state", 1),
    ("noun.substance", 1),
    ("noun.time", 1),
    ("verb.body", 2),
    ("verb.change", 2),
    ("verb.cognition", 2),
    ("verb.communication", 2),
    ("verb.competition", 2),
    ("verb.consumption", 2),
    ("verb.contact", 2),
    ("verb.creation", 2),
    ("verb.emotion", 2),
    ("verb.motion", 2),
    ("verb.perception", 2),
    ("verb.possession", 2),
    ("verb.social", 2),
    ("verb.stative", 2),
    ("verb.weather", 2),
    ("adj.ppl", 3),
)

FIX_HINT = "run `make setup` or `python scripts/install_wordnet.py` (installs Debian's wordnet)"

USE_WORDNET = True
"""Module switch: False forces the no-synonym fallback (tests, or to compare with and without)."""


def nltk_data_dir() -> Path:
    """`$SUPERHF_CACHE/nltk_data` (default ~/.cache/superhf/nltk_data)."""
    return cache_dir() / "nltk_data"


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{cat}\n" for i, (name, cat) in enumerate(LEXNAMES))


def install_wordnet(source: Path = WORDNET_SOURCE, root: Path | None = None) -> Path:
    """Copy WordNet from `source` into `root/corpora/wordnet` and write `lexnames`.

    nltk does not follow symlinks into a corpus folder reliably, so the files are copied.
    Idempotent: files already there with the same size are kept. Returns the wordnet folder.
    """
    root = nltk_data_dir() if root is None else root
    missing = [f for f in WORDNET_FILES if not (source / f).is_file()]
    if missing:
        raise FileNotFoundError(f"WordNet files missing in {source}: {', '.join(missing)}")
    target = root / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    for name in WORDNET_FILES:
        src, dst = source / name, target / name
        if dst.is_symlink():
            dst.unlink()
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            tmp = temporary_beside(dst)
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
    (target / "lexnames").write_text(lexnames_text(), encoding="ascii")
    return target


@lru_cache(maxsize=1)
def _load_wordnet() -> Any | None:
    """nltk's WordNet reader over our copy, or None (it then stays None for the process)."""
    import nltk

    root = str(nltk_data_dir())
    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)
    try:
        from nltk.corpus import wordnet

        with warnings.catch_warnings():  # "multilingual functions not available": expected
            warnings.simplefilter("ignore")
            wordnet.ensure_loaded()
            wordnet.synsets("dog")
        return wordnet
    except (LookupError, OSError, AssertionError, ValueError):
        return None


def wordnet_available() -> bool:
    """True when nltk can read WordNet (and the module switch `USE_WORDNET` is on)."""
    return USE_WORDNET and _load_wordnet() is not None


class _NoSynonyms:
    """Stands in for WordNet: no word has synsets, so only exact and stem matches count."""

    def synsets(self, word: str) -> list[Any]:
        return []


class _Lemma:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def name(self) -> str:
        return self._name


class _Synset:
    __slots__ = ("_lemmas",)

    def __init__(self, lemmas: tuple[_Lemma, ...]) -> None:
        self._lemmas = lemmas

    def lemmas(self) -> tuple[_Lemma, ...]:
        return self._lemmas


class _CachedWordNet:
    """WordNet's `synsets(word)` memoised: nltk's matcher asks for the same words again and
    again; the lemma names are all it reads from the synsets."""

    def __init__(self, wordnet: Any) -> None:
        self._wordnet = wordnet

    @lru_cache(maxsize=200_000)  # noqa: B019 - one instance per process
    def synsets(self, word: str) -> tuple[_Synset, ...]:
        return tuple(
            _Synset(tuple(_Lemma(lemma.name()) for lemma in synset.lemmas()))
            for synset in self._wordnet.synsets(word)
        )


class _CachedStemmer(PorterStemmer):
    """nltk's default Porter stemmer, memoised per word."""

    @lru_cache(maxsize=200_000)  # noqa: B019 - one instance per process
    def stem(self, word: str, to_lowercase: bool = True) -> str:
        return super().stem(word, to_lowercase)


_STEMMER = _CachedStemmer()
_TOKENIZER = TreebankWordTokenizer()
_warned = False


@lru_cache(maxsize=1)
def _cached_wordnet() -> _CachedWordNet | None:
    wordnet = _load_wordnet()
    return None if wordnet is None else _CachedWordNet(wordnet)


def _synonym_source() -> Any:
    global _warned
    if USE_WORDNET:
        cached = _cached_wordnet()
        if cached is not None:
            return cached
    if not _warned:
        _warned = True
        message = (
            "METEOR runs WITHOUT WordNet synonyms (exact and stem matches only); scores are "
            f"lower than the paper's. WordNet was looked for in {nltk_data_dir()}: {FIX_HINT}."
        )
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return _NoSynonyms()


@lru_cache(maxsize=100_000)
def _tokens(text: str) -> tuple[str, ...]:
    return tuple(_TOKENIZER.tokenize(text))


def meteor(reference: str, hypothesis: str) -> float:
    """nltk's single-reference METEOR of `hypothesis` against `reference` (one ordering).

    Texts are tokenised with nltk's Treebank tokenizer (punkt data is not needed) and
    lower-cased by nltk; the parameters are nltk's defaults (alpha 0.9, beta 3, gamma 0.5).
    """
    return single_meteor_score(
        _tokens(reference), _tokens(hypothesis), stemmer=_STEMMER, wordnet=_synonym_source()
    )


@dataclass
class MeteorResult:
    mean: float
    """Mean METEOR over the sampled pairs (each pair averaged over both orderings)."""
    ci_low: float
    """Percentile bootstrap confidence interval of the mean, resampling prompts (see
    `meteor_similarity`)."""
    ci_high: float
    num_pairs: int
    uses_wordnet: bool
    """False: scored without synonym matching (a warning said so)."""

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def source_dataset(source: Any) -> Any:
    """The dataset a prompt's `source` value names: the part before the first "/", else the
    whole value ("donotanswer/discrimination" -> "donotanswer"; None stays None).

    The paper paired answers to prompts of the same dataset; the part after the "/" (the
    embedded prompts' category or file) is finer than that.
    """
    return source.split("/", 1)[0] if isinstance(source, str) else source


def _cross_prompt_pairs(
    groups: Sequence[int],
    num_pairs: int,
    rng: random.Random,
    sources: Sequence[Hashable] | None = None,
) -> list[tuple[int, int]]:
    """Up to `num_pairs` distinct unordered pairs (i < j) of completions to different prompts
    of the same source (any source when `sources` is None)."""
    n = len(groups)

    def eligible(i: int, j: int) -> bool:
        return groups[i] != groups[j] and (sources is None or sources[i] == sources[j])

    if n * (n - 1) // 2 > 200_000:
        # Many completions: rejection-sample (most random pairs are eligible).
        chosen: set[tuple[int, int]] = set()
        for _ in range(100 * num_pairs):
            i, j = rng.randrange(n), rng.randrange(n)
            if eligible(i, j):
                chosen.add((min(i, j), max(i, j)))
                if len(chosen) == num_pairs:
                    return sorted(chosen)
    every = [(i, j) for i in range(n) for j in range(i + 1, n) if eligible(i, j)]
    return every if len(every) <= num_pairs else rng.sample(every, num_pairs)


def _prompt_bootstrap(
    scores: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    prompt_sources: Sequence[Hashable],
    num_bootstrap: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Bootstrap means of the pair scores, resampling PROMPTS, not pairs.

    All pairs share a few answers, so they are not independent: resampling pairs gives too
    narrow an interval. Each draw takes, within each source, as many prompts as it has, with
    replacement; a pair (u, v) then counts count(u) * count(v) times (a prompt never pairs
    with its own copy). Draws where no sampled pair survives are NaN.
    """
    num_prompts = len(prompt_sources)
    counts = np.zeros((num_bootstrap, num_prompts))
    for source in dict.fromkeys(prompt_sources):
        members = np.array([u for u in range(num_prompts) if prompt_sources[u] == source])
        drawn = rng.integers(0, len(members), size=(num_bootstrap, len(members)))
        np.add.at(counts, (np.arange(num_bootstrap)[:, None], members[drawn]), 1)
    weights = counts[:, first] * counts[:, second]
    totals = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, weights @ scores / totals, np.nan)


def meteor_similarity(
    completions: Sequence[str],
    prompt_ids: Sequence[Hashable] | None = None,
    num_pairs: int = 500,
    seed: int = 0,
    num_bootstrap: int = 1000,
    confidence: float = 0.95,
    sources: Sequence[Hashable] | None = None,
) -> MeteorResult:
    """Mean METEOR between completions to different prompts, with a bootstrap interval.

    `prompt_ids[i]` names the prompt completion i answers (None: each answers its own).
    `sources[i]` names the dataset of that prompt (see `source_dataset`); pairs are only made
    within a source, as the paper did (None: one source). Samples `num_pairs` distinct
    eligible pairs (all of them if there are fewer), scores both orderings and averages
    them; the mean is over all sampled pairs. The interval resamples prompts within each
    source (see `_prompt_bootstrap`). With no eligible pair the mean is NaN and `num_pairs` 0.
    """
    if prompt_ids is not None and len(prompt_ids) != len(completions):
        raise ValueError(
            f"prompt_ids has {len(prompt_ids)} entries for {len(completions)} completions."
        )
    if sources is not None and len(sources) != len(completions):
        raise ValueError(f"sources has {len(sources)} entries for {len(completions)} completions.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    ids = list(range(len(completions))) if prompt_ids is None else list(prompt_ids)
    index: dict[Hashable, int] = {}
    groups = [index.setdefault(p, len(index)) for p in ids]
    prompt_sources: list[Hashable] = [None] * len(index)
    if sources is not None:
        for group, source in zip(groups, sources, strict=True):
            prompt_sources[group] = source
    uses_wordnet = wordnet_available()
    rng = random.Random(seed)
    pairs = _cross_prompt_pairs(groups, num_pairs, rng, sources) if len(index) >= 2 else []
    if not pairs:
        nan = math.nan
        return MeteorResult(nan, nan, nan, 0, uses_wordnet)
    scores = np.array(
        [
            (meteor(completions[i], completions[j]) + meteor(completions[j], completions[i])) / 2
            for i, j in pairs
        ]
    )
    mean = float(scores.mean())
    if len(scores) == 1 or num_bootstrap <= 0:
        return MeteorResult(mean, mean, mean, len(scores), uses_wordnet)
    first = np.array([groups[i] for i, _ in pairs])
    second = np.array([groups[j] for _, j in pairs])
    means = _prompt_bootstrap(
        scores, first, second, prompt_sources, num_bootstrap, np.random.default_rng(seed)
    )
    means = means[~np.isnan(means)]
    if not means.size:
        return MeteorResult(mean, mean, mean, len(scores), uses_wordnet)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return MeteorResult(mean, float(low), float(high), len(scores), uses_wordnet)
