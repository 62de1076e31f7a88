"""Reward models on real preferences: train on HH-RLHF harmless-base (first half), score the
held-out second half, with two backbones; report accuracy, training time and how the two
backbones' scores of the same held-out pairs compare.

    .venv/bin/python bench/bench_reward_model.py                  # both backbones
    .venv/bin/python bench/bench_reward_model.py --backbones embedded:all-MiniLM-L6-v2

Reads ../shared/data/hh-rlhf/harmless-base-test.jsonl.gz in place. Run it alone on the CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from superhf.rewards.training import (
    RewardTrainingConfig,
    evaluate_pairs,
    read_rows,
    split_rows,
    train_reward_model,
)

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=["embedded:all-MiniLM-L6-v2", "embedded:SmolLM2-135M-Instruct"],
    )
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--out", default="bench/results/reward_model_cpu.json")
    cli = parser.parse_args()
    if not HH.is_file():
        raise SystemExit(f"needs {HH} (the shared HH-RLHF data)")

    rows = read_rows(str(HH))
    _, held_out = split_rows(len(rows), "first-half")
    all_held_out = [(rows[i]["chosen"], rows[i]["rejected"]) for i in held_out]
    results: dict[str, dict] = {}
    margins: dict[str, list[float]] = {}
    for backbone in cli.backbones:
        out_dir = f"/tmp/superhf-bench-rm/{backbone.replace(':', '_').replace('/', '_')}"
        # SmolLM2 (135M) trains LoRA adapters on the CPU; MiniLM (22M) trains fully.
        lora = "SmolLM2" in backbone
        config = RewardTrainingConfig(
            model_name_or_path=backbone,
            dataset_name=str(HH),
            split="first-half",
            max_length=cli.max_length,
            use_peft=lora,
            learning_rate=2e-4,
            output_dir=out_dir,
        )
        start = time.perf_counter()
        final = train_reward_model(config)
        seconds = time.perf_counter() - start
        # Every held-out pair, the same for each backbone (over-long texts are cut from the
        # left, keeping the final answers), so the backbones' margins can be compared.
        tokenizer = AutoTokenizer.from_pretrained(out_dir)
        tokenizer.truncation_side = "left"
        model = AutoModelForSequenceClassification.from_pretrained(out_dir)
        scored = evaluate_pairs(model, tokenizer, all_held_out, 32, cli.max_length)
        margins[backbone] = [
            c - r for c, r in zip(scored["chosen_scores"], scored["rejected_scores"], strict=True)
        ]
        results[backbone] = {
            "train_and_eval_seconds": seconds,
            "held_out_accuracy": final["eval_accuracy"],
            "held_out_loss": final["eval_loss"],
            "held_out_pairs": final["num_eval_pairs"],
            "accuracy_all_held_out_pairs_truncated": scored["accuracy"],
            "training": "LoRA r=16, all linear layers" if lora else "full fine-tuning",
        }
    comparison = {}
    if len(margins) == 2:
        (a, ma), (b, mb) = margins.items()
        x, y = torch.tensor(ma), torch.tensor(mb)
        comparison = {
            "pairs_compared": len(ma),
            "agreement_on_preferred_side": float(((x > 0) == (y > 0)).float().mean()),
            "margin_correlation": float(torch.corrcoef(torch.stack([x, y]))[0, 1]),
        }
    report = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "data": f"{HH.name}: train first half, evaluate second half",
        "backbones": results,
        "comparison": comparison,
    }
    Path(cli.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cli.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
