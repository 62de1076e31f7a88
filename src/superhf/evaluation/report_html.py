"""report.html: a run's story and its answers in one file that opens offline, from disk.

    superhf report runs/demo        # writes runs/demo/report.html beside report.md
    superhf report runs/a runs/b    # several runs overlaid, in runs/report/report.html

The page (`report_template.html`, its CSS and its small script written for it, no library, no
CDN) holds:
- the start/end summary (the lines `superhf train` prints at the end) and a start → end table;
- the curves, PNGs inlined as data URIs (`report_curves.py`), several runs overlaid, the
  reward-hacking warnings marked where they fired;
- each warning: its iteration, the signals that fired, its text, and the held-out answers of
  the evaluation at or right after it beside the starting policy's answers to the same prompts;
- a completions browser: every sampled answer (completions.jsonl) with its total reward and
  each component, kept or not; filter by iteration and kept, sort by reward or a component,
  search the text;
- the held-out answers of each evaluation (eval_completions.jsonl) beside the starting
  policy's answers to the same prompts;
- the settings (those that differ between runs first).
The completions are one compact JSON block (prompts stored once, rows as arrays), and the
script renders 50 rows at a time, so the page stays fast with tens of thousands of answers.
Its view is in the URL hash: `report.html#iteration=2&kept=1&sort=reward-desc&q=sorry`.
"""

from __future__ import annotations

import html
import json
import math
import re
import statistics
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from superhf import __version__
from superhf.evaluation.monitor import SIGNAL_BY_NAME
from superhf.evaluation.report_curves import curves
from superhf.evaluation.report_runs import KEY_SETTINGS, HackingWarning, Run, first_window_mean
from superhf.evaluation.summary import run_summary
from superhf.files import COMPLETIONS_FILE, EVAL_COMPLETIONS_FILE, read_json_lines, read_text

TEMPLATE = "report_template.html"
"""The page's skeleton, CSS and script (package data of superhf.evaluation)."""
HTML_FILE = "report.html"
ANSWERS_SHOWN = 3
"""Held-out answers shown under each warning (the first prompts); the browser has them all."""
SIGNAL_TEXT = {name: signal.description for name, signal in SIGNAL_BY_NAME.items()} | {
    "divergence": "train reward up while the held-out test reward of the same answers fell",
    "meteor_threshold": "METEOR similarity over the absolute meteor_threshold",
}
"""What each signal name means, as the signal's tooltip."""


# --- the data the script browses ------------------------------------------------------------


def prompt_text(prompt: Any) -> str:
    """A prompt as a person reads it: the string, or a conversation as `role: content` lines."""
    if isinstance(prompt, list):
        return "\n".join(
            f"{m.get('role', '?')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
            for m in prompt
        )
    return str(prompt).strip("\n")


def _round(value: Any) -> float | None:
    """4 decimals keep the JSON small; None for null, NaN or anything not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return round(float(value), 4)


def _flag(value: Any) -> int | None:
    return None if value is None else int(bool(value))


def read_rows(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """A completions file's rows; torn lines (a killed run) are skipped and noted."""
    if not path.is_file():
        return []
    rows = []
    for line in read_json_lines(read_text(path, "RUN_DIR"), str(path), "RUN_DIR", skip_bad=True):
        if line.problem is not None:
            notes.append(f"{line.problem}, skipped")
        else:
            rows.append(line.value)
    return rows


def compact(rows: list[dict[str, Any]], evaluation: bool = False) -> dict[str, Any]:
    """Rows in the page's form: each prompt text once, each row an array.

    Samples: [iteration, prompt, completion, reward, [components], kept, clipped, prompt_index];
    held-out answers (`evaluation`): the same with the test reward in place of kept. Answers to
    one evaluation's prompt logged twice (a resumed old run) keep the last.
    """
    if evaluation:
        rows = list({(r.get("iteration"), r.get("prompt_index")): r for r in rows}.values())
    prompts: dict[str, int] = {}
    components: list[str] = []
    for row in rows:
        components += [k for k in row if k.startswith("rewards/") and k not in components]
    out = []
    for row in rows:
        text = prompt_text(row.get("prompt", ""))
        flag = _round(row.get("test_reward")) if evaluation else _flag(row.get("kept", True))
        out.append(
            [
                int(row.get("iteration", 0)),
                prompts.setdefault(text, len(prompts)),
                str(row.get("completion", "")),
                _round(row.get("reward")),
                [_round(row.get(c)) for c in components],
                flag,
                _flag(row.get("clipped")),
                row.get("prompt_index"),
            ]
        )
    return {
        "prompts": list(prompts),
        "components": [c.removeprefix("rewards/") for c in components],
        "rows": out,
    }


