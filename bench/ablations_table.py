"""The table of bench/ABLATIONS.md from `superhf train` run folders (their metrics.jsonl).

    python bench/ablations_table.py runs/ablations/default runs/ablations/advantage ...

One row per run: held-out reward (the training reward on the held-out prompts, eval_reward,
with its standard error) at the first and last evaluation, METEOR similarity, distinct-2 and
mean length at the end, the training reward of each iteration, the KL at the last iteration,
mean seconds per iteration (all, sampling, fine-tuning), sampled tokens per iteration and
samples trained on (kept, negatives, skipped prompts) over the run.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def row(run: Path) -> str:
    file = run / "metrics.jsonl"
    metrics = [json.loads(line) for line in file.open()] if file.is_file() else []
    evals = [m for m in metrics if "eval_reward" in m]
    trained = [m for m in metrics if m["iteration"] > 0]
    if len(evals) < 2:
        return f"| {run.name} | not finished (no second evaluation) |"
    first, last = evals[0], evals[-1]

    def mean(key: str) -> float:
        return statistics.fmean(m[key] for m in trained)

    tokens = mean("completions/mean_length") * mean("num_completions")
    rewards = " ".join(f"{m['reward']:+.1f}" for m in trained)
    return (
        f"| {run.name} | {first['eval_reward']:+.2f} ± {first['eval_reward_se']:.2f} | "
        f"{last['eval_reward']:+.2f} ± {last['eval_reward_se']:.2f} | "
        f"{last['eval_reward'] - first['eval_reward']:+.2f} | "
        f"{rewards} | {trained[-1]['kl']:.3f} | "
        f"{first['eval_meteor']:.3f} → {last['eval_meteor']:.3f} | "
        f"{last['eval_distinct_2']:.3f} | {last['eval_mean_length']:.1f} | "
        f"{mean('step_time'):.0f} ({mean('time/generate'):.0f} + {mean('time/fine_tune'):.0f}) | "
        f"{tokens:.0f} | {sum(m['num_kept'] for m in trained)} / "
        f"{sum(m.get('num_negatives', 0) for m in trained)} / "
        f"{sum(m.get('num_skipped_prompts', 0) for m in trained)} |"
    )


HEADER = (
    "| run | held-out reward, start | end | change | train reward per iteration | KL, last | "
    "METEOR | distinct-2, end | length, end | s / iteration (sample + tune) | "
    "sampled tokens / iteration | kept / negatives / skipped prompts |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)

if __name__ == "__main__":
    print(HEADER)
    for folder in sys.argv[1:]:
        print(row(Path(folder)))
