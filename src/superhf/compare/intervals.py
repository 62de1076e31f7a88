"""Claims worded by their intervals: a paired bootstrap of one method's held-out reward minus
another's, over seeds and the same held-out prompts (docs/COMPARE.md, "Claims").

    claim = paired_claim(a_rewards, b_rewards, margin=0.05)   # {seed: [reward per prompt]}

Both runs of a seed answered the same held-out prompts, so the difference is taken prompt by
prompt and seed by seed; the bootstrap resamples seeds, then prompts, with replacement (both
sources of noise: training's, through the seeds, and the evaluation's, through the prompts).
The claim's word follows the 95% interval and a margin stated beforehand:

- "better": the whole interval above +margin;
- "worse": the whole interval below -margin;
- "level": the whole interval within [-margin, +margin];
- "inconclusive": anything else (e.g. [-0.04, +0.11] with margin 0.05).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from superhf.compare.config import is_superhf_default

RESAMPLES = 4000
LEVEL = 0.95


def word(low: float, high: float, margin: float) -> str:
    """The claim an interval [low, high] carries, against a margin."""
    if low > margin:
        return "better"
    if high < -margin:
        return "worse"
    if -margin <= low and high <= margin:
        return "level"
    return "inconclusive"


def paired_claim(
    a: dict[int, list[float]],
    b: dict[int, list[float]],
    margin: float,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Mean of a - b over the seeds both have and the prompts both answered, its 95% interval
    from a paired two-level bootstrap, and its word. None when no seed is shared."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    n = min(min(len(a[s]), len(b[s])) for s in seeds)
    if n == 0:
        return None
    diff = np.array([np.array(a[s][:n]) - np.array(b[s][:n]) for s in seeds])  # seeds x prompts
    rng = np.random.default_rng(seed)
    picked_seeds = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
    picked_prompts = rng.integers(0, n, size=(resamples, n))
    means = np.array(
        [diff[s][:, p].mean() for s, p in zip(picked_seeds, picked_prompts, strict=True)]
    )
    low, high = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return {
        "difference": float(diff.mean()),
        "interval": [float(low), float(high)],
        "level": LEVEL,
        "margin": margin,
        "word": word(float(low), float(high), margin),
        "seeds": seeds,
        "num_prompts": n,
        "resamples": resamples,
    }


def per_prompt(record: dict[str, Any], key: str) -> dict[int, float] | None:
    """A finished run's `key` ("reward" or "test_reward") by held-out prompt index, from the
    answers its evaluation wrote (one per prompt; an empty answer is dropped, so its prompt
    is missing)."""
    name = (record.get("eval") or {}).get("completions_file")
    if record.get("status") != "done" or not name:
        return None
    path = Path(record["folder"]) / name
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    values: dict[int, list[float]] = {}
    for row in rows:
        if row.get(key) is not None:
            values.setdefault(row["prompt_index"], []).append(float(row[key]))
    return {i: float(np.mean(values[i])) for i in sorted(values)} or None


def aligned(
    a: dict[int, dict[int, float]], b: dict[int, dict[int, float]]
) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """{seed: {prompt: value}} of two arms as {seed: [value]} over the prompts every shared
    seed of both answered, in prompt order: a difference is only ever taken on one prompt."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return {}, {}
    prompts = sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds)))
    return (
        {s: [a[s][p] for p in prompts] for s in seeds},
        {s: [b[s][p] for p in prompts] for s in seeds},
    )


def claims(
    arms: list[tuple[dict[str, Any], list[dict[str, Any]]]],
    margin: float,
    keys: tuple[str, ...] = ("test_reward", "reward"),
) -> list[dict[str, Any]]:
    """For every headline arm other than SuperHF's default (its default beta, no variant, at
    its chosen rate): SuperHF's default minus that arm, on each reward of `keys` (the test
    and the train reward; only the test reward where they are one function), paired by seed
    and prompt. `arms`: each headline row with its runs. Best-of-n is one policy: each
    SuperHF seed is paired with it."""
    values = [  # each arm's per-prompt rewards by seed, read once
        (row, {key: {r["seed"]: v for r in runs if (v := per_prompt(r, key))} for key in keys})
        for row, runs in arms
    ]
    out = []
    for ours, mine in values:
        if not is_superhf_default(ours):
            continue
        for other, theirs in values:
            if other is ours:
                continue
            for key in keys:
                a, b = mine[key], theirs[key]
                if other["method"] == "best_of_n" and b:  # one policy: pair it with every seed
                    b = dict.fromkeys(a, next(iter(b.values())))
                claim = paired_claim(*aligned(a, b), margin)
                if claim is not None:
                    out.append({"a": ours["label"], "b": other["label"], "metric": key, **claim})
    return out


def gains_over_start(
    arms: list[tuple[dict[str, Any], list[dict[str, Any]]]],
    start: dict[str, Any],
    margin: float,
    keys: tuple[str, ...] = ("test_reward", "reward"),
) -> list[dict[str, Any]]:
    """Every headline arm minus the start policy it trained from, on each reward of `keys`,
    paired by prompt: did training gain anything? (The paper says SuperHF at n = 1, with
    nothing to select from, does not.) `start`: a record of the start's evaluation (status,
    folder, eval), one policy, so each seed of the arm is paired with it, as best-of-n is."""
    out = []
    for key in keys:
        begin = per_prompt(start, key)
        if begin is None:
            continue
        for row, runs in arms:
            mine = {r["seed"]: v for r in runs if (v := per_prompt(r, key))}
            claim = paired_claim(*aligned(mine, dict.fromkeys(mine, begin)), margin)
            if claim is not None:
                out.append({"arm": row["label"], "metric": key, **claim})
    return out
