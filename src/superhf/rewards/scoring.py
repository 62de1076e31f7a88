"""Rewards: reward models, Python callables, and their weighted sum.

A reward function follows TRL's signature, `f(prompts, completions, **columns) -> list[float]`:
`prompts` as the dataset holds them (strings or role/content conversations), `completions` as
strings, and every other dataset column as a keyword list aligned with the samples.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from superhf.data import HH_ASSISTANT, HH_HUMAN
from superhf.errors import RewardError

RewardFunc = Callable[..., list[float]]


Messages = list[dict[str, str]]


def conversation_to_hh(messages: Messages) -> str:
    """Render a conversation the way HH transcripts look, for reward models without a template."""
    parts = []
    for m in messages:
        tag = HH_HUMAN if m["role"] in ("user", "system") else HH_ASSISTANT
        parts.append(f"{tag} {m['content']}")
    return "".join(parts)


def is_hh_prompt(prompt: str) -> bool:
    """An HH-form prompt ("...\n\nHuman: q\n\nAssistant:"), whose answer follows a space."""
    return prompt.rstrip().endswith(HH_ASSISTANT)


def split_hh_transcript(transcript: str) -> tuple[str, str] | None:
    """(prompt up to the last "\n\nAssistant:", final answer), or None without such a turn."""
    cut = transcript.rfind(HH_ASSISTANT)
    if cut < 0:
        return None
    cut += len(HH_ASSISTANT)
    return transcript[:cut], transcript[cut:]


def _join_hh(prompt: str, answer: str) -> str:
    """As the HH files write it: "...Assistant: answer", one space, whatever the policy emitted."""
    return f"{prompt.rstrip()} {answer.lstrip()}"


def _render_messages(messages: Messages, tokenizer: Any) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    if messages and messages[-1]["role"] == "assistant":
        return _join_hh(conversation_to_hh(messages[:-1]) + HH_ASSISTANT, messages[-1]["content"])
    return conversation_to_hh(messages)


def reward_model_text(
    prompt: str | Messages | None, completion: str | Messages, tokenizer: Any = None
) -> str:
    """The text a reward model reads for one answer: one rendering for scoring and RM training.

    `superhf reward train` renders its pairs here and `RewardModel` renders what it scores here,
    so a reward model scores text in exactly the format it was trained on:

    - a plain string prompt: prompt + completion (TRL's convention);
    - an HH-form prompt ("\n\nHuman: q\n\nAssistant:"): prompt, one space, the answer with its
      leading whitespace dropped, as in the HH transcripts;
    - a conversation prompt (role/content messages): the conversation plus the answer as the
      assistant's turn, through the reward model tokenizer's chat template, or in the HH form
      when it has none;
    - no prompt (HH transcripts, TRL implicit-prompt rows): `completion` is the whole text or
      conversation; an HH transcript is split at its last "\n\nAssistant:" and rendered as
      the HH-form prompt and its answer.
    """
    if prompt is None:
        if isinstance(completion, str):
            split = split_hh_transcript(completion)
            return completion if split is None else _join_hh(*split)
        return _render_messages(list(completion), tokenizer)
    if isinstance(prompt, str):
        if not isinstance(completion, str):
            raise TypeError("a string prompt needs a string completion")
        return _join_hh(prompt, completion) if is_hh_prompt(prompt) else prompt + completion
    answer = (
        [{"role": "assistant", "content": completion}]
        if isinstance(completion, str)
        else list(completion)
    )
    return _render_messages([*prompt, *answer], tokenizer)


class RewardModel:
    """A one-logit sequence classifier scoring `reward_model_text(prompt, completion)`.

    Texts are right-padded and the model pools its last real token, so a score does not depend
    on what else is in the batch.
    """

    def __init__(self, name_or_path: str, batch_size: int = 32, device: str | torch.device = "cpu"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.__name__ = Path(name_or_path).name or str(name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"  # keep the completion if a text is too long
        self.model = AutoModelForSequenceClassification.from_pretrained(name_or_path)
        if self.model.config.num_labels != 1:
            raise RewardError(
                f"reward model {name_or_path!r} has {self.model.config.num_labels} labels; "
                "a reward model needs exactly one (num_labels=1)."
            )
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.requires_grad_(False).eval().to(device)
        self.batch_size = batch_size
        self.max_length = getattr(self.model.config, "max_position_embeddings", None) or 2048

    def text(self, prompt: str | Messages, completion: str) -> str:
        """What this model reads: the rendering `superhf reward train` trains on."""
        return reward_model_text(prompt, completion, self.tokenizer)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **_: Any) -> list[float]:
        texts = [self.text(p, c) for p, c in zip(prompts, completions, strict=True)]
        scores: list[float] = []
        device = next(self.model.parameters()).device
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[i : i + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            scores.extend(self.model(**batch).logits[:, 0].float().tolist())
        return scores


def _import_from_here(module_name: str) -> Any:
    """Import a module, also from the working directory, as `python -m` and uvicorn do.

    A console script's path does not hold the directory it was started in, so a reward in
    `bench/` or the user's own folder would not import otherwise."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        here = os.getcwd()
        if here in sys.path:
            raise
        sys.path.insert(0, here)
        return importlib.import_module(module_name)


def _import_callable(spec: str) -> RewardFunc:
    module_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    try:
        module = _import_from_here(module_name)
        obj = getattr(module, attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise RewardError(
            f"reward_funcs: cannot import {spec!r} ({err}). Give a reward model folder, a hub "
            "id, `default`, or a callable as `package.module:function`."
        ) from err
    if isinstance(obj, type):  # a class: its instances are the reward functions
        obj = obj()
    if not callable(obj):
        raise RewardError(f"reward_funcs: {spec!r} is not callable.")
    return obj


def load_reward_func(spec: str, batch_size: int = 32, device: str = "cpu") -> RewardFunc:
    """Turn a command-line reward spec into a reward function."""
    if spec == "default":
        from superhf.rewards.default import DefaultReward

        return DefaultReward(batch_size=batch_size)
    if ":" in spec:
        return _import_callable(spec)
    from superhf.rewards.default import EmbeddingHeadReward
    from superhf.rewards.harmlessness import is_head_folder

    if is_head_folder(spec):  # `superhf reward train --from_embeddings`
        return EmbeddingHeadReward(spec, batch_size=batch_size, device=device)
    if Path(spec).is_dir() or "/" in spec:
        return RewardModel(spec, batch_size=batch_size, device=device)
    return _import_callable(spec)


def load_reward_funcs(
    specs: Sequence[str | RewardFunc],
    weights: Sequence[float] | None = None,
    batch_size: int = 32,
    device: str = "cpu",
) -> tuple[list[RewardFunc], list[float]]:
    """Load every spec; `default` becomes its components (relevance, toxicity, repetition),
    each weighted, so that each is logged on its own."""
    weights = list(weights) if weights is not None else [1.0] * len(specs)
    funcs: list[RewardFunc] = []
    func_weights: list[float] = []
    for spec, weight in zip(specs, weights, strict=True):
        func = load_reward_func(spec, batch_size, device) if isinstance(spec, str) else spec
        if spec == "default":
            funcs += func.reward_funcs()
            func_weights += [weight * w for w in func.reward_weights()]
        else:
            funcs.append(func)
            func_weights.append(weight)
    return funcs, func_weights


def reward_func_name(func: RewardFunc) -> str:
    return getattr(func, "__name__", None) or type(func).__name__


@dataclass
class Scores:
    total: list[float]
    """Weighted sum of the reward functions, minus the length penalty: what the filter ranks."""
    per_func: dict[str, list[float]]


class RewardScorer:
    """Calls each reward function on the same samples and combines them with weights.

    Example:
        >>> funcs, weights = load_reward_funcs(["default", "my_rewards:brevity"], [1.0, 0.2])
        >>> scores = RewardScorer(funcs, weights)(prompts, completions, {"source": sources})
        >>> scores.total[0], scores.per_func["relevance"][0]
    """

    def __init__(
        self,
        funcs: Sequence[RewardFunc],
        weights: Sequence[float] | None = None,
        length_penalty: float = 0.0,
    ):
        self.funcs = list(funcs)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.funcs)
        if len(self.weights) != len(self.funcs):
            raise ValueError(f"{len(self.weights)} weights for {len(self.funcs)} reward functions")
        self.names = []
        for func in self.funcs:  # make names unique for logging
            name = reward_func_name(func)
            self.names.append(name if name not in self.names else f"{name}_{len(self.names)}")
        self.length_penalty = length_penalty

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[str],
        columns: dict[str, list[Any]] | None = None,
    ) -> Scores:
        """Score every sample with every reward function.

        Args:
            prompts: each sample's prompt as the dataset holds it (string, HH-form string or
                role/content messages).
            completions: each sample's text.
            columns: the dataset's other columns, one value per sample, passed to each reward
                function as keyword arguments (TRL's convention).

        Returns:
            `Scores`: `total` (the weighted sum, minus the length penalty: what the filter
            ranks) and `per_func` (each function's values, by unique name).

        Raises:
            RewardError: naming the function (and the sample) that failed or returned a wrong
                count or a non-finite value.
        """
        columns = columns or {}
        total = [0.0] * len(completions)
        per_func: dict[str, list[float]] = {}
        for name, func, weight in zip(self.names, self.funcs, self.weights, strict=True):
            try:
                values = func(list(prompts), list(completions), **columns)
            except Exception as err:
                raise RewardError(f"reward function {name!r} raised {err!r}") from err
            values = [float(v) for v in values]
            if len(values) != len(completions):
                raise RewardError(
                    f"reward function {name!r} returned {len(values)} scores for "
                    f"{len(completions)} completions."
                )
            for i, v in enumerate(values):
                if not math.isfinite(v):
                    raise RewardError(
                        f"reward function {name!r} returned {v} for completion "
                        f"{completions[i]!r} of prompt {prompts[i]!r}."
                    )
                total[i] += weight * v
            per_func[name] = values
        if self.length_penalty:
            total = [
                t - self.length_penalty * math.log(max(len(c), 1))
                for t, c in zip(total, completions, strict=True)
            ]
        return Scores(total, per_func)
