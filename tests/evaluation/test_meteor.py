"""METEOR similarity: nltk's documented value, pair sampling, the interval, WordNet or not."""

from __future__ import annotations

import gzip
import itertools
import math
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from superhf.evaluation import meteor as m

needs_wordnet = pytest.mark.skipif(
    not m.wordnet_available(),
    reason=f"WordNet is not installed for nltk here; {m.FIX_HINT}",
)

ANSWERS = [
    "Paris is the capital of France and sits on the river Seine.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "To boil an egg, cover it with water, bring it to a boil and wait nine minutes.",
    "The French Revolution began in 1789 with the storming of the Bastille.",
    "A prime number has exactly two divisors: one and itself.",
    "Regular exercise lowers blood pressure and improves sleep quality.",
    "Python lists are mutable sequences; tuples cannot be changed after creation.",
    "Mount Everest, on the border of Nepal and China, is 8,849 metres high.",
    "Interest compounds when earnings are reinvested to generate further earnings.",
    "Whales are mammals: they breathe air and nurse their young with milk.",
    "Copper conducts electricity well, which is why wires are made from it.",
    "Shakespeare wrote Hamlet around 1600; it is his longest play.",
]


def test_nltk_docstring_example_gives_its_documented_value():
    # nltk.translate.meteor_score.single_meteor_score's docstring: reference1, hypothesis1.
    reference = (
        "It is a guide to action that ensures that the military will forever heed Party commands"
    )
    hypothesis = (
        "It is a guide to action which ensures that the military always obeys the commands "
        "of the party"
    )
    if not m.wordnet_available():
        pytest.skip(f"the documented value uses WordNet; {m.FIX_HINT}")
    assert round(m.meteor(reference, hypothesis), 4) == 0.6944


def test_identical_answers_score_near_one_and_unrelated_ones_low():
    text = "The quick brown fox jumps over the lazy dog near the river bank today."
    assert m.meteor(text, text) > 0.95
    assert m.meteor(ANSWERS[0], ANSWERS[4]) < 0.2
    assert m.meteor("this is a cat", "non matching hypothesis") == 0.0


def test_same_answer_everywhere_is_high_varied_answers_low():
    collapsed = m.meteor_similarity([ANSWERS[2]] * 10, num_pairs=50)
    varied = m.meteor_similarity(ANSWERS, num_pairs=50)
    assert collapsed.mean > 0.95
    assert varied.mean < 0.2
    assert collapsed.num_pairs == 45  # C(10, 2) < 50: every pair
    assert varied.num_pairs == 50  # C(12, 2) = 66 > 50: a sample


def _mixed_texts(num: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(ANSWERS, 3)) for _ in range(num)]


def test_interval_contains_mean_and_narrows_with_more_pairs():
    texts = _mixed_texts(60)
    few = m.meteor_similarity(texts, num_pairs=20, seed=1)
    many = m.meteor_similarity(texts, num_pairs=800, seed=1)
    for result in (few, many):
        assert result.ci_low < result.mean < result.ci_high
    assert few.num_pairs == 20 and many.num_pairs == 800
    assert many.ci_high - many.ci_low < 0.6 * (few.ci_high - few.ci_low)
    again = m.meteor_similarity(texts, num_pairs=20, seed=1)
    assert again == few  # seeded: the same pairs and the same interval


def test_pairs_are_never_between_completions_of_the_same_prompt():
    # Each prompt's completions are identical; different prompts' share no word. A
    # same-prompt pair would score ~1 and lift the mean above 0.
    prompt_ids = [p for p in range(6) for _ in range(3)]
    completions = [f"alpha{p} beta{p} gamma{p} delta{p}" for p in prompt_ids]
    result = m.meteor_similarity(completions, prompt_ids=prompt_ids, num_pairs=10_000)
    assert result.num_pairs == 18 * 17 // 2 - 6 * 3  # all cross-prompt pairs
    assert result.mean == 0.0

    groups = [i % 5 for i in range(700)]  # large: the rejection-sampling path
    pairs = m._cross_prompt_pairs(groups, 300, random.Random(0))
    assert len(pairs) == len(set(pairs)) == 300
    assert all(i < j and groups[i] != groups[j] for i, j in pairs)