def page_data(runs: list[Run]) -> dict[str, Any]:
    """Everything the script shows, per run."""
    data = []
    for run in runs:
        samples = read_rows(run.path / COMPLETIONS_FILE, run.notes)
        answers = read_rows(run.path / EVAL_COMPLETIONS_FILE, run.notes)
        data.append(
            {
                "name": run.name,
                "label": run.label,
                "hacking": {str(i): w for i, w in run.hacking()},
                "all_logged": any(r.get("kept") is False for r in samples),
                "log_completions": run.config.get("log_completions", True),
                "samples": compact(samples),
                "evals": compact(answers, evaluation=True),
            }
        )
    return {"runs": data}


def embed_json(data: Any) -> str:
    """JSON safe inside <script type="application/json">: no `</script>`, no `<!--`."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


# --- the static sections --------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, fmt: str = "+.3f") -> str:
    number = _round(value)
    return "–" if number is None else format(value, fmt)


def _at(run: Run, key: str, row: dict[str, Any]) -> str:
    """`key` of one metrics row with its SE or interval, as text."""
    value = row.get(key)
    if key == "eval_meteor":
        low, high = row.get("eval_meteor_ci_low"), row.get("eval_meteor_ci_high")
        interval = f" [{_num(low, '.3f')}, {_num(high, '.3f')}]" if _round(low) is not None else ""
        return _num(value, ".3f") + interval
    if key in ("eval_reward", "eval_test_reward"):
        se = _round(row.get(f"{key}_se"))
        shown = se is not None and _round(value) is not None
        return _num(value) + (f" ± {se:.3f}" if shown else "")
    fmt = ".2f" if key == "eval_clipped_ratio" else ".1f" if "length" in key else ".3f"
    return _num(value, fmt)


def _start_end_table(run: Run) -> str:
    evals = [m for m in run.metrics if "eval_reward" in m or "eval_meteor" in m]
    rows = []
    if evals:
        start, end = evals[0], evals[-1]
        head = f"<th>start (iteration {start['iteration']})</th>"
        head += f"<th>end (iteration {end['iteration']})</th>"
        for key, what in (
            ("eval_reward", "held-out reward"),
            ("eval_test_reward", "held-out test reward"),
            ("eval_meteor", "METEOR similarity [95% CI]"),
            ("eval_mean_length", "held-out answer tokens"),
            ("eval_clipped_ratio", "held-out answers clipped"),
            ("eval_distinct_2", "distinct-2"),
        ):
            if any(_round(m.get(key)) is not None for m in evals):  # logged, and measured
                cells = f"<td>{_e(_at(run, key, start))}</td><td>{_e(_at(run, key, end))}</td>"
                rows.append(f"<tr><th>{_e(what)}</th>{cells}</tr>")
    else:
        head = "<th>start</th><th>end</th>"
    rewards = run.series("reward")[1]
    if rewards:
        k = max(1, len(rewards) // 4)
        first, last = first_window_mean(rewards), statistics.fmean(rewards[-k:])
        cells = f"<td>{_num(first)}</td><td>{_num(last)}</td>"
        rows.append(f"<tr><th>train reward (first / last {k} iterations)</th>{cells}</tr>")
    kl = run.series("kl")[1]
    if kl:
        rows.append(f"<tr><th>KL to the reference</th><td>{_num(kl[0], '.4f')}</td>"
                    f"<td>{_num(kl[-1], '.4f')}</td></tr>")  # fmt: skip
    times = run.series("step_time")[1]
    if times:
        total = sum(times)
        rows.append(
            f"<tr><th>time</th><td colspan=2>{total / 60:.1f} min in {len(times)} iterations "
            f"({statistics.fmean(times):.1f} s each)</td></tr>"
        )
    return f"<table class=kv><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def _summary(runs: list[Run], data: dict[str, Any]) -> str:
    cards = []
    for run, page in zip(runs, data["runs"], strict=True):
        held_out = len({row[-1] for row in page["evals"]["rows"]})
        lines = run_summary(run.metrics, int(run.config.get("num_eval_prompts") or held_out))
        planned = run.config.get("max_iterations")
        done = f"{run.num_iterations} iterations" + (f" of {planned}" if planned else "")
        warnings = len(run.hacking())
        badge = (
            f'<span class="badge warn">{warnings} reward-hacking warning(s)</span>'
            if warnings
            else '<span class="badge ok">no reward-hacking warning</span>'
        )
        cards.append(
            f'<div class="card"><h3>{_e(run.label)}</h3>'
            f'<p class="muted">{_e(run.path)} · {_e(done)} {badge}</p>'
            + "".join(f'<p class="console">{_e(line)}</p>' for line in lines)
            + _start_end_table(run)
            + "</div>"
        )
    return "".join(cards)


def _curves(runs: list[Run], sweep_keys: list[str], drawn: dict[str, Path]) -> str:
    parts, skipped = [], []
    for curve in curves(runs, sweep_keys, drawn):
        if curve.data_uri is None:
            skipped.append(f"<li>{_e(curve.title)}: skipped, {_e(curve.skipped)}.</li>")
            continue
        parts.append(
            f'<figure><img src="{curve.data_uri}" alt="{_e(curve.title)}">'
            f"<figcaption><b>{_e(curve.title)}.</b> {_e(curve.caption)}</figcaption></figure>"
        )
    return "".join(parts) + (f'<ul class="muted">{"".join(skipped)}</ul>' if skipped else "")


def nearest_evaluation(evaluations: list[int], iteration: int) -> int | None:
    """The evaluation that shows a warning: the first at or after its iteration, else the last
    before it; None with no evaluation."""
    after = [i for i in evaluations if i >= iteration]
    if after:
        return min(after)
    return max(evaluations) if evaluations else None


def _signal_names(warning: HackingWarning) -> str:
    if not warning.signals:
        return '<span class="muted">not logged (a run from before the monitor named them)</span>'
    return " ".join(
        f'<code class="signal" title="{_e(SIGNAL_TEXT.get(name, ""))}">{_e(name)}</code>'
        for name in warning.signals
    )


def _answer(row: list[Any] | None, start: list[Any] | None = None) -> str:
    """One held-out answer (a compact row) with its reward, and its change from `start`."""
    if row is None:
        return '<td class="answer">–</td>'
    reward, test = row[3], row[5]
    line = f"reward {_num(reward)}"
    if start is not None and reward is not None and start[3] is not None:
        delta = reward - start[3]
        line += f' <span class="{"pos" if delta >= 0 else "neg"}">({delta:+.3f})</span>'
    if test is not None:
        line += f" · test reward {_num(test)}"
    if row[6]:
        line += ' <span class="badge clip">clipped</span>'
    return (
        f'<td class="answer"><div class="answer-text">{_e(row[2])}</div>'
        f'<div class="scoreline">{line}</div></td>'
    )


def _evidence(index: int, evals: dict[str, Any], target: int | None, iteration: int) -> str:
    """The held-out answers at evaluation `target` beside the start's, for warnings up to
    `iteration` (the latest of them)."""
    if target is None:
        return (
            '<p class="hint">No held-out answers to show: this run has no '
            "eval_completions.jsonl.</p>"
        )
    at = {(r[0], r[7]): r for r in evals["rows"]}
    start = min(r[0] for r in evals["rows"])
    indices = sorted({r[7] for r in evals["rows"] if r[0] == target}, key=lambda i: (i is None, i))
    shown = indices[:ANSWERS_SHOWN]
    when = "the first at or after it" if target >= iteration else "the last, before it"
    if target == start:
        when += "; no later evaluation to compare"
    head = f"<th>#</th><th>prompt</th><th>start (iteration {start})</th>"
    if target != start:
        head += f"<th>iteration {target}</th>"
    rows = []
    for i in shown:
        now, first = at[(target, i)], at.get((start, i))
        cells = (
            f'<td class="num">{_e(i)}</td><td class="prompt">{_e(evals["prompts"][now[1]])}</td>'
        )
        cells += _answer(first) + (_answer(now, first) if target != start else "")
        rows.append(f'<tr class="warn-answer" data-prompt-index="{_e(i)}">{cells}</tr>')
    return (
        f'<p class="hint">The held-out answers of the evaluation at iteration {target} ({when}) '
        f"beside the starting policy's (iteration {start}): the first {len(shown)} of "
        f'{len(indices)} prompts, <a href="#eval={target}&run={index}" data-goto>all of them '
        f"below</a>.</p>"
        f'<table class="rows warn-answers"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _run_warnings(index: int, run: Run, evals: dict[str, Any]) -> str:
    """A run's warnings, grouped by the evaluation whose answers show them."""
    evaluations = sorted({r[0] for r in evals["rows"]})
    groups: dict[int | None, list[HackingWarning]] = {}
    for warning in run.warnings():
        groups.setdefault(nearest_evaluation(evaluations, warning.iteration), []).append(warning)
    blocks = []
    for target, warnings in groups.items():
        rows = "".join(
            f'<tr class="warning" data-iteration="{w.iteration}">'
            f'<td class="iteration"><a href="#iteration={w.iteration}&run={index}" data-goto>'
            f"{w.iteration}</a></td><td>{_signal_names(w)}</td>"
            f'<td class="warning-text">{_e(w.text)}</td></tr>'
            for w in warnings
        )
        table = (
            '<table class="rows warning-list"><thead><tr><th>iteration</th>'
            f"<th>signals that fired</th><th>warning</th></tr></thead><tbody>{rows}</tbody></table>"
        )
        evidence = _evidence(index, evals, target, warnings[-1].iteration)
        blocks.append(f'<div class="warning-block">{table}{evidence}</div>')
    return "".join(blocks)


