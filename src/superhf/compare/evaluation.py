"""Every finished run evaluated the same way, on the same held-out prompts, with one seed.

The paper's evaluation sampling (one answer per prompt, temperature 0.7, top_p 0.95) through
`superhf eval`'s own code (`evaluate_one`): train reward, test reward, METEOR with its
interval, KL to the start, entropy, length, distinct-n. Best-of-n samples n answers per
prompt from the start policy with the same settings and keeps the one the train reward
prefers; it has no weights of its own, so its KL to the start is given as the analytic bound
log(n) - (n - 1) / n (Stiennon et al. 2020), not measured.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from transformers import set_seed

from superhf.config import EvalConfig
from superhf.data import load_prompt_dataset, prepare_prompts, question_text
from superhf.evaluation.entropy import entropy_estimate
from superhf.evaluation.evaluate import evaluate_one, summarize
from superhf.evaluation.heldout import mean_se, meteor_across_prompts, score_completions
from superhf.evaluation.kl import KL_ESTIMATOR
from superhf.files import json_safe, write_text_atomic
from superhf.generation import generate_completions
from superhf.models import inspect_model, load_policy
from superhf.rewards.scoring import RewardScorer, load_reward_funcs
from superhf.train.filtering import top_k_per_prompt

EVAL_RESULT_FILE = "compare_eval.json"
"""A run's evaluation, cached in its folder: a resumed comparison does not redo it."""