def test_fewer_than_two_prompts_gives_nan_not_a_crash():
    for completions, ids in (
        (["only one"], None),
        (["a b", "c d", "e f"], ["p", "p", "p"]),
        ([], None),
    ):
        result = m.meteor_similarity(completions, prompt_ids=ids)
        assert result.num_pairs == 0 and math.isnan(result.mean)
    assert set(result.to_dict()) == {"mean", "ci_low", "ci_high", "num_pairs", "uses_wordnet"}
    with pytest.raises(ValueError, match="prompt_ids"):
        m.meteor_similarity(["a", "b"], prompt_ids=[0])


@needs_wordnet
def test_synonyms_count_with_wordnet(monkeypatch):
    # nltk matches synonyms after stemming the unmatched words (its behaviour, kept as the
    # paper used it), so the pair must be words Porter leaves alone: car/auto, kid/child.
    reference = "she drove her car to work and picked up the kid"
    hypothesis = "she drove her auto to work and picked up the child"
    with_wordnet = m.meteor(reference, hypothesis)
    monkeypatch.setattr(m, "USE_WORDNET", False)
    monkeypatch.setattr(m, "_warned", True)
    without = m.meteor(reference, hypothesis)
    assert with_wordnet > without + 0.05
    assert with_wordnet > 0.95


def test_fallback_without_wordnet_warns_once_and_still_scores(monkeypatch):
    monkeypatch.setattr(m, "USE_WORDNET", False)
    monkeypatch.setattr(m, "_warned", False)
    assert not m.wordnet_available()
    with pytest.warns(RuntimeWarning, match="WITHOUT WordNet synonyms.*make setup"):
        result = m.meteor_similarity(ANSWERS[:4] + ANSWERS[:4], num_pairs=10)
    assert result.uses_wordnet is False
    assert 0.0 <= result.ci_low <= result.mean <= result.ci_high <= 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        assert m.meteor("same words here", "same words here") > 0.95


@pytest.mark.skipif(
    not (m.WORDNET_SOURCE / "data.noun").is_file(), reason="Debian's wordnet-base is not installed"
)
def test_install_wordnet_copies_files_and_writes_a_correct_lexnames(tmp_path):
    target = m.install_wordnet(root=tmp_path)
    assert target == tmp_path / "corpora" / "wordnet"
    for name in (*m.WORDNET_FILES, "lexnames"):
        assert (target / name).is_file() and not (target / name).is_symlink()
    lines = (target / "lexnames").read_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[44] == "44\tadj.ppl\t3"
    # Each synset's lexicographer file number must name a file of its own category.
    category = {"n": 1, "v": 2, "a": 3, "s": 3, "r": 4}
    for part in ("noun", "verb", "adj", "adv"):
        with open(target / f"data.{part}", encoding="latin-1") as handle:
            for line in handle:
                if line.startswith("  "):
                    continue  # licence header
                _, lex_filenum, ss_type = line.split(" ", 3)[:3]
                assert m.LEXNAMES[int(lex_filenum)][1] == category[ss_type], line[:40]
    # And against the man page, where Debian installed it.
    page = Path("/usr/share/man/man5/lexnames.5WN.gz")
    if page.is_file():
        with gzip.open(page, "rt") as handle:
            text = handle.read()
        table = re.findall(r"^(\d\d)\t(\S+)\s*\t", text, flags=re.M)
        assert [(int(n), name) for n, name in table] == [
            (i, name) for i, (name, _) in enumerate(m.LEXNAMES)
        ]
    # Idempotent: a second run keeps the files.
    before = (target / "data.noun").stat().st_mtime_ns
    m.install_wordnet(root=tmp_path)
    assert (target / "data.noun").stat().st_mtime_ns == before


@pytest.mark.skipif(
    not (m.WORDNET_SOURCE / "data.noun").is_file(), reason="Debian's wordnet-base is not installed"
)
def test_nltk_reads_an_installed_copy(tmp_path, monkeypatch):
    import nltk

    m.install_wordnet(root=tmp_path)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path), *nltk.data.path])  # nltk insists
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    with warnings.catch_warnings():  # "multilingual functions are not available": expected
        warnings.simplefilter("ignore")
        reader = WordNetCorpusReader(str(tmp_path / "corpora" / "wordnet"), None)
    assert reader.synset("dog.n.01").lexname() == "noun.animal"
    assert "automobile" in {lemma.name() for s in reader.synsets("car") for lemma in s.lemmas()}


