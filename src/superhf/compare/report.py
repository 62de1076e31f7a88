"""report.md of a comparison: the task, the machine, the tables, the plots, what was skipped.

Written from results.json's dict only, so it can be redrawn without running anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from superhf.compare import frontier
from superhf.compare.results import label


def _stat(stat: dict[str, Any] | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['se']:.{digits}f}" if stat.get("se") is not None else "")


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _diverged(g: dict[str, Any]) -> str:
    rate = g["divergence_rate"]
    return "n/a" if rate is None else f"{rate:.0%}"


def _warned(g: dict[str, Any]) -> str:
    """Seeds whose monitor warned, of the seeds monitored (a results.json of before: n/a)."""
    monitored = g.get("monitored_runs")
    if monitored is None:
        return "n/a"
    return f"{g.get('reward_hacking_runs', 0)}/{monitored}" if monitored else "not monitored"


def _column(key: str, digits: int) -> Any:
    return lambda g: _stat(g[key], digits)


OUTCOME_COLUMNS = [
    ("test reward", _column("test_reward", 3)),
    ("train reward", _column("reward", 3)),
    ("METEOR", _column("meteor", 3)),
    ("exact KL/token", _column("kl_exact_per_token", 4)),
    ("KL est./token (k1)", _column("kl_per_token", 4)),
    ("entropy", _column("entropy", 2)),
    ("tokens/answer", _column("length_tokens", 1)),
    ("distinct-2", _column("distinct_2", 3)),
    ("diverged", _diverged),
    ("hacking warned", _warned),
    ("sampled tokens", _column("sampled_tokens", 0)),
    ("wall s", _column("wall_time_s", 0)),
    ("peak MB", _column("peak_memory_mb", 0)),
]
"""The held-out evaluation of each row, then what its runs cost."""

COST_COLUMNS = [
    ("s/step", _column("seconds_per_step", 1)),
    ("sampled tokens/step", _column("tokens_per_step", 0)),
    ("s per 1k sampled tokens", _column("seconds_per_1k_tokens", 2)),
    ("sampling s/step", _column("seconds_sampling_per_step", 2)),
    ("scoring s/step", _column("seconds_scoring_per_step", 2)),
    ("update s/step", _column("seconds_update_per_step", 2)),
    ("train reward gained per 1k tokens", _column("reward_gain_per_1k_tokens", 4)),
    ("test reward gained per 1k tokens", _column("test_reward_gain_per_1k_tokens", 4)),
]
"""Per update and per sampled token: only rows that sample to train (not best-of-n, SFT)."""


def _table(groups: list[dict[str, Any]], columns: list[tuple[str, Any]]) -> list[str]:
    """A markdown table: label, learning rate and seeds of each row, then `columns`."""
    headers = ["method", "lr", "seeds", *(name for name, _ in columns)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for g in groups:
        cells = [g["label"], f"{g['learning_rate']:g}", str(len(g["seeds"]))]
        lines.append("| " + " | ".join(cells + [cell(g) for _, cell in columns]) + " |")
    return lines


def _monitor_lines(runs: list[dict[str, Any]]) -> list[str]:
    """The reward-hacking monitor's warnings beside every run: SuperHF's (metrics.jsonl) and
    GRPO/RLOO's that evaluate along the run (monitor.jsonl); the others are not monitored."""
    lines = [
        "## Reward-hacking monitor",
        "",
        "Each signal against the run's own start. Per run: the iterations that warned, the "
        "first warning in full and every signal that fired; `superhf monitor RUN_DIR` replays "
        "a run's log and prints each warning. SuperHF runs and GRPO/RLOO runs that evaluate "
        "along the run are monitored; best-of-n, SFT and PPO are not.",
        "",
    ]
    for r in runs:
        if r["status"] == "pending":  # not finished: its log is read when it is
            continue
        warnings = r.get("reward_hacking") or []
        if warnings:
            first = warnings[0]
            count = f"{len(warnings)} iteration" + ("s" if len(warnings) > 1 else "")
            fired = sorted({s for w in warnings for s in w.get("signals", [])})
            signals = f" Signals: {', '.join(fired)}." if fired else ""
            lines.append(
                f"- {r['name']}: warned at {count}, first at iteration {first['iteration']}: "
                f"{first['warning']}.{signals}"
            )
        elif r.get("monitored", r["method"] == "superhf"):
            lines.append(f"- {r['name']}: no warning")
        elif r["status"] == "done":
            lines.append(f"- {r['name']}: not monitored")
    if not any(r.get("reward_hacking") for r in runs):
        lines += ["", "It did not fire in any run."]
    return [*lines, ""]


def _edges(headline: list[dict[str, Any]]) -> list[str]:
    """The arms whose chosen rate is the sweep's highest or lowest: one beyond it may win."""
    at_edge = [g for g in headline if g.get("chosen_at_sweep_edge")]
    if not at_edge:
        return []
    named = ", ".join(
        f"{g['label']} ({g['learning_rate']:g}, the {g['chosen_at_sweep_edge']})" for g in at_edge
    )
    return [
        f"Chosen at the edge of the sweep: {named}. A rate beyond it was not run and may "
        "do better; the arm is read at the best rate swept.",
        "",
    ]