def _warnings(runs: list[Run], data: dict[str, Any]) -> str:
    """Each warning of the monitor with its signals, its text and the answers that show it."""
    if not any("reward_hacking" in m for r in runs for m in r.metrics):
        return "<p>No run logged the reward-hacking monitor (<code>reward_hacking</code>).</p>"
    if not any(r.warnings() for r in runs):
        return "<p>The monitor did not warn.</p>"
    parts = [
        '<p class="hint">Each warning of the monitor (marked on the curves above: red dashed '
        "line and ▼), the signals that fired, and the held-out answers of the evaluation at or "
        "right after it beside the starting policy's answers to the same prompts. An iteration "
        "links to its training samples.</p>"
    ]
    for index, (run, page) in enumerate(zip(runs, data["runs"], strict=True)):
        if len(runs) > 1:
            parts.append(f"<h3>{_e(run.label)}</h3>")
            if not run.warnings():
                logged = any("reward_hacking" in m for m in run.metrics)
                parts.append(
                    "<p>The monitor did not warn.</p>" if logged else "<p>Not monitored.</p>"
                )
                continue
        parts.append(_run_warnings(index, run, page["evals"]))
    return "".join(parts)


def _setting(value: Any) -> str:
    """A setting as config.yaml holds it (lists space-separated, unset as a dash)."""
    if value is None:
        return "–"
    if isinstance(value, list):
        return " ".join(map(str, value)) or "[]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _settings(runs: list[Run], sweep_keys: list[str]) -> str:
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.config if k not in keys]
    first = [k for k in sweep_keys if k in keys] or [k for k in KEY_SETTINGS if k in keys]
    order = first + [k for k in keys if k not in first]
    head = "".join(f"<th>{_e(r.label)}</th>" for r in runs)
    rows = []
    for key in order:
        values = [r.config.get(key) for r in runs]
        differs = len({repr(v) for v in values}) > 1
        cells = "".join(f"<td>{_e(_setting(v))}</td>" for v in values)
        css = ' class="differs"' if differs else ""
        rows.append(f"<tr{css}><th>{_e(key)}</th>{cells}</tr>")
    if not rows:
        return "<p>No config.yaml: settings unknown.</p>"
    return f"<table class=settings><tr><th>setting</th>{head}</tr>{''.join(rows)}</table>"


