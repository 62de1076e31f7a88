"""What shapes each method's update, read from what a run ran with, and the check that refuses
a comparison where it differs (docs/COMPARE.md, "Matched updates").

Two methods given the same prompts, reward and token budget can still differ in how far each
update moves the policy: how many optimizer steps a generation round takes, the learning rate
of the first update (transformers' warm-up trains step 0 at rate 0, SuperHF's schedule at
learning_rate / warmup_steps), gradient clipping, dropout while sampling and while training,
weight decay. `effective` reads them from a run's settings.json (the planned one before a run,
the written one after), `mismatches` names every run whose matched settings differ from the
others', and `check_matched` refuses with the fix.

The learning rate and beta are not matched: each method's are swept and chosen alike. What a
method's definition forces is listed (`BY_DEFINITION`) instead of checked: PPO's epochs and
minibatches over each batch; a SuperHF variant's own option (e.g. `num_train_epochs: 3`).
"""

from __future__ import annotations

import math
from typing import Any

from superhf.errors import ConfigError

CHECKED_METHODS = ("superhf", "grpo", "rloo")
"""Methods that sample and update in rounds, each round under the settings below."""

MATCHED = {
    "optimizer_steps_per_round": "optimizer steps per generation round (SuperHF: per iteration)",
    "lr_scheduler_type": "transformers schedule name",
    "warmup_steps": "warm-up updates",
    "first_update_lr_share": "learning rate of the first update, as a share of learning_rate",
    "max_grad_norm": "gradient clipping to this global norm (0: none)",
    "dropout_while_sampling": "LoRA dropout active while the training samples are drawn",
    "dropout_while_training": "LoRA dropout active in the update's forward passes",
    "weight_decay": "AdamW weight decay",
}
"""Every setting that must be equal across the methods' runs, with what it means."""

SOURCES = {
    "optimizer_steps_per_round": {
        "num_train_epochs",
        "num_kept_per_prompt",
        "negative_weight",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
    },
}
"""SuperHF options a variant may set that change a matched setting (the variant's definition)."""

BY_DEFINITION = {
    "ppo": "PPO takes num_ppo_epochs x num_mini_batches steps on each batch, on TRL 1.12's "
    "own loop and schedule: shown, not checked",
    "sft": "no sampling rounds: not checked",
    "best_of_n": "no training: not checked",
}


def first_update_lr_share(scheduler: str, warmup_steps: int, shifted: bool) -> float:
    """The first update's rate over learning_rate. transformers' warm-up starts at 0;
    SuperHF's `iteration_scheduler` moves it one step earlier (1 / warmup_steps)."""
    if warmup_steps <= 0 or scheduler == "constant":  # "constant" ignores warmup_steps
        return 1.0
    return 1.0 / warmup_steps if shifted else 0.0


def _superhf(config: dict[str, Any]) -> dict[str, Any]:
    rows_per_prompt = min(
        config["num_kept_per_prompt"] + (1 if config["negative_weight"] > 0 else 0),
        config["num_generations"],
    )
    minibatches = math.ceil(
        config["prompts_per_iteration"] * rows_per_prompt / config["per_device_train_batch_size"]
    )
    steps = math.ceil(minibatches / config["gradient_accumulation_steps"])
    dropout = float(config["lora_dropout"]) if config.get("use_peft", True) else 0.0
    return {
        "optimizer_steps_per_round": steps * config["num_train_epochs"],
        "lr_scheduler_type": config["lr_scheduler_type"],
        "warmup_steps": config["warmup_steps"],
        "first_update_lr_share": first_update_lr_share(
            config["lr_scheduler_type"], config["warmup_steps"], shifted=True
        ),
        "max_grad_norm": float(config.get("max_grad_norm") or 0.0),
        "dropout_while_sampling": 0.0,  # superhf.generation samples in eval mode
        "dropout_while_training": dropout,
        "weight_decay": config["weight_decay"],
    }


def _trl(settings: dict[str, Any]) -> dict[str, Any]:
    config, lora = settings["trl_config"], settings.get("lora") or {}
    per_round = config.get("generation_batch_size") or (
        config["per_device_train_batch_size"] * config.get("steps_per_generation", 1)
    )
    per_step = config["per_device_train_batch_size"] * config["gradient_accumulation_steps"]
    dropout = 0.0 if config.get("disable_dropout") else float(lora.get("lora_dropout", 0.0))
    return {
        "optimizer_steps_per_round": config.get("num_iterations", 1) * per_round // per_step,
        "lr_scheduler_type": config["lr_scheduler_type"],
        "warmup_steps": config["warmup_steps"],
        "first_update_lr_share": first_update_lr_share(
            config["lr_scheduler_type"],
            config["warmup_steps"],
            shifted=settings.get("lr_schedule") == "superhf.train.schedule.iteration_scheduler",
        ),
        "max_grad_norm": float(config.get("max_grad_norm") or 0.0),
        # TRL samples and trains in train mode: LoRA dropout on in both, unless disabled
        "dropout_while_sampling": dropout,
        "dropout_while_training": dropout,
        "weight_decay": config["weight_decay"],
    }