class Evaluator:
    """Holds the eval prompts and both reward scorers, loaded once for every run."""

    def __init__(
        self,
        eval_file: str,
        reward_funcs: list[str],
        reward_weights: list[float] | None,
        test_reward_model: str | None,
        max_completion_length: int,
        num_prompts: int,
        max_prompt_length: int,
        apply_chat_template: bool,
        meteor_pairs: int,
        seed: int,
        console: Console,
        root: str | Path | None = None,
    ):
        self.root = root
        """The comparison folder: paths inside it match a cached evaluation by their place in it."""
        self.config = EvalConfig(
            dataset_name=eval_file,
            dataset_split="train",
            num_prompts=num_prompts,
            max_prompt_length=max_prompt_length,
            apply_chat_template=apply_chat_template,
            reward_funcs=list(reward_funcs),
            reward_weights=reward_weights,
            test_reward_model=test_reward_model,
            max_completion_length=max_completion_length,
            meteor_pairs=meteor_pairs,
            seed=seed,
        )
        self.console = console
        self.rows = load_prompt_dataset(eval_file, None, "train").to_list()[:num_prompts]
        device = "cuda" if torch.cuda.is_available() else "cpu"
        funcs, weights = load_reward_funcs(reward_funcs, reward_weights, 32, device)
        self.scorer = RewardScorer(funcs, weights)
        self.test_scorer = None
        if test_reward_model is not None:
            test_funcs, _ = load_reward_funcs([test_reward_model], None, 32, device)
            self.test_scorer = RewardScorer(test_funcs)

    def settings(self) -> dict[str, Any]:
        return {**self.config.to_dict(), "reward_names": self.scorer.names}

    def cached(self, folder: Path) -> dict[str, Any] | None:
        """The metrics stored in `folder` when they were made with these settings, else None."""
        hit = cached(folder)
        if hit is not None and same_settings(hit.get("settings"), self.settings(), self.root):
            return hit["metrics"]
        return None

    def evaluate_policy(
        self, path: str, name: str, out_dir: Path, reference_model: str | None = None
    ) -> dict[str, Any]:
        """`superhf eval`'s metrics of one model or run folder (completions in out_dir)."""
        config = dataclasses.replace(
            self.config, output_dir=str(out_dir), reference_model=reference_model
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        return evaluate_one(
            inspect_model(path),
            name,
            self.rows,
            config,
            self.scorer,
            self.test_scorer,
            {},
            self.console,
        )

    def evaluate_best_of_n(self, start: str, n: int, seed: int, out_dir: Path) -> dict[str, Any]:
        """n answers per prompt from the start policy; the train reward keeps one."""
        config = dataclasses.replace(
            self.config,
            num_generations=n,
            generation_batch_size=max(self.config.generation_batch_size, n),
            seed=seed,
        )
        model, tokenizer, _, _ = load_policy(start, config.dtype)
        prompts, _ = prepare_prompts(
            self.rows,
            tokenizer,
            config.max_prompt_length,
            config.dataset_name,
            apply_chat_template=config.apply_chat_template,
        )
        texts = [p.text for p in prompts]
        set_seed(seed)
        completions, sampled_tokens = [], 0
        per_call = max(1, config.generation_batch_size // n)
        with self.console.status(f"best-of-{n}: sampling"):
            for first in range(0, len(texts), per_call):
                samples, stats = generate_completions(
                    model, tokenizer, texts[first : first + per_call], config
                )
                for c in samples:
                    c.prompt_index += first
                completions += samples
                sampled_tokens += stats.num_sampled_tokens
        scores = score_completions(self.scorer, prompts, completions)
        kept = top_k_per_prompt(scores.total, [c.prompt_index for c in completions], 1)
        chosen = [completions[i] for i in kept]
        rewards = [scores.total[i] for i in kept]
        test = score_completions(self.test_scorer, prompts, chosen)
        entropy = entropy_estimate(model, tokenizer, texts, chosen, config.kl_batch_size)
        meteor = meteor_across_prompts(chosen, config.meteor_pairs, config.seed, prompts)
        metrics = summarize(
            [c.text for c in chosen],
            [c.num_tokens for c in chosen],
            [c.clipped for c in chosen],
            rewards,
            test.total if test is not None else None,
            None,
            meteor,
            entropy,
        )
        bound = math.log(n) - (n - 1) / n
        metrics["kl"] = {
            "estimator": KL_ESTIMATOR,
            "per_sequence": None,
            "per_token": None,
            "analytic_bound_per_sequence": bound,
            "reason": f"best-of-{n} has no weights: its KL to the start is at most "
            f"log(n) - (n-1)/n = {bound:.3f} nats per answer (Stiennon et al. 2020)",
        }
        metrics["kl_exact"] = {
            "per_token": None,
            "per_sequence": None,
            "reason": metrics["kl"]["reason"],
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        with (out_dir / "completions-best_of_n.jsonl").open("w", encoding="utf-8") as f:
            for c, reward, t in zip(
                chosen, rewards, test.total if test else [None] * len(chosen), strict=True
            ):
                row = {
                    "prompt": question_text(prompts[c.prompt_index].prompt),
                    "completion": c.text,
                    "reward": reward,
                    "test_reward": t,
                    "prompt_index": c.prompt_index,
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        del model
        return {
            "path": start,
            "kind": "best_of_n",
            "n": n,
            "num_prompts": len(prompts),
            "sampled_tokens": sampled_tokens,
            "completions_file": "completions-best_of_n.jsonl",
            "rewards_per_func": {
                k: mean_se([v[i] for i in kept])["mean"] for k, v in scores.per_func.items()
            },
            **metrics,
        }


def same_settings(
    stored: dict[str, Any] | None, current: dict[str, Any], root: str | Path | None = None
) -> bool:
    """Whether a stored evaluation was made with `current`'s settings. Paths compare by the file
    they name, so `--output_dir runs/x` and `--output_dir /abs/runs/x` share their cache; a
    path inside the comparison folder `root` (its eval prompts, its reward models) compares by
    its place in that folder, so a comparison moved or copied elsewhere keeps its evaluations."""
    if stored is None or set(stored) != set(current):
        return False
    return all(_same_value(stored[k], current[k], root) for k in current)


def _same_value(old: Any, new: Any, root: str | Path | None) -> bool:
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(
            _same_value(a, b, root) for a, b in zip(old, new, strict=True)
        )
    if old == new:
        return True
    if not (isinstance(old, str) and isinstance(new, str) and new and Path(new).exists()):
        return False
    here = Path(new).resolve()
    if old and Path(old).exists() and Path(old).resolve() == here:
        return True
    if root is None:
        return False
    try:
        inside = here.relative_to(Path(root).resolve()).parts
    except ValueError:  # not in the comparison folder: only the same file will do
        return False
    return bool(inside) and Path(old).parts[-len(inside) :] == inside


def cached(folder: Path) -> dict[str, Any] | None:
    path = folder / EVAL_RESULT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def store(folder: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    metrics = json_safe(metrics)
    write_text_atomic(folder / EVAL_RESULT_FILE, json.dumps(metrics, indent=2) + "\n")
    return metrics
