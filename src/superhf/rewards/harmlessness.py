"""Linear reward heads on MiniLM answer embeddings, learned from human preference pairs.

The default reward's ``harmlessness`` component is such a head: a 384 -> 1 linear map of the
all-MiniLM-L6-v2 embedding of the answer alone, fitted with the Bradley-Terry loss
``-log sigmoid(s(chosen) - s(rejected))`` on Anthropic HH-RLHF harmless-base pairs (see
``scripts/train_harmlessness_head.py`` and ``harmlessness_head.json`` beside the weights).
``superhf reward train --from_embeddings`` fits the same kind of head on a user's own pairs.

Features come from ``DefaultReward.answer_embeddings``, the very code that embeds answers at
scoring time, so a head is never trained on a different text format than the one it scores.

A head is stored as ``NAME.safetensors`` (``weight`` [1, 384], ``bias`` [1], float32) and
``NAME.json`` beside it: how it was made, its held-out accuracy, and ``score_low`` /
``score_high``, the 5th and 95th percentiles of its raw scores on the training answers, which
``bounded`` uses to map a raw score to [-1, 1].
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from superhf import stats

__all__ = [
    "HEAD_KIND",
    "FOLDER_HEAD_NAME",
    "EmbeddingHeadReward",
    "LinearHead",
    "answer_pairs",
    "fit_linear_head",
    "is_head_folder",
    "pairwise_accuracy",
    "shipped_head_path",
    "split_hh_transcript",
    "wilson_interval",
]

HH_ASSISTANT_TURN = "\n\nAssistant:"
# ``kind`` in a head's JSON; `load_reward_func` recognises a folder by it.
HEAD_KIND = "superhf-embedding-head"
# File stem of the head inside a `superhf reward train --from_embeddings` folder.
FOLDER_HEAD_NAME = "embedding_head"
# The percentiles of the training answers' raw scores that map to -1 and +1.
LOW_PERCENTILE = 5.0
HIGH_PERCENTILE = 95.0
# Full-batch AdamW settings of the fit. Measured on HH harmless-base halves: a linear head on the
# answer alone held out as well as one with prompt features, and better than a 64-unit MLP.
FIT_STEPS = 300
FIT_LEARNING_RATE = 1e-3
FIT_WEIGHT_DECAY = 1e-2


@dataclass
class LinearHead:
    """``score = embedding @ weight + bias``, plus the ramp that bounds it."""

    weight: np.ndarray  # (dim,) float64
    bias: float
    score_low: float
    score_high: float
    info: dict[str, Any] = field(default_factory=dict)

    def raw(self, embeddings: np.ndarray) -> np.ndarray:
        """Raw Bradley-Terry scores of unit-norm embeddings, shape (n, dim) -> (n,)."""
        return np.asarray(embeddings, dtype=np.float64) @ self.weight + self.bias

    def bounded(self, embeddings: np.ndarray) -> np.ndarray:
        """Scores in [-1, 1]: -1 at or below ``score_low``, +1 at or above ``score_high``."""
        span = self.score_high - self.score_low
        return 2.0 * np.clip((self.raw(embeddings) - self.score_low) / span, 0.0, 1.0) - 1.0

    def save(self, path: str | Path) -> None:
        """``path`` (.safetensors) and the JSON beside it."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            "weight": torch.tensor(self.weight, dtype=torch.float32)[None].contiguous(),
            "bias": torch.tensor([self.bias], dtype=torch.float32),
        }
        save_file(tensors, path)
        info = {**self.info, "score_low": self.score_low, "score_high": self.score_high}
        path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LinearHead:
        """Read ``path`` (.safetensors) and its JSON; float32 weights, maths in float64."""
        from safetensors.torch import load_file

        path = Path(path)
        tensors = load_file(path)
        info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        return cls(
            weight=tensors["weight"][0].double().numpy(),
            bias=float(tensors["bias"][0]),
            score_low=float(info["score_low"]),
            score_high=float(info["score_high"]),
            info=info,
        )


def shipped_head_path() -> Path:
    """The harmlessness head that ships in the package (package data, found offline)."""
    return Path(str(resources.files("superhf.rewards") / "harmlessness_head.safetensors"))


# --- data ----------------------------------------------------------------------------------


def split_hh_transcript(transcript: str) -> tuple[str, str]:
    """(context, answer): an HH transcript cut at its last "\\n\\nAssistant:" turn."""
    cut = transcript.rfind(HH_ASSISTANT_TURN)
    if cut < 0:
        return "", transcript.strip()
    return transcript[:cut], transcript[cut + len(HH_ASSISTANT_TURN) :].strip()


