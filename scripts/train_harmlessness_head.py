"""Train the default reward's harmlessness head on Anthropic HH-RLHF harmless-base pairs.

    python scripts/train_harmlessness_head.py                 # first half -> shipped weights
    python scripts/train_harmlessness_head.py --judge_output runs/judge/embedding_head.safetensors

Each pair's answers (the text after the last "\\n\\nAssistant:" turn), each after its
question (the human turn before it), are read by the default reward's own SmolLM2 judge code
(``DefaultReward.harmlessness_features``); a linear head is fitted on one half of the file (in
file order) with the L2-penalised Bradley-Terry loss, and its pairwise accuracy on the other
half is printed with a 95% Wilson interval. Deterministic: the same data gives the same head.
Writes OUTPUT (.safetensors) and OUTPUT with .json. About 15 minutes on 2 CPU cores.
The data: Anthropic HH-RLHF (https://github.com/anthropics/hh-rlhf), MIT licence; it never
goes into the repository.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
DEFAULT_OUTPUT = REPO / "src" / "superhf" / "rewards" / "harmlessness_head.safetensors"
CHECKED_PAIRS = 100
CREDIT = (
    "Anthropic HH-RLHF (Bai et al. 2022, https://github.com/anthropics/hh-rlhf), MIT licence; "
    "harmless-base test split"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help="HH .jsonl(.gz) file")
    parser.add_argument("--half", choices=["first", "second"], default="first")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="the .safetensors to write")
    parser.add_argument(
        "--max_pairs", type=int, help="use only the first N pairs of each half (a quick check)"
    )
    parser.add_argument(
        "--judge_output",
        help="also fit the other half and write it here (e.g. DIR/embedding_head.safetensors: "
        "a folder --test_reward_model loads), a judge the first head never saw",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from superhf.rewards.default import DefaultReward
    from superhf.rewards.harmlessness import answer_pairs, pair_features

    opener = gzip.open if args.data.endswith(".gz") else open
    with opener(args.data, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    half = len(rows) // 2
    first, second = rows[:half], rows[half:]
    train_rows, test_rows = (first, second) if args.half == "first" else (second, first)
    train_pairs, train_skipped = answer_pairs(train_rows)
    test_pairs, test_skipped = answer_pairs(test_rows)
    if args.max_pairs:
        train_pairs, test_pairs = train_pairs[: args.max_pairs], test_pairs[: args.max_pairs]

    start = time.perf_counter()
    embedder = DefaultReward(batch_size=32)
    train_c, train_r = pair_features(embedder, train_pairs)
    test_c, test_r = pair_features(embedder, test_pairs)
    seconds = time.perf_counter() - start

    skipped = {"train": train_skipped, "heldout": test_skipped}
    train, test = (train_c, train_r), (test_c, test_r)
    fit_and_save(args.output, args.half, train, test, len(rows), skipped, seconds)
    if args.judge_output:  # the other half's head: a judge the first head never saw
        other = "second" if args.half == "first" else "first"
        swapped = {"train": test_skipped, "heldout": train_skipped}
        fit_and_save(args.judge_output, other, test, train, len(rows), swapped, 0.0)


Features = tuple[np.ndarray, np.ndarray]
"""(chosen, rejected) features of the same pairs, one row each."""


def fit_and_save(
    output: str,
    half: str,
    train: Features,
    test: Features,
    num_rows: int,
    skipped: dict[str, int],
    seconds: float,
) -> None:
    """Fit the head on `train`, measure it on `test`, save it with what it was made from."""
    from superhf.rewards.harmlessness import (
        FEATURES,
        HEAD_KIND,
        fit_linear_head,
        pairwise_accuracy,
        wilson_interval,
    )

    head = fit_linear_head(*train)
    train_acc = pairwise_accuracy(head, *train)
    test_acc = pairwise_accuracy(head, *test)
    low, high = wilson_interval(test_acc, len(test[0]))
    head.info = {
        "kind": HEAD_KIND,
        "embedding": FEATURES,
        "component": "harmlessness",
        "data": f"{CREDIT}, {half} half of {num_rows} pairs in file order",
        "train_half": half,
        "num_train_pairs": len(train[0]),
        "num_heldout_pairs": len(test[0]),
        "num_rows_skipped": skipped,  # rows answer_pairs could not split into question + answers
        "l2": head.info["l2"],
        "train_accuracy": train_acc,
        "heldout_accuracy": test_acc,
        "heldout_accuracy_95ci_wilson": [low, high],
        # checked by the tests, which score these pairs again (all of them would take minutes)
        f"heldout_accuracy_first_{CHECKED_PAIRS}": pairwise_accuracy(
            head, test[0][:CHECKED_PAIRS], test[1][:CHECKED_PAIRS]
        ),
        "command": f"python scripts/train_harmlessness_head.py --half {half}",
        "final_train_loss": head.info["final_train_loss"],
    }
    head.save(output)
    print(
        f"{half} half: {len(train[0])} training pairs, {len(test[0])} held-out pairs; features "
        f"took {seconds:.0f} s on {torch.get_num_threads()} threads"
    )
    print(f"train accuracy {train_acc:.4f}")
    print(f"held-out accuracy {test_acc:.4f} (95% Wilson interval {low:.3f}-{high:.3f})")
    print(f"score range mapped to [-1, 1]: {head.score_low:.4f} .. {head.score_high:.4f}")
    print(f"wrote {output} and {Path(output).with_suffix('.json')}")


if __name__ == "__main__":
    main()
