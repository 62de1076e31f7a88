"""Held-out evaluation of the policy in memory: train and test reward, METEOR, length, diversity.

The paper's protocol (docs/METHOD.md, evaluation): sample completions for held-out prompts at
temperature 0.7, top_p 0.95; score them with the train reward and a held-out test reward
model; look for reward hacking as METEOR similarity between completions to *different*
prompts. The trainer calls `generate_and_score` every `eval_steps` iterations; `superhf eval`
(`superhf.evaluation.evaluate`) uses the same sampling and scoring on saved models.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from superhf.batching import encode_prompt
from superhf.config import SamplingSettings
from superhf.data import Prompt
from superhf.evaluation.meteor import meteor_similarity, source_dataset
from superhf.generation import Completion, derive_seed, generate_completions
from superhf.rewards.scoring import RewardScorer, Scores

# --- pure metrics ---------------------------------------------------------------------------


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams / all n-grams over every text (whitespace tokens, case kept).

    N-grams do not cross texts. A policy that repeats itself within or across answers scores
    low (Li et al. 2016). NaN when no text has n words.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.split()
        grams += [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


OPENING_WORDS = 3
"""An answer's opening: its first three words, lowercased, punctuation dropped."""


def opening(text: str, words: int = OPENING_WORDS) -> str:
    """The first `words` words of `text`, lowercased, without punctuation."""
    return " ".join(re.findall(r"[\w']+", text.lower())[:words])


def template_share(texts: Sequence[str], words: int = OPENING_WORDS) -> float:
    """The share of answers that open with the most common opening (NaN for fewer than 2).

    A policy that has found a template ("I'm sorry, I'm unable to ...") opens most answers
    the same way, whatever the question; a healthy one rarely repeats its first words."""
    openings = [opening(t, words) for t in texts]
    if len(openings) < 2:
        return math.nan
    return Counter(openings).most_common(1)[0][1] / len(openings)