_REWARD_NAMES = {"test_reward": "test reward", "reward": "train reward"}


def _interval_row(name: str, c: dict[str, Any]) -> str:
    """One table row of a difference worded by its interval (`intervals.paired_claim`)."""
    low, high = c["interval"]
    reward = _REWARD_NAMES.get(c["metric"], c["metric"])
    return (
        f"| {name} | {reward} | {c['difference']:+.3f} | [{low:+.3f}, {high:+.3f}] "
        f"| {len(c['seeds'])} | {c['num_prompts']} | **{c['word']}** |"
    )


def _claims(claims: list[dict[str, Any]] | None, margin: float | None) -> list[str]:
    """Each claim of SuperHF's default against another arm, worded by its interval."""
    if not claims:
        return []
    lines = [
        "## Claims, worded by their intervals",
        "SuperHF's default (at its chosen learning rate) minus each other arm, held-out reward "
        "per prompt, paired by seed and prompt; 95% interval of a two-level bootstrap "
        f"(seeds, then prompts). Level: the interval within +-{margin}; better / worse: "
        "entirely above / below that margin; otherwise inconclusive. Prompts: those both arms "
        "answered in every shared seed (an empty answer is dropped from a run's evaluation).",
        "",
        "| SuperHF default vs | reward | difference | 95% interval | seeds | prompts | claim |",
        "|---|---|---|---|---|---|---|",
    ]
    return [*lines, *(_interval_row(c["b"], c) for c in claims), ""]


def _gains(gains: list[dict[str, Any]] | None) -> list[str]:
    """Each arm against the start policy it trained from, worded by its interval."""
    if not gains:
        return []
    lines = [
        "## Gain over the start policy, worded by its interval",
        "Each arm minus the start policy, held-out reward per prompt (the start is one policy: "
        "each seed is paired with it); the same bootstrap, margin and words as the claims. "
        "SuperHF with `num_generations` 1 has nothing to select from: the paper says it gains "
        "nothing.",
        "",
        "| arm | reward | gain | 95% interval | seeds | prompts | claim |",
        "|---|---|---|---|---|---|---|",
    ]
    return [*lines, *(_interval_row(g["arm"], g) for g in gains), ""]


def _update_settings(checked: dict[str, Any] | None) -> list[str]:
    """The matched-updates section: each method's effective update settings, the mismatches."""
    if not checked:
        return []
    lines = [
        "## What shapes each update",
        "Read from each run's settings.json (measured steps per round: optimizer steps over "
        "rounds from done.json). These must be equal across SuperHF, GRPO and RLOO; the "
        "learning rate and beta are swept instead.",
        "",
        checked["table"],
        "",
    ]
    if checked["mismatches"]:
        verdict = "allowed by allow_mismatched_updates" if checked["allowed"] else "refused"
        lines += [f"**Not matched ({verdict}):**", *(f"- {m}" for m in checked["mismatches"])]
    else:
        lines.append("Matched: every checked run has the same settings.")
    return [*lines, ""]


