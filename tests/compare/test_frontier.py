"""Where SuperHF's arms sit against each RL method's reward-KL frontier: the best point of that
method at the arm's KL or lower, above / below / left, and which options reach a frontier the
default misses, with their diversity beside the default's."""

from __future__ import annotations

from superhf.compare import frontier
from superhf.compare.config import SUPERHF_DEFAULT_BETA
from superhf.compare.report import _frontier


def _group(method, kl, reward, lr=5e-4, variant="", beta=0.0, chosen=True, d2=0.8, seeds=5):
    return {
        "method": method,
        "variant": variant,
        "beta": beta,
        "label": f"{method}{f'[{variant}]' if variant else ''} b={beta:g}",
        "learning_rate": lr,
        "seeds": list(range(seeds)),
        "chosen_learning_rate": chosen,
        "kl_exact_per_token": {"mean": kl},
        "test_reward": {"mean": reward},
        "distinct_2": {"mean": d2},
    }


GROUPS = [
    _group("superhf", 0.05, 1.0, beta=SUPERHF_DEFAULT_BETA, d2=0.80),
    _group("superhf", 0.30, 2.5, variant="advantage", beta=SUPERHF_DEFAULT_BETA, d2=0.40),
    _group("superhf", 0.01, 0.2, variant="epochs", beta=SUPERHF_DEFAULT_BETA),
    # not at its chosen rate: no row of its own
    _group("superhf", 0.50, 9.0, lr=2e-3, beta=SUPERHF_DEFAULT_BETA, chosen=False),
    # GRPO's points, every rate: the frontier at KL 0.05 is 1.5 (the 0.04 point), at 0.3 it is 2.0
    _group("grpo", 0.04, 1.5, lr=1e-4, chosen=False),
    _group("grpo", 0.20, 2.0, lr=5e-4),
    _group("grpo", 0.90, 4.0, lr=2e-3, chosen=False),
    _group("rloo", 0.02, 0.1, lr=1e-4),
    _group("best_of_n", 0.0, 3.0),  # not an RL method: never on a frontier
]


def test_each_arm_is_read_against_the_best_point_at_its_kl_or_lower():
    rows = frontier.positions(GROUPS)
    by = {(r["arm"]["label"], r["method"]): r for r in rows}
    assert {m for _, m in by} == {"grpo", "rloo"}
    assert len(rows) == 3 * 2  # three chosen SuperHF arms x two RL methods
    default = by[(f"superhf b={SUPERHF_DEFAULT_BETA:g}", "grpo")]
    assert default["default"] and default["position"] == "below"
    assert default["frontier_point"]["learning_rate"] == 1e-4  # not the 2.0 point at KL 0.2
    assert abs(default["gap"] - (1.0 - 1.5)) < 1e-12
    advantage = by[(f"superhf[advantage] b={SUPERHF_DEFAULT_BETA:g}", "grpo")]
    assert advantage["position"] == "above" and abs(advantage["gap"] - 0.5) < 1e-12
    epochs = by[(f"superhf[epochs] b={SUPERHF_DEFAULT_BETA:g}", "grpo")]
    assert epochs["position"] == "left" and epochs["frontier_point"] is None
    assert by[(f"superhf b={SUPERHF_DEFAULT_BETA:g}", "rloo")]["position"] == "above"


def test_the_report_says_which_option_reaches_the_frontier_and_its_diversity():
    lines = _frontier(frontier.positions(GROUPS))
    text = "\n".join(lines)
    assert "sits **below** GRPO's frontier by -0.500" in text
    assert "sits **above** RLOO's frontier by +0.900" in text
    assert "superhf[advantage]" in text and "distinct-2 0.400 against the default's 0.800" in text
    assert "| left |" in text  # the epochs arm moved less than every GRPO point
    without = [g for g in GROUPS if g.get("variant") != "advantage"]
    assert "None of SuperHF's other arms reaches GRPO's frontier." in _frontier(
        frontier.positions(without)
    )
    assert _frontier(frontier.positions([g for g in GROUPS if g["method"] == "superhf"])) == []
