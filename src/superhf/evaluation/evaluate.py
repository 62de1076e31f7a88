"""`superhf eval`: several models or run folders on the same held-out prompts, one table.

    superhf eval runs/a runs/b embedded:SmolLM2-135M-Instruct --num_prompts 100
    evaluate_models(["runs/a", "runs/b"], EvalConfig(num_prompts=100))

Each model samples from the same seed with the paper's evaluation settings and is scored
by the train reward and the held-out test reward; METEOR similarity, the KL to its reference,
length and distinct-n are reported beside them (a mean reward hides collapse).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import re
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from transformers import PreTrainedModel, set_seed

from superhf.config import EvalConfig
from superhf.console import make_console, progress_bar
from superhf.data import load_prompt_dataset, prepare_prompts, question_text
from superhf.errors import ConfigError
from superhf.evaluation.entropy import entropy_estimate
from superhf.evaluation.heldout import (
    distinct_n,
    mean_se,
    meteor_across_prompts,
    sample_completions,
    score_completions,
)
from superhf.evaluation.kl import (
    EXACT_KL_SAMPLING,
    KL_ESTIMATOR,
    KL_SAMPLING_NOTE,
    KLEstimate,
    exact_kl,
    kl_estimate,
)
from superhf.files import EVAL_FILE, is_local_path, json_safe
from superhf.models import ModelSpec, inspect_model, load_policy, reference_name
from superhf.rewards.scoring import RewardScorer, load_reward_funcs


def summarize(
    texts: Sequence[str],
    num_tokens: Sequence[int],
    clipped: Sequence[bool],
    rewards: Sequence[float],
    test_rewards: Sequence[float] | None = None,
    kl: KLEstimate | None = None,
    meteor: Any | None = None,
    entropy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One model's metrics from per-completion values (the JSON entry, without its metadata)."""
    return {
        "num_completions": len(texts),
        "reward": mean_se(rewards),
        "test_reward": mean_se(test_rewards) if test_rewards is not None else None,
        "meteor": meteor.to_dict() if meteor is not None else None,
        "kl": kl.to_dict() if kl is not None else None,
        "entropy": entropy,
        "length": {
            "mean_tokens": statistics.fmean(num_tokens) if num_tokens else None,
            "mean_words": statistics.fmean(len(t.split()) for t in texts) if texts else None,
            "clipped_fraction": statistics.fmean(map(float, clipped)) if clipped else None,
        },
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
    }