def _answer(prompt: Any, response: Any) -> str | None:
    """The answer of one side of a pair: what follows the prompt (None if unusable)."""
    from superhf.rewards.default import completion_text

    if isinstance(response, str):
        return split_hh_transcript(response)[1] if prompt is None else response.strip()
    if isinstance(response, list) and all(isinstance(m, dict) for m in response) and response:
        return completion_text(response).strip()
    return None


def answer_pairs(rows: Sequence[dict[str, Any]]) -> tuple[list[tuple[str, str]], int]:
    """(chosen answer, rejected answer) for every usable row, and how many rows were skipped.

    Rows are HH transcripts (``chosen``/``rejected``, the answer after the last Assistant
    turn) or TRL pairs (``prompt``/``chosen``/``rejected``, strings or conversations). Rows
    missing a side, with an empty answer, or with the same answer on both sides are skipped:
    they carry no preference between answers.
    """
    pairs: list[tuple[str, str]] = []
    for row in rows:
        prompt = row.get("prompt")
        chosen, rejected = _answer(prompt, row.get("chosen")), _answer(prompt, row.get("rejected"))
        if chosen and rejected and chosen != rejected:
            pairs.append((chosen, rejected))
    return pairs, len(rows) - len(pairs)


# --- fitting and evaluating ------------------------------------------------------------------


def fit_linear_head(
    chosen: np.ndarray,
    rejected: np.ndarray,
    seed: int,
    steps: int = FIT_STEPS,
    learning_rate: float = FIT_LEARNING_RATE,
    weight_decay: float = FIT_WEIGHT_DECAY,
) -> LinearHead:
    """Bradley-Terry fit of ``score = x @ w + b`` on paired embeddings, full batch, seeded.

    In float64, so float rounding that varies with the thread count stays far below what could
    flip a pair. The bias cancels in the Bradley-Terry difference, so it is 0.
    ``score_low``/``score_high`` are percentiles of the fitted scores of all training answers.
    """
    generator = torch.Generator().manual_seed(seed)
    x_c = torch.as_tensor(chosen, dtype=torch.float64)
    x_r = torch.as_tensor(rejected, dtype=torch.float64)
    dim = x_c.shape[1]
    bound = 1.0 / math.sqrt(dim)  # nn.Linear's initialisation
    weight = (
        (torch.rand(dim, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    ).requires_grad_()
    optimizer = torch.optim.AdamW([weight], lr=learning_rate, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = -F.logsigmoid((x_c - x_r) @ weight).mean()
        loss.backward()
        optimizer.step()
    w = weight.detach().to(torch.float32).double().numpy()  # what the float32 file will hold
    train_scores = np.concatenate([chosen @ w, rejected @ w])
    return LinearHead(
        weight=w,
        bias=0.0,
        score_low=float(np.percentile(train_scores, LOW_PERCENTILE)),
        score_high=float(np.percentile(train_scores, HIGH_PERCENTILE)),
        info={"final_train_loss": float(loss.detach())},
    )


def pairwise_accuracy(head: LinearHead, chosen: np.ndarray, rejected: np.ndarray) -> float:
    """Share of pairs whose chosen answer scores higher (ties count half)."""
    c, r = head.raw(chosen), head.raw(rejected)
    return float(np.mean((c > r) + 0.5 * (c == r)))


def wilson_interval(accuracy: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy measured on ``n`` independent pairs."""
    return (0.0, 1.0) if n == 0 else stats.wilson_interval(accuracy * n, n)


# --- a head folder as a reward function --------------------------------------------------------


def is_head_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``superhf reward train --from_embeddings``."""
    meta = Path(path) / f"{FOLDER_HEAD_NAME}.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("kind") == HEAD_KIND
    except (OSError, ValueError):
        return False


class EmbeddingHeadReward:
    """A head folder as a TRL-style reward function: the raw score of each answer.

    The prompt is not read (the head scores the answer alone); an empty answer gets the
    head's ``score_low``, the 5th percentile of its training answers.
    """

    def __init__(self, folder: str | Path, batch_size: int = 32, device: str = "cpu") -> None:
        from superhf.rewards.default import DefaultReward

        self.__name__ = Path(folder).resolve().name
        self.head = LinearHead.load(Path(folder) / f"{FOLDER_HEAD_NAME}.safetensors")
        self.embedder = DefaultReward(batch_size=batch_size, device=device)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        from superhf.rewards.default import completion_text

        answers = [completion_text(c) for c in completions]
        emb = self.embedder.answer_embeddings(answers)
        raw = self.head.raw(emb)
        return [
            float(s) if a.strip() else self.head.score_low
            for s, a in zip(raw, answers, strict=True)
        ]