def _notes(runs: list[Run]) -> str:
    notes = [f"{r.name}: {n}" for r in runs for n in r.notes]
    if not notes:
        return ""
    return "<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"


def write_html_report(
    runs: list[Run], out: Path, sweep_keys: list[str], drawn: dict[str, Path] | None = None
) -> Path:
    """Write out/report.html for `runs` (loaded and labelled by report.py); returns its path.

    `drawn`: report.md's PNGs that the page shows as they are (see `curves`)."""
    data = page_data(runs)  # reads the completions files first: their notes reach the page
    sections = {
        "title": _e("SuperHF report: " + ", ".join(r.name for r in runs)),
        "generated": _e(
            f"{len(runs)} run(s) · written by superhf {__version__} `superhf report` on "
            f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}"
        ),
        "summary": _summary(runs, data),
        "curves": _curves(runs, sweep_keys, drawn or {}),
        "warnings": _warnings(runs, data),
        "settings": _settings(runs, sweep_keys),
        "notes": _notes(runs),
        "data": embed_json(data),
    }
    page = (resources.files("superhf.evaluation") / TEMPLATE).read_text(encoding="utf-8")
    # One pass: text that came from a run (a name, an answer) is never searched again.
    page = re.sub(r"\{\{(" + "|".join(sections) + r")\}\}", lambda m: sections[m[1]], page)
    path = out / HTML_FILE
    path.write_text(page, encoding="utf-8")
    return path
