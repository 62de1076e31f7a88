"""report.html marks each reward-hacking warning on the curves and lists it with the signals
that fired and the held-out answers that show it, beside the start's answers."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from superhf.evaluation.report import build_report
from superhf.evaluation.report_curves import (
    plot_diversity,
    plot_heldout_reward,
    plot_length,
    plot_stage_times,
    plot_train_reward,
)
from superhf.evaluation.report_html import nearest_evaluation
from superhf.evaluation.report_plots import (
    MARK_GID,
    mark_hacking,
    plot_kl,
    plot_meteor,
    plot_reward,
    warning_streaks,
)
from superhf.evaluation.report_runs import MONITOR_FILE, load_run

WARNINGS = {
    7: (
        "completions/template_share 0.6 (up +0.45 on its start 0.15; threshold 0.4): share of "
        "samples opening alike",
        ["completions/template_share"],
    ),
    10: (
        "eval_meteor 0.4 (4.00x its start 0.1; threshold 1.5): METEOR similarity across "
        "held-out prompts <& alike>",
        ["eval_meteor"],
    ),
}
PROMPTS = [f'Prompt {k}: tell me about <topic {k}> & "more"' for k in range(5)]


def start_answer(k: int) -> str:
    return f"Start answer {k}: here is <em>something</em> about topic {k} & more."


def hacked_answer(k: int) -> str:
    return f'I cannot help with "that" & <script>alert({k})</script>'


def write_marked_run(
    folder: Path,
    signals: bool = True,
    warnings: dict[int, tuple[str, list[str]]] | None = None,
    metrics_file: str = "metrics.jsonl",
) -> Path:
    """Iterations 0..10, evaluations at 0, 5 and 10, the monitor's warnings at 7 and 10;
    `signals` False: an older run, with no `reward_hacking_signals` key."""
    warnings = WARNINGS if warnings is None else warnings
    folder.mkdir(parents=True)
    rows = []
    for i in range(11):
        row: dict = {"iteration": i, "reward_hacking": None}
        if i > 0:
            row |= {
                "reward": 0.1 * i,
                "reward_std": 0.05,
                "kl": 0.01 * i,
                "completions/template_share": 0.1 + 0.05 * i,
                "completions/distinct_2": 0.9 - 0.03 * i,
                "completions/mean_length": 30.0 - i,
                "step_time": 2.0,
            }
        if i in (0, 5, 10):
            row |= {
                "eval_reward": 0.1 + 0.05 * i,
                "eval_test_reward": 0.1 - 0.01 * i,
                "eval_meteor": 0.1 + 0.03 * i,
                "eval_distinct_2": 0.9 - 0.05 * i,
            }
        if i in warnings:
            row["reward_hacking"] = warnings[i][0]
        if signals:
            row["reward_hacking_signals"] = warnings[i][1] if i in warnings else []
        rows.append(row)
    (folder / metrics_file).write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = [
        {
            "iteration": i,
            "prompt_index": k,
            "prompt": PROMPTS[k],
            "completion": start_answer(k) if i == 0 else hacked_answer(k) if i == 10 else "mid",
            "reward": 0.1 * k + 0.01 * i,
            "test_reward": -0.01 * i,
        }
        for i in (0, 5, 10)
        for k in range(5)
    ]
    (folder / "eval_completions.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    return folder


def section(page: str) -> str:
    """The page's reward-hacking section (between its heading and the completions')."""
    return page[page.index('<h2 id="warnings">') : page.index('<h2 id="completions">')]


@pytest.fixture
def marked_run(tmp_path: Path) -> Path:
    return write_marked_run(tmp_path / "run")


def test_warnings_are_listed_with_their_signals_and_answers(marked_run):
    build_report([str(marked_run)])
    page = (marked_run / "report.html").read_text()
    part = section(page)
    assert "The monitor did not warn." not in part
    assert 'data-iteration="7"' in part and 'data-iteration="10"' in part
    assert '<a href="#iteration=7&run=0" data-goto>7</a>' in part
    assert ">completions/template_share</code>" in part and ">eval_meteor</code>" in part
    assert 'title="share of samples opening alike"' in part  # the signal's meaning
    for text, _ in WARNINGS.values():
        assert html.escape(text) in part
    assert "<& alike>" not in part
    # Both warnings are shown by the evaluation at iteration 10, beside the start.
    assert part.count('class="warning-block"') == 1
    assert "<th>start (iteration 0)</th><th>iteration 10</th>" in part
    assert (
        "The held-out answers of the evaluation at iteration 10 (the first at or after it)" in part
    )
    for k in range(3):
        assert html.escape(hacked_answer(k)) in part
        assert html.escape(start_answer(k)) in part
        assert html.escape(PROMPTS[k]) in part
    assert html.escape(hacked_answer(3)) not in part  # the first 3 answers only
    assert "<script>alert(" not in part
    assert "the first 3 of 5 prompts" in part
    assert '<a href="#eval=10&run=0" data-goto>' in part
    # The curves' captions name the marks; the summary counts the warnings.
    assert "the reward-hacking monitor warned (iterations 7, 10)" in page
    assert "2 reward-hacking warning(s)" in page
    # report.md keeps its one line per warning.
    report = (marked_run / "report.md").read_text()
    assert "`run`, iteration 7: completions/template_share" in report
    assert "`run`, iteration 10: eval_meteor" in report


def test_a_warning_is_shown_by_the_next_evaluation(tmp_path):
    warnings = {3: ("eval_kl 0.9 per token", ["eval_kl"]), **WARNINGS}
    run = write_marked_run(tmp_path / "run", warnings=warnings)
    build_report([str(run)])
    part = section((run / "report.html").read_text())
    assert part.count('class="warning-block"') == 2  # 3 -> evaluation 5; 7 and 10 -> 10
    assert "<th>start (iteration 0)</th><th>iteration 5</th>" in part
    assert part.index('data-iteration="3"') < part.index("iteration 5</th>")
    assert part.index("iteration 5</th>") < part.index('data-iteration="7"')


def test_nearest_evaluation():
    assert nearest_evaluation([0, 5, 10], 7) == 10
    assert nearest_evaluation([0, 5, 10], 10) == 10
    assert nearest_evaluation([0, 5, 10], 3) == 5
    assert nearest_evaluation([0, 5, 10], 12) == 10  # none after: the last before
    assert nearest_evaluation([], 3) is None


def _svg_ids(draw, run, path: Path) -> set[str]:
    assert draw([run], path) is None, draw.__name__
    return set(re.findall(r'id="(reward-hacking-warning[^"]*)"', path.read_text()))


@pytest.mark.parametrize(
    "draw",
    [
        plot_train_reward,
        plot_heldout_reward,
        plot_kl,
        plot_meteor,
        plot_diversity,
        plot_length,
        plot_stage_times,
        plot_reward,
    ],
)
def test_every_curve_marks_both_warnings(marked_run, tmp_path, draw):
    ids = _svg_ids(draw, load_run(marked_run), tmp_path / "curve.svg")
    assert f"{MARK_GID}-7" in ids and f"{MARK_GID}-10" in ids
    assert f"{MARK_GID}-ticks" in ids


def test_the_signal_that_fired_is_ringed_on_its_curve(marked_run, tmp_path):
    run = load_run(marked_run)
    assert f"{MARK_GID}-fired-eval_meteor" in _svg_ids(plot_meteor, run, tmp_path / "m.svg")
    diversity = _svg_ids(plot_diversity, run, tmp_path / "d.svg")
    assert f"{MARK_GID}-fired-completions-template_share" in diversity
    assert f"{MARK_GID}-fired-eval_distinct_2" not in diversity  # it did not fire
    assert not any("fired" in i for i in _svg_ids(plot_kl, run, tmp_path / "k.svg"))


def test_mark_hacking_draws_at_the_warned_iterations(marked_run):
    from matplotlib.figure import Figure

    run = load_run(marked_run)
    ax = Figure().subplots()
    ax.plot(*run.series("eval_meteor"))
    assert mark_hacking(ax, [run], "eval_meteor") == [7, 10]
    lines = {line.get_gid(): line for line in ax.lines}
    assert list(lines[f"{MARK_GID}-7"].get_xdata()) == [7, 7]
    assert lines[f"{MARK_GID}-7"].get_linestyle() == "--"
    assert list(lines[f"{MARK_GID}-ticks"].get_xdata()) == [7, 10]
    ring = lines[f"{MARK_GID}-fired-eval_meteor"]
    assert list(ring.get_xdata()) == [10]
    assert list(ring.get_ydata()) == pytest.approx([0.4])
    assert ax.get_legend_handles_labels()[1] == ["the signal that fired"]


def test_a_streak_of_warnings_is_one_span(tmp_path):
    warnings = {i: (f"kl {i}", ["kl"]) for i in (4, 5, 6, 9)}
    run = load_run(write_marked_run(tmp_path / "run", warnings=warnings))
    assert warning_streaks(run.warnings()) == [(4, 6), (9, 9)]


def test_an_older_run_without_signal_names_still_renders(tmp_path):
    run = write_marked_run(tmp_path / "old", signals=False)
    assert all(w.signals is None for w in load_run(run).warnings())
    build_report([str(run)])
    part = section((run / "report.html").read_text())
    assert 'data-iteration="7"' in part and 'data-iteration="10"' in part
    assert "not logged (a run from before the monitor named them)" in part
    assert html.escape(WARNINGS[10][0]) in part
    assert html.escape(hacked_answer(0)) in part
    assert '<code class="signal"' not in part
    ids = _svg_ids(plot_meteor, load_run(run), tmp_path / "m.svg")
    assert f"{MARK_GID}-10" in ids and not any("fired" in i for i in ids)


def test_no_warning_and_no_monitor(tmp_path):
    quiet = write_marked_run(tmp_path / "quiet", warnings={})
    build_report([str(quiet)])
    page = (quiet / "report.html").read_text()
    assert "<p>The monitor did not warn.</p>" in section(page)
    assert "reward-hacking monitor warned" not in page
    unmonitored = tmp_path / "unmonitored"
    unmonitored.mkdir()
    (unmonitored / "metrics.jsonl").write_text(
        "".join(json.dumps({"iteration": i, "reward": 0.1 * i}) + "\n" for i in range(4))
    )
    build_report([str(unmonitored)])
    part = section((unmonitored / "report.html").read_text())
    assert "No run logged the reward-hacking monitor" in part


def test_several_runs_each_get_their_warnings(tmp_path):
    hacked = write_marked_run(tmp_path / "hacked")
    quiet = write_marked_run(tmp_path / "quiet", warnings={})
    build_report([str(hacked), str(quiet)], str(tmp_path / "report"))
    part = section((tmp_path / "report" / "report.html").read_text())
    assert "<h3>hacked</h3>" in part and "<h3>quiet</h3>" in part
    assert part.index("<h3>hacked</h3>") < part.index('data-iteration="7"')
    assert part.index("<h3>quiet</h3>") < part.index("<p>The monitor did not warn.</p>")


def test_a_trl_run_with_only_monitor_jsonl(tmp_path):
    run = write_marked_run(tmp_path / "trl", metrics_file=MONITOR_FILE)
    loaded = load_run(run)
    assert [m["iteration"] for m in loaded.metrics] == list(range(11))
    assert any("monitor.jsonl" in note for note in loaded.notes)
    build_report([str(run)])
    page = (run / "report.html").read_text()
    part = section(page)
    assert ">completions/template_share</code>" in part
    assert html.escape(hacked_answer(0)) in part and html.escape(start_answer(0)) in part
    assert "monitor.jsonl" in page  # the note says where the metrics came from
    assert (run / "report.md").is_file()


def test_a_warning_after_the_last_evaluation_shows_the_last(tmp_path):
    run = write_marked_run(tmp_path / "run")
    answers = (run / "eval_completions.jsonl").read_text().splitlines()
    kept = [a for a in answers if json.loads(a)["iteration"] == 0]  # only the start evaluated
    (run / "eval_completions.jsonl").write_text("\n".join(kept) + "\n")
    build_report([str(run)])
    part = section((run / "report.html").read_text())
    assert "evaluation at iteration 0 (the last, before it; no later evaluation" in part
    assert "<th>start (iteration 0)</th></tr>" in part  # one column: nothing to compare
    assert html.escape(start_answer(0)) in part and html.escape(hacked_answer(0)) not in part
    (run / "eval_completions.jsonl").unlink()
    build_report([str(run)])
    part = section((run / "report.html").read_text())
    assert "No held-out answers to show" in part and 'data-iteration="7"' in part