def _load_script():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "install_wordnet.py"
    spec = importlib.util.spec_from_file_location("install_wordnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not (m.WORDNET_SOURCE / "data.noun").is_file(), reason="Debian's wordnet-base is not installed"
)
def test_setup_script_installs_into_the_cache_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERHF_CACHE", str(tmp_path))
    script = _load_script()
    assert script.main() == 0 and script.main() == 0
    assert (tmp_path / "nltk_data" / "corpora" / "wordnet" / "lexnames").is_file()


def test_setup_script_without_apt_warns_and_succeeds(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SUPERHF_CACHE", str(tmp_path))
    script = _load_script()
    monkeypatch.setattr(script, "WORDNET_SOURCE", tmp_path / "no-wordnet")
    monkeypatch.setattr(shutil, "which", lambda name: None)  # scripts/apt_install.py's
    assert script.main() == 0
    assert "apt-get is not available" in capsys.readouterr().err
    assert not (tmp_path / "nltk_data").exists()


# --- the interval resamples answers; pairs stay within a source ----------------------------


def test_interval_resamples_answers_so_it_is_wider_than_a_pairs_bootstrap():
    # 16 answers, half of them the same text: every pair between two copies scores ~1, the
    # rest ~0. All 120 pairs share the 16 answers, so how many copies the sample holds drives
    # the mean; a bootstrap that treats the 120 pairs as independent misses that.
    copies = ["the same reply to everything you ask me today"] * 8
    texts = copies + ANSWERS[:8]
    result = m.meteor_similarity(texts, num_pairs=500, seed=0, num_bootstrap=2000)
    assert result.num_pairs == 120
    scores = np.array(
        [
            (m.meteor(texts[i], texts[j]) + m.meteor(texts[j], texts[i])) / 2
            for i, j in itertools.combinations(range(16), 2)
        ]
    )
    assert result.mean == pytest.approx(scores.mean())
    draws = np.random.default_rng(0).integers(0, 120, size=(2000, 120))
    low, high = np.percentile(scores[draws].mean(axis=1), [2.5, 97.5])
    assert result.ci_low < result.mean < result.ci_high
    assert result.ci_high - result.ci_low > 2 * (high - low)


def test_answer_bootstrap_counts_pairs_by_the_drawn_prompts():
    # Three prompts, every pair scores the same: each resample's mean is that score.
    texts = ["a b c d", "a b c d", "a b c d"]
    result = m.meteor_similarity(texts, seed=3)
    assert result.ci_low == pytest.approx(result.mean) and result.ci_high == pytest.approx(
        result.mean
    )


def test_pairs_never_cross_sources():
    # Answer i of source "a" equals answer i of source "b"; within a source no two answers
    # share a word. A pair across sources would score ~1 and lift the mean above 0.
    own = [f"alpha{i} beta{i} gamma{i} delta{i}" for i in range(5)]
    texts = own + own
    sources = ["a"] * 5 + ["b"] * 5
    result = m.meteor_similarity(texts, sources=sources, num_pairs=10_000)
    assert result.num_pairs == 2 * (5 * 4 // 2)
    assert result.mean == 0.0 and result.ci_high == 0.0
    assert m.meteor_similarity(texts, num_pairs=10_000).mean > 0  # without: they cross

    groups = [i % 5 for i in range(700)]  # large: the rejection-sampling path
    big_sources = [i % 2 for i in range(700)]
    pairs = m._cross_prompt_pairs(groups, 300, random.Random(0), big_sources)
    assert len(pairs) == len(set(pairs)) == 300
    assert all(groups[i] != groups[j] and big_sources[i] == big_sources[j] for i, j in pairs)
    with pytest.raises(ValueError, match="sources"):
        m.meteor_similarity(texts, sources=["a"])


def test_source_dataset_is_the_part_before_the_slash():
    assert m.source_dataset("donotanswer/discrimination") == "donotanswer"
    assert m.source_dataset("realtoxicityprompts/rtp_insult") == "realtoxicityprompts"
    assert m.source_dataset("webgpt") == "webgpt"
    assert m.source_dataset(None) is None