def _every_run(runs: list[dict[str, Any]]) -> list[str]:
    """One line per finished run, seed by seed: the sweep is shown whole, not only its pick."""
    done = [r for r in runs if r["status"] == "done"]
    if not done:
        return []
    header = [
        "run", "seed", "lr", "test reward", "train reward", "exact KL/token", "k1 KL est./token",
        "sampled tokens", "optimizer steps", "hacking warnings",
    ]  # fmt: skip
    lines = [
        "## Every run",
        "Each run's own numbers (exact KL: own answers at temperature 1; k1: the evaluation's "
        "answers).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in done:
        n = r["numbers"]
        cells = [
            label(r["method"], r["beta"], r.get("variant", "")),
            str(r["seed"]),
            f"{r['learning_rate']:g}",
            _num(n.get("test_reward")),
            _num(n.get("reward")),
            _num(n.get("kl_exact_per_token"), 4),
            _num(n.get("kl_per_token"), 4),
            str(r.get("sampled_tokens") if r.get("sampled_tokens") is not None else "n/a"),
            str(r.get("optimizer_steps") if r.get("optimizer_steps") is not None else "n/a"),
            str(len(r.get("reward_hacking") or [])),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _frontier(rows: list[dict[str, Any]] | None) -> list[str]:
    """Each SuperHF arm against each RL method's reward-KL frontier (`frontier.py`)."""
    if not rows:
        return []
    lines = [
        "## Where SuperHF sits on the reward-KL frontier",
        "A method's frontier at an exact KL x: the best final test reward of its points (each "
        "(method, beta, learning rate) group's mean over its seeds, every swept rate) with a KL "
        "of at most x. Point estimates: the best of many noisy points favours the method with "
        "more of them; the claims above carry the intervals. `frontier_kl.png` draws them.",
        "",
        *frontier.summary(rows),
        "",
        "| SuperHF arm | lr | seeds | exact KL/token | test reward | distinct-2 | vs | its best at "
        "this KL or lower | its KL | its test reward | gap | position |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["arm"], r["frontier_point"] or {}
        where = f"{b['label']} lr {b['learning_rate']:g}" if b else "-"
        lines.append(
            f"| {a['label']} | {a['learning_rate']:g} | {a['seeds']} | {a['kl']:.4f} | "
            f"{a['test_reward']:+.3f} | {_num(a['distinct_2'])} | {r['method']} | "
            f"{where} | "
            f"{_num(b.get('kl'), 4)} | {_num(b.get('test_reward'))} | {_num(r['gap'])} | "
            f"{r['position']} |"
        )
    return [*lines, ""]


def write_report(result: dict[str, Any], plots: list[str], out: Path) -> Path:
    s, task, m = result["settings"], result["task"], result["machine"]
    start = result["start"]["numbers"]
    lines = [
        "# superhf compare",
        "",
        f"{result['created']}; {result['wall_time_s']:.0f} s for this invocation (runs "
        "finished earlier are reused).",
        "",
        "## Task",
        f"- policy: `{s['model_name_or_path']}`, LoRA r={s['lora_r']} alpha={s['lora_alpha']}",
        f"- prompts: `{s['dataset_name']}` split `{s['dataset_train_split']}` "
        f"({task['num_train_rows']} rows); held out: split `{s['eval_split']}`, "
        f"{task['num_eval_prompts']} prompts ({task['num_eval_dropped_as_in_training']} "
        "dropped as they occur in training)",
        f"- train reward: {task['reward_funcs']}; test reward: {task['test_reward_model']}",
        f"- budget: {s['sampled_token_budget']} sampled completion tokens per run; "
        f"{s['num_generations']} samples per prompt, {s['prompts_per_step']} prompts per "
        f"step, up to {s['max_completion_length']} tokens",
        f"- sweep: learning rates {s['learning_rates']}, SuperHF betas {s['superhf_betas']}, "
        f"seeds {s['seeds']}",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['platform']}); torch {m['torch']}, "
        f"transformers {m['transformers']}, trl {m['trl'] or 'not installed'}",
        "",
        "## Start policy",
        f"test reward {_num(start.get('test_reward'))}, train reward "
        f"{_num(start.get('reward'))}, METEOR {_num(start.get('meteor'))}, entropy "
        f"{_num(start.get('entropy'), 2)}",
        "",
        *_update_settings(result.get("update_settings")),
        "## Each method at its chosen learning rate",
        "Mean ± standard error across seeds of each run's held-out mean. The learning rate is "
        "the one with the best train reward on the training split's held-out prompts (the "
        "last in-run evaluation; never the test RM). Diverged: share of "
        "seeds whose test reward ends below the start's by more than two standard errors of "
        "the difference.",
        "",
        *_table(result["headline"], OUTCOME_COLUMNS),
        "",
        *_edges(result["headline"]),
        *_claims(result.get("claims"), s.get("level_margin")),
        *_gains(result.get("gains_over_start")),
        *_frontier(result.get("frontier")),
        "## Cost and reward per sampled token",
        "Median wall seconds and sampled completion tokens per update (SuperHF: per "
        "iteration; the median leaves out steps with an in-run evaluation); held-out reward "
        "gained over the start policy per 1,000 sampled tokens. Best-of-n and SFT sample "
        "nothing to train on. The stage times (median per update: drawing the samples, "
        "scoring them, and the rest of the update) compare implementations, not algorithms: "
        "SuperHF samples with its own merged, KV-shared sampler, TRL with `generate` on the "
        "unmerged LoRA model.",
        "",
        *_table(
            [g for g in result["headline"] if g["method"] not in ("best_of_n", "sft")],
            COST_COLUMNS,
        ),
        "",
        "## Every (method, beta, learning rate)",
        "",
        *_table(result["summary"], OUTCOME_COLUMNS),
        "",
    ]
    lines += _every_run(result["runs"])
    lines += _monitor_lines(result["runs"])
    short = [r for r in result["runs"] if r.get("budget_reached") is False]
    if short:
        lines += ["## Runs that stopped before the sampled-token budget", ""]
        lines += [
            f"- {r['name']}: {r['sampled_tokens']} tokens ({r['done'].get('stopped_by')})"
            for r in short
        ]
        lines.append("")
    if result.get("pending"):
        lines += [
            f"## Not finished yet ({len(result['pending'])} runs; a report made with report_only)",
            "",
            ", ".join(result["pending"]),
            "",
        ]
    if result["skipped"] or result["failed"]:
        lines += ["## Not run", ""]
        for kind in ("skipped", "failed"):
            for r in result[kind]:
                lines.append(f"- {r['name']}: {kind}: {r['reason']}")
        lines.append("")
    if plots:
        lines += ["## Figures", ""] + [f"![{p}]({p})" for p in plots] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