def effective(method: str, settings: dict[str, Any] | None) -> dict[str, Any] | None:
    """The matched settings of one run from its settings.json (None: a method without
    rounds, or nothing written)."""
    if not settings:
        return None
    if method == "superhf" and "config" in settings:
        return _superhf(settings["config"])
    if method in ("grpo", "rloo", "ppo") and "trl_config" in settings:
        out = _trl(settings)
        if method == "ppo":
            config = settings["trl_config"]
            out["optimizer_steps_per_round"] = config.get("num_ppo_epochs", 4) * config.get(
                "num_mini_batches", 1
            )
            out["first_update_lr_share"] = first_update_lr_share(
                config["lr_scheduler_type"], config["warmup_steps"], shifted=False
            )
        return out
    return None


def measured_steps_per_round(record: dict[str, Any]) -> float | None:
    """optimizer_steps / generation rounds of a finished run's record, as it ran (None if
    unknown). TRL counts a step per optimizer step, so its rounds are counted apart."""
    done = record.get("done") or {}
    steps = record.get("optimizer_steps")
    rounds = done.get("generation_rounds") or record.get("steps")
    return steps / rounds if steps is not None and rounds else None


def mismatches(
    runs: list[dict[str, Any]], variants: dict[str, dict[str, Any]] | None = None
) -> list[str]:
    """One line per matched setting on which the checked runs differ, naming the runs and
    their values. `runs`: {"name", "method", "variant", "update_settings"}; a SuperHF variant
    may differ on a setting its own options change (`SOURCES`)."""
    variants = variants or {}
    problems = []
    for key in MATCHED:
        values: dict[Any, list[str]] = {}
        for run in runs:
            settings = run.get("update_settings")
            if run["method"] not in CHECKED_METHODS or not settings:
                continue
            own = set(variants.get(run.get("variant") or "", {}))
            if run.get("variant") and own & SOURCES.get(key, set()):
                continue
            values.setdefault(settings.get(key), []).append(run["name"])
        if len(values) > 1:
            listed = "; ".join(
                f"{value!r}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                for value, names in values.items()
            )
            problems.append(f"{key} ({MATCHED[key]}) differs: {listed}")
    return problems


FIX = (
    "Set the setting once in the comparison config (max_grad_norm, lora_dropout, "
    "lr_scheduler_type, warmup_steps) rather than in one method's method_settings, or "
    "leave gradient_accumulation_steps and num_iterations to the harness, which makes each "
    "round one optimizer step; allow_mismatched_updates: true runs it anyway, marked."
)


def check_matched(runs: list[dict[str, Any]], variants: dict[str, dict[str, Any]]) -> None:
    """ConfigError listing every mismatch, with the fix."""
    problems = mismatches(runs, variants)
    if problems:
        raise ConfigError(
            "the methods' updates are not matched, so the comparison would favour one:\n  - "
            + "\n  - ".join(problems)
            + "\n"
            + FIX
        )


def settings_table(runs: list[dict[str, Any]]) -> str:
    """A markdown table: one row per (method, variant) and distinct settings, every matched
    setting, the measured steps per round, and what the method's definition forces."""
    keys = list(MATCHED)
    rows: dict[tuple, dict[str, Any]] = {}
    for run in runs:
        settings = run.get("update_settings")
        if not settings:
            continue
        arm = run["method"] + (f"[{run['variant']}]" if run.get("variant") else "")
        row_key = (arm, *(settings.get(k) for k in keys))
        row = rows.setdefault(row_key, {"arm": arm, "runs": 0, "measured": set(), **settings})
        row["runs"] += 1
        measured = measured_steps_per_round(run)
        if measured is not None:
            row["measured"].add(round(measured, 2))
        row["note"] = BY_DEFINITION.get(run["method"], "")
        if run.get("variant"):
            row["note"] = "a SuperHF option: may differ where the option changes it"
    header = ["run", "runs", *keys, "measured steps/round", "note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows.values():
        measured = ", ".join(f"{m:g}" for m in sorted(row["measured"])) or "n/a"
        cells = [row["arm"], str(row["runs"]), *(_cell(row.get(k)) for k in keys)]
        lines.append("| " + " | ".join([*cells, measured, row["note"]]) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
