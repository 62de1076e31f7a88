"""Linear reward heads on a frozen judge's features, learned from human preference pairs.

The default reward's ``harmlessness`` component is such a head: a 576 -> 1 linear map of the
SmolLM2-135M-Instruct judge's last hidden layer, averaged over the answer's first 64 tokens
with the question before them as context (the judge the default reward already runs for its
``unfinished_penalty``, so the head costs almost nothing at scoring time). It is fitted with
the Bradley-Terry loss ``-log sigmoid(s(chosen) - s(rejected))`` plus an L2 penalty on
Anthropic HH-RLHF harmless-base pairs (see ``scripts/train_harmlessness_head.py`` and
``harmlessness_head.json`` beside the weights). ``superhf reward train --from_embeddings``
fits the same kind of head on a user's own pairs.

Features come from ``DefaultReward.harmlessness_features``, the very code that computes them at
scoring time, so a head is never trained on a different text format than the one it scores.

A head is stored as ``NAME.safetensors`` (``weight`` [1, dim], ``bias`` [1], float32) and
``NAME.json`` beside it: how it was made, its held-out accuracy, and ``score_low`` /
``score_high``, the 5th and 95th percentiles of its raw scores on the training answers, which
``bounded`` uses to map a raw score to [-1, 1].
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from superhf import stats
from superhf.data import completion_text
from superhf.data import question_text as prompt_text

__all__ = [
    "FEATURES",
    "HEAD_KIND",
    "FOLDER_HEAD_NAME",
    "LinearHead",
    "answer_pairs",
    "fit_linear_head",
    "is_head_folder",
    "pair_features",
    "pairwise_accuracy",
    "shipped_head_path",
    "split_hh_transcript",
    "wilson_interval",
]

HH_ASSISTANT_TURN = "\n\nAssistant:"
# What a head's features are, recorded in its JSON.
FEATURES = (
    "SmolLM2-135M-Instruct judge (the default reward's), last hidden layer after the final norm, "
    "mean over the answer's first 64 tokens, the question before it as a one-turn chat"
)
# ``kind`` in a head's JSON; `load_reward_func` recognises a folder by it.
HEAD_KIND = "superhf-embedding-head"
# File stem of the head inside a `superhf reward train --from_embeddings` folder.
FOLDER_HEAD_NAME = "embedding_head"
# The percentiles of the training answers' raw scores that map to -1 and +1.
LOW_PERCENTILE = 5.0
HIGH_PERCENTILE = 95.0
# L2 penalty of the fit, on weights of standardised features. Measured on the first half of HH
# harmless-base (fit on its first 80%, checked on the rest): 1e-3 to 1e-2 overfit (train 0.84-0.91,
# validation 0.55-0.56); 0.3 to 3 held out alike (0.60-0.63 on 231 pairs).
FIT_L2 = 0.3


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


def _side(prompt: Any, response: Any) -> tuple[str, str] | None:
    """(question, answer) of one side of a pair (None if unusable)."""
    if isinstance(response, str):
        if prompt is None:
            context, answer = split_hh_transcript(response)
            return prompt_text(context + HH_ASSISTANT_TURN), answer
        return prompt_text(prompt), response.strip()
    if isinstance(response, list) and all(isinstance(m, dict) for m in response) and response:
        return prompt_text(prompt if prompt is not None else response), completion_text(
            response
        ).strip()
    return None


def answer_pairs(rows: Sequence[dict[str, Any]]) -> tuple[list[tuple[str, str, str]], int]:
    """(question, chosen answer, rejected answer) for every usable row, and how many were skipped.

    Rows are HH transcripts (``chosen``/``rejected``; the answer is the text after the last
    Assistant turn, the question the human turn before it) or TRL pairs
    (``prompt``/``chosen``/``rejected``, strings or conversations). Rows missing a side, with an
    empty answer, or with the same answer on both sides are skipped: they carry no preference
    between answers.
    """
    pairs: list[tuple[str, str, str]] = []
    for row in rows:
        prompt = row.get("prompt")
        chosen, rejected = _side(prompt, row.get("chosen")), _side(prompt, row.get("rejected"))
        if chosen and rejected and chosen[1] and rejected[1] and chosen[1] != rejected[1]:
            pairs.append((chosen[0], chosen[1], rejected[1]))
    return pairs, len(rows) - len(pairs)


def pair_features(embedder: Any, pairs: Sequence[tuple[str, str, str]]) -> tuple[Any, Any]:
    """(chosen, rejected) feature matrices of ``answer_pairs`` output, via ``embedder``'s
    ``harmlessness_features`` (a ``DefaultReward``), in one pass so each question is read once."""
    questions = [q for q, _, _ in pairs]
    features = embedder.harmlessness_features(
        questions + questions, [c for _, c, _ in pairs] + [r for _, _, r in pairs]
    )
    return features[: len(pairs)], features[len(pairs) :]


# --- fitting and evaluating ------------------------------------------------------------------


def fit_linear_head(chosen: np.ndarray, rejected: np.ndarray, l2: float = FIT_L2) -> LinearHead:
    """Bradley-Terry fit of ``score = x @ w + b`` on paired features, L2-penalised, deterministic.

    Features are standardised (mean and spread of all training answers) and the penalty
    ``l2 * |w|^2`` applies in that space; the standardisation is folded into ``weight`` and
    ``bias``, so the stored head reads raw features. Full-batch L-BFGS from zero in float64, so
    thread counts cannot change which side of a pair wins. ``score_low``/``score_high`` are
    percentiles of the fitted scores of all training answers.
    """
    both = np.concatenate([chosen, rejected])
    mean, spread = both.mean(0), both.std(0) + 1e-6
    x_c = torch.as_tensor((chosen - mean) / spread, dtype=torch.float64)
    x_r = torch.as_tensor((rejected - mean) / spread, dtype=torch.float64)
    weight = torch.zeros(x_c.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = -F.logsigmoid((x_c - x_r) @ weight).mean() + l2 * (weight @ weight)
        loss.backward()
        return loss

    optimizer.step(closure)
    scaled = weight.detach().numpy() / spread
    w = torch.tensor(scaled, dtype=torch.float32).double().numpy()  # what the file will hold
    bias = float(np.float32(-mean @ w))
    train_scores = both @ w + bias
    fit_loss = float(-F.logsigmoid(torch.as_tensor((chosen - rejected) @ w)).mean())
    return LinearHead(
        weight=w,
        bias=bias,
        score_low=float(np.percentile(train_scores, LOW_PERCENTILE)),
        score_high=float(np.percentile(train_scores, HIGH_PERCENTILE)),
        info={"final_train_loss": fit_loss, "l2": l2},
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