def safe_name(name: str) -> str:
    """A model name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def _unique_names(specs: list[ModelSpec]) -> list[str]:
    names: list[str] = []
    for spec in specs:
        name = spec.name if spec.name not in names else spec.path
        while name in names:
            name += "_"
        names.append(name)
    return names


def evaluate_models(
    models: list[str], config: EvalConfig, console: Console | None = None
) -> dict[str, Any]:
    """Evaluate each model on the same prompts with the same seed; write and return eval.json.

    Writes `output_dir/eval.json` ({"settings", "models": {name: metrics}}, rewritten after
    each model so a crash keeps what was done) and `output_dir/completions-<name>.jsonl`
    (prompt, completion, model, reward, test_reward, prompt_index), and prints one table.
    """
    console = console or make_console()
    if not models:
        raise ConfigError("MODEL_OR_RUN_DIR: give at least one model or run folder.")
    # Everything cheap first: a bad path, dataset or reward fails before any model loads.
    specs = [inspect_model(m) for m in models]
    ref = config.reference_model
    if ref is not None and is_local_path(ref) and not Path(ref).expanduser().is_dir():
        raise ConfigError(f"reference_model: no such folder {ref!r}.")
    names = _unique_names(specs)
    dataset = load_prompt_dataset(config.dataset_name, config.dataset_config, config.dataset_split)
    rows = dataset.select(range(min(config.num_prompts, len(dataset)))).to_list()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    funcs, weights = load_reward_funcs(
        config.reward_funcs, config.reward_weights, config.reward_batch_size, device
    )
    scorer = RewardScorer(funcs, weights)
    test_scorer = None
    if config.test_reward_model is not None:
        test_funcs, _ = load_reward_funcs(
            [config.test_reward_model], None, config.reward_batch_size, device
        )
        test_scorer = RewardScorer(test_funcs)

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "settings": {
            **config.to_dict(),
            "kl_estimator": KL_ESTIMATOR,
            "kl_sampling_note": KL_SAMPLING_NOTE,
            "reward_names": scorer.names,
            "num_dataset_rows": len(rows),
            "device": device,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "models": {},
    }
    references: dict[str, PreTrainedModel] = {}
    for spec, name in zip(specs, names, strict=True):
        metrics = evaluate_one(spec, name, rows, config, scorer, test_scorer, references, console)
        result["models"][name] = metrics
        (out / EVAL_FILE).write_text(
            json.dumps(json_safe(result), indent=2) + "\n", encoding="utf-8"
        )
    console.print(results_table(result))
    for name, m in result["models"].items():
        if m["kl"].get("reason"):
            console.print(f"[yellow]{name}: KL not measured: {m['kl']['reason']}", soft_wrap=True)
    if any(m["meteor"] and not m["meteor"]["uses_wordnet"] for m in result["models"].values()):
        console.print("[yellow]METEOR ran without WordNet synonyms (lower than the paper's).")
    return json_safe(result)


def chat_template_for(spec: ModelSpec, config: EvalConfig) -> bool:
    """Whether `spec`'s prompts get the chat template: `config.apply_chat_template` when set,
    else what the run folder was trained with (its config.yaml), else off."""
    if config.apply_chat_template is not None:
        return config.apply_chat_template
    return bool((spec.run_config or {}).get("apply_chat_template", False))


def exact_kl_of(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: Any,
    prompts: Sequence[Any],
    config: EvalConfig,
    progress: Any,
    task: Any,
) -> dict[str, Any]:
    """`kl_exact`: one answer per prompt drawn from the policy itself (EXACT_KL_SAMPLING, the
    eval's seed), and the exact per-token KL to the reference on them (`kl.exact_kl`)."""
    own = dataclasses.replace(config, num_generations=1, **EXACT_KL_SAMPLING)
    texts = [p.text for p in prompts]
    set_seed(config.seed)
    answers = sample_completions(model, tokenizer, texts, own, advance=lambda k: None)
    estimate = exact_kl(
        model,
        reference,
        tokenizer,
        texts,
        answers,
        config.kl_batch_size,
        advance=lambda k: progress.advance(task, k),
    )
    return {**estimate.to_dict(), "sampling": EXACT_KL_SAMPLING, "num_answers": len(answers)}


def evaluate_one(
    spec: ModelSpec,
    name: str,
    rows: list[dict[str, Any]],
    config: EvalConfig,
    scorer: RewardScorer,
    test_scorer: RewardScorer | None,
    references: dict[str, PreTrainedModel],
    console: Console,
) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    with console.status(f"{name}: loading"):
        model, tokenizer, reference, _ = load_policy(
            spec.path, config.dtype, config.reference_model, references
        )
    seconds["load"] = time.perf_counter() - t0
    prompts, stats = prepare_prompts(
        rows,
        tokenizer,
        config.max_prompt_length,
        config.dataset_name,
        apply_chat_template=chat_template_for(spec, config),
    )
    progress = progress_bar(console, transient=True)
    with progress:
        task = progress.add_task(f"{name}: sampling", total=len(prompts))
        t0 = time.perf_counter()
        set_seed(config.seed)
        completions = sample_completions(
            model,
            tokenizer,
            [p.text for p in prompts],
            config,
            advance=lambda k: progress.advance(task, k),
        )
        seconds["generate"] = time.perf_counter() - t0
        progress.update(task, description=f"{name}: scoring")
        t0 = time.perf_counter()
        scores = score_completions(scorer, prompts, completions)
        test_scores = score_completions(test_scorer, prompts, completions)
        rewards = scores.total
        test_rewards = test_scores.total if test_scores is not None else None
        seconds["score"] = time.perf_counter() - t0
        kl = None
        _, kl_source = reference_name(spec, config.reference_model)
        if reference is not None and completions:
            progress.update(task, description=f"{name}: KL", completed=0, total=len(completions))
            t0 = time.perf_counter()
            kl = kl_estimate(
                model,
                reference,
                tokenizer,
                [p.text for p in prompts],
                completions,
                config.kl_batch_size,
                advance=lambda k: progress.advance(task, k),
            )
            seconds["kl"] = time.perf_counter() - t0
        kl_exact = None
        if reference is not None and completions and config.exact_kl:
            progress.update(task, description=f"{name}: exact KL", completed=0)
            t0 = time.perf_counter()
            kl_exact = exact_kl_of(model, reference, tokenizer, prompts, config, progress, task)
            seconds["kl_exact"] = time.perf_counter() - t0
        entropy = None
        if completions:
            progress.update(
                task, description=f"{name}: entropy", completed=0, total=len(completions)
            )
            t0 = time.perf_counter()
            entropy = entropy_estimate(
                model,
                tokenizer,
                [p.text for p in prompts],
                completions,
                config.kl_batch_size,
                advance=lambda k: progress.advance(task, k),
            )
            seconds["entropy"] = time.perf_counter() - t0
        progress.update(task, description=f"{name}: METEOR")
        t0 = time.perf_counter()
        meteor = meteor_across_prompts(completions, config.meteor_pairs, config.seed, prompts)
        seconds["meteor"] = time.perf_counter() - t0
    metrics = summarize(
        [c.text for c in completions],
        [c.num_tokens for c in completions],
        [c.clipped for c in completions],
        rewards,
        test_rewards,
        kl,
        meteor,
        entropy,
    )
    if kl is None:
        reason = kl_source if reference is None else "no completions to score"
        metrics["kl"] = {
            "estimator": KL_ESTIMATOR,
            "reference": None,
            "per_sequence": None,
            "per_token": None,
            "reason": reason,
        }
    else:
        metrics["kl"].update(reference=kl_source, reason=None)
    metrics["kl_exact"] = kl_exact or {
        "per_token": None,
        "per_sequence": None,
        "reason": metrics["kl"]["reason"] or "exact_kl is off",
    }
    per_func = {k: mean_se(v)["mean"] for k, v in scores.per_func.items()}
    safe = safe_name(name)
    path = Path(config.output_dir) / f"completions-{safe}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i, c in enumerate(completions):
            row = {
                "prompt": question_text(prompts[c.prompt_index].prompt),
                "completion": c.text,
                "model": name,
                "reward": rewards[i],
                "test_reward": test_rewards[i] if test_rewards is not None else None,
                "prompt_index": c.prompt_index,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    del model, reference
    gc.collect()
    return {
        "path": spec.path,
        "kind": spec.kind,
        "base_model": spec.base_model,
        "num_prompts": len(prompts),
        "apply_chat_template": chat_template_for(spec, config),
        "num_prompts_dropped": stats.num_empty + stats.num_too_long,
        "num_empty_completions": len(prompts) * config.num_generations - len(completions),
        **metrics,
        "rewards_per_func": per_func,
        "completions_file": path.name,
        "seconds": seconds,
    }


def _fmt(stat: dict[str, Any] | None, digits: int = 3, sign: bool = False) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    fmt = f"{'+' if sign else ''}.{digits}f"
    text = format(stat["mean"], fmt)
    return text + (f" ± {stat['se']:.{digits}f}" if stat.get("se") is not None else "")


def results_table(result: dict[str, Any]) -> Table:
    """One row per model: the numbers a person compares first."""
    table = Table(title="superhf eval", title_justify="left")
    for column in (
        "model",
        "reward",
        "test reward",
        "KL est./tok",
        "exact KL/tok",
        "METEOR [95% CI]",
        "entropy",
        "tokens",
        "clipped",
        "dist-1",
        "dist-2",
    ):
        if column == "model":  # a long name folds; numbers are never cut
            table.add_column(column, justify="left", overflow="fold")
        else:
            table.add_column(column, justify="right", no_wrap=True)
    for name, m in result["models"].items():
        meteor = m.get("meteor")
        meteor_text = (
            f"{meteor['mean']:.3f} [{meteor['ci_low']:.3f}, {meteor['ci_high']:.3f}]"
            if meteor and meteor.get("mean") is not None
            else "n/a"
        )
        length = m["length"]

        def num(x: float | None, fmt: str = ".3f") -> str:
            missing = x is None or (isinstance(x, float) and math.isnan(x))
            return "n/a" if missing else format(x, fmt)

        table.add_row(
            name,
            _fmt(m["reward"], sign=True),
            _fmt(m["test_reward"], sign=True),
            _fmt(m["kl"].get("per_token"), 4),
            _fmt((m.get("kl_exact") or {}).get("per_token"), 4),
            meteor_text,
            _fmt(m.get("entropy"), 2),
            num(length["mean_tokens"], ".1f"),
            num(length["clipped_fraction"], ".2f"),
            num(m["distinct_1"]),
            num(m["distinct_2"]),
        )
    return table
