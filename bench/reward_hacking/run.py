"""Run every benchmark run not yet finished, one after another (resumable: a run stopped
midway continues from its last checkpoint; a finished one is skipped).

    python bench/reward_hacking/run.py [--only NAME ...] [--output_dir runs/reward-hacking]

Each run is a real `superhf train` (or TRL GRPO/RLOO with the monitor's callback,
`trl_run.py`) on the demo task with the judge as its test reward model (README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.reward_hacking.runs import EVAL_STEPS, ITERATIONS, RUNS, BenchRun  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def superhf(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    subprocess.run([sys.executable, "-m", "superhf", *args], check=True, cwd=ROOT, env=env)


def build_judge(out: Path) -> Path:
    """The held-out judge: a head on MiniLM fitted on the second half of the HH pairs."""
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
    return judge


def finished(folder: Path) -> bool:
    if (folder / "done.json").exists():  # a TRL run: written after its last step
        return True
    metrics = folder / "metrics.jsonl"
    if not metrics.exists() or not (folder / "adapter_model.safetensors").exists():
        return False
    last = json.loads(metrics.read_text().strip().splitlines()[-1])
    return last.get("iteration") == ITERATIONS


def run_one(run: BenchRun, out: Path, judge: Path) -> None:
    folder = out / run.name
    if finished(folder):
        print(f"{run.name}: finished, skipped", flush=True)
        return
    print(f"{run.name}: running", flush=True)
    common = [
        "--output_dir",
        str(folder),
        "--seed",
        str(run.seed),
        "--test_reward_model",
        str(judge),
        *run.args,
    ]
    if run.trainer == "superhf":
        if (folder / "checkpoints").exists() and any((folder / "checkpoints").iterdir()):
            superhf("train", "--resume", str(folder))
        else:
            superhf(
                "train",
                "--max_iterations",
                str(ITERATIONS),
                "--eval_steps",
                str(EVAL_STEPS),
                "--save_steps",
                str(EVAL_STEPS),
                *common,
            )
    else:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "reward_hacking" / "trl_run.py"),
                "--trainer",
                run.trainer,
                "--max_steps",
                str(ITERATIONS),
                "--eval_steps",
                str(EVAL_STEPS),
                *common,
            ],
            check=True,
            cwd=ROOT,
            env=env,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default=str(ROOT / "runs" / "reward-hacking"))
    parser.add_argument(
        "--only", nargs="*", help="run names (runs.py), run in this order; default: all"
    )
    parser.add_argument("--trainer", nargs="*", help="only runs of these trainers")
    args = parser.parse_args()
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    judge = build_judge(out)
    by_name = {run.name: run for run in RUNS}
    unknown = set(args.only or []) - set(by_name)
    if unknown:
        parser.error(f"--only: unknown runs {sorted(unknown)}; runs.py has {sorted(by_name)}")
    chosen = [by_name[name] for name in args.only] if args.only else RUNS  # in the order given
    for run in chosen:
        if args.trainer and run.trainer not in args.trainer:
            continue
        run_one(run, out, judge)


if __name__ == "__main__":
    main()