def mean_se(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean, standard error of the mean (sample std / sqrt(n)), std and n; None where undefined."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return {"mean": None, "se": None, "std": None, "n": 0}
    std = statistics.stdev(values) if n > 1 else None
    return {
        "mean": statistics.fmean(values),
        "se": std / math.sqrt(n) if std is not None else None,
        "std": std,
        "n": n,
    }


# --- sampling and scoring -------------------------------------------------------------------


@contextlib.contextmanager
def fork_all_rng() -> Iterator[None]:
    """Restore Python's `random`, NumPy's global generator and torch's CPU and CUDA generators
    on exit. `torch.random.fork_rng` restores torch only, while `set_seed` and reward
    functions also draw from the other two; evaluation must leave training's streams as
    they were, whatever `eval_steps` is."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def sample_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_texts: Sequence[str],
    config: SamplingSettings,
    advance: Callable[[int], None] = lambda _: None,
    seeds: Sequence[int] | None = None,
) -> list[Completion]:
    """`generate_completions` in calls of `generation_batch_size` sequences, to show progress.

    Prompts are sorted by length first (less padding), as `generate_completions` does within
    a call; the completions come back in prompt order. `seeds`: one per prompt, as
    `generate_completions` takes them (each prompt's samples then do not depend on the others).
    """
    lengths = [len(encode_prompt(tokenizer, t)) for t in prompt_texts]
    order = sorted(range(len(prompt_texts)), key=lambda i: lengths[i])
    per_call = max(1, config.generation_batch_size // config.num_generations)
    completions: list[Completion] = []
    for start in range(0, len(order), per_call):
        group = order[start : start + per_call]
        texts = [prompt_texts[i] for i in group]
        group_seeds = [seeds[i] for i in group] if seeds is not None else None
        samples, _ = generate_completions(model, tokenizer, texts, config, seeds=group_seeds)
        for c in samples:
            c.prompt_index = group[c.prompt_index]
        completions += samples
        advance(len(group))
    completions.sort(key=lambda c: c.prompt_index)
    return completions


def _columns(prompts: Sequence[Prompt]) -> dict[str, list[Any]]:
    keys = prompts[0].columns if prompts else {}
    return {k: [p.columns.get(k) for p in prompts] for k in keys}


def score_completions(
    scorer: RewardScorer | None, prompts: Sequence[Prompt], completions: Sequence[Completion]
) -> Scores | None:
    """The scorer's scores of the completions (prompts and columns as the trainer passes them)."""
    if scorer is None:
        return None
    if not completions:
        return Scores([], {name: [] for name in scorer.names})
    sample_prompts = [prompts[c.prompt_index] for c in completions]
    return scorer(
        [p.prompt for p in sample_prompts], [c.text for c in completions], _columns(sample_prompts)
    )


def meteor_across_prompts(
    completions: Sequence[Completion],
    num_pairs: int,
    seed: int,
    prompts: Sequence[Prompt] | None = None,
) -> Any | None:
    """METEOR similarity across prompts; with `prompts` whose rows have a `source` column,
    only across prompts of the same dataset (`source_dataset`), as the paper paired them."""
    if num_pairs == 0:
        return None
    sources = None
    if prompts is not None and any("source" in p.columns for p in prompts):
        sources = [
            source_dataset(prompts[c.prompt_index].columns.get("source")) for c in completions
        ]
    return meteor_similarity(
        [c.text for c in completions],
        [c.prompt_index for c in completions],
        num_pairs=num_pairs,
        seed=seed,
        sources=sources,
    )


def answer_rows(
    prompts: Sequence[Prompt],
    completions: Sequence[Completion],
    scores: Scores,
    test: Scores | None,
) -> list[dict[str, Any]]:
    """One row per answer: its prompt (and index), text, train reward and each component,
    test reward (None without a test scorer), clipped or not."""
    return [
        {
            "prompt_index": c.prompt_index,
            "prompt": prompts[c.prompt_index].prompt,
            "completion": c.text,
            "reward": scores.total[i],
            **{f"rewards/{name}": values[i] for name, values in scores.per_func.items()},
            "test_reward": test.total[i] if test is not None else None,
            "clipped": c.clipped,
        }
        for i, c in enumerate(completions)
    ]


def sample_and_score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    config: SamplingSettings,
    scorer: RewardScorer,
    test_scorer: RewardScorer | None = None,
    seed: int = 0,
    first: int = 0,
) -> tuple[list[Completion], Scores, Scores | None]:
    """The held-out prompts' completions, train scores and test scores (None without a test
    scorer). Prompt i samples from the seed `derive_seed(seed, "eval", first + i)`, so a block
    of the prompts starting at `first` (one process's share) gets the samples the whole list
    would; inside `fork_all_rng` under `seed`, leaving training's random streams as they were."""
    with fork_all_rng():
        set_seed(seed)
        seeds = [derive_seed(seed, "eval", first + i) for i in range(len(prompts))]
        completions = sample_completions(
            model, tokenizer, [p.text for p in prompts], config, seeds=seeds
        )
        rewards = score_completions(scorer, prompts, completions)
        test = score_completions(test_scorer, prompts, completions)
    return completions, rewards, test


def generate_and_score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    config: SamplingSettings,
    scorer: RewardScorer,
    test_scorer: RewardScorer | None = None,
    meteor_pairs: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Training-time evaluation of the in-memory policy on a fixed held-out prompt set.

    Samples with `config`'s generation settings (`EvalConfig.from_train_config(args)` gives
    the paper's eval sampling with the run's rewards), under `seed` and inside
    `fork_all_rng`, so every call sees the same random streams (sampling and the reward
    functions) and training's Python, NumPy and torch streams are left as they were
    (`sample_and_score`, then `summarize_eval`; the trainer splits the prompts across
    processes between the two). Returns floats, NaN where not measured (no test scorer, fewer
    than two prompts answered); the trainer logs them prefixed `eval_`:

    - `reward`, `reward_se`: the train reward of the completions (mean, standard error);
    - `test_reward`, `test_reward_se`: the held-out scorer's, NaN without one;
    - `meteor`, `meteor_ci_low`, `meteor_ci_high`: METEOR similarity across prompts of the
      same dataset (their `source` column, when present; high: the same answer to every
      question, a reward-hacking sign) and its bootstrap 95% CI over prompts;
    - `mean_length` (sampled tokens), `clipped_ratio`, `distinct_2`, `num_completions`.
    """
    completions, rewards, test = sample_and_score(
        model, tokenizer, prompts, config, scorer, test_scorer, seed
    )
    return summarize_eval(prompts, completions, rewards, test, meteor_pairs, seed)


def summarize_eval(
    prompts: Sequence[Prompt],
    completions: Sequence[Completion],
    rewards: Scores,
    test: Scores | None,
    meteor_pairs: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """`generate_and_score`'s numbers from the completions and scores of every prompt."""
    with fork_all_rng():
        meteor = meteor_across_prompts(completions, meteor_pairs, seed, prompts)
    nan = math.nan

    def value(x: float | None) -> float:
        return nan if x is None else float(x)

    r, t = mean_se(rewards.total), mean_se(test.total) if test is not None else {}
    return {
        "reward": value(r["mean"]),
        "reward_se": value(r["se"]),
        "test_reward": value(t.get("mean")),
        "test_reward_se": value(t.get("se")),
        "meteor": meteor.mean if meteor is not None else nan,
        "meteor_ci_low": meteor.ci_low if meteor is not None else nan,
        "meteor_ci_high": meteor.ci_high if meteor is not None else nan,
        "mean_length": statistics.fmean(c.num_tokens for c in completions) if completions else nan,
        "clipped_ratio": statistics.fmean(float(c.clipped) for c in completions)
        if completions
        else nan,
        "distinct_2": distinct_n([c.text for c in completions], 2),
        "template_share": template_share([c.text for c in completions]),
        "num_completions": float(len(completions)),
    }
