"""One TRL GRPO or RLOO run of the reward-hacking benchmark, on the demo task, with the
monitor's callback answering the held-out prompts every `eval_steps` steps.

    python bench/reward_hacking/trl_run.py --trainer grpo --learning_rate 2e-3 --seed 0 \
        --max_steps 40 --eval_steps 5 --test_reward_model JUDGE --output_dir DIR

The task is `superhf train`'s defaults (prompts, their held-out split and order, reward,
sampling, LoRA), built as `superhf compare` builds a baseline (`build_trl_trainer`): step k
samples the prompts of SuperHF's iteration k, 4 prompts x 8 samples, one optimizer step.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import fields
from pathlib import Path

from superhf.compare.baseline_run import eval_config
from superhf.compare.spec import MethodRun
from superhf.compare.trl_baselines import build_trl_trainer
from superhf.config import SuperHFConfig, TaskSettings
from superhf.evaluation.monitor_callback import RewardHackingCallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainer", choices=["grpo", "rloo"], required=True)
    parser.add_argument("--learning_rate", type=float, required=True)
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_steps", type=int, default=40)
    parser.add_argument("--eval_steps", type=int, default=5)
    parser.add_argument("--test_reward_model", required=True)
    parser.add_argument("--reward_funcs", nargs="+", help="train rewards (default: the demo's)")
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    defaults = SuperHFConfig(output_dir=args.output_dir)
    task = {f.name: getattr(defaults, f.name) for f in fields(TaskSettings)}
    task["test_reward_model"] = args.test_reward_model
    if args.reward_funcs:
        task["reward_funcs"] = args.reward_funcs
    completions = defaults.prompts_per_iteration * defaults.num_generations
    run = MethodRun(
        **task,
        method=args.trainer,
        output_dir=args.output_dir,
        prompts_per_step=defaults.prompts_per_iteration,
        learning_rate=args.learning_rate,
        beta=args.beta,
        seed=args.seed,
        sampled_token_budget=args.max_steps * completions,  # max_steps = this / completions
        extra={"num_eval_prompts": defaults.num_eval_prompts},
    )
    trainer, reward, heldout, _ = build_trl_trainer(run)
    monitor = RewardHackingCallback(
        heldout,
        reward_funcs=reward.scorer,
        test_reward_model=args.test_reward_model,
        eval_steps=args.eval_steps,
        sampling=eval_config(run),
        output_dir=args.output_dir,
        seed=args.seed,
    )
    trainer.reward_funcs = [monitor.watch(f) for f in trainer.reward_funcs]
    trainer.add_callback(monitor)
    trainer.train()
    trainer.save_model(args.output_dir)
    out = Path(args.output_dir)
    (out / "run.json").write_text(json.dumps(run.to_dict(), indent=1), encoding="utf-8")
    (out / "done.json").write_text(json.dumps({"steps": trainer.state.global_step}), "utf-8")


if __name__ == "__main__":
    main()
