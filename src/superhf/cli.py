"""Command line: a thin layer over the Python API.

superhf train                                  # the embedded default (SmolLM2, offline)
superhf train --config configs/quickstart.yaml --num_generations 8
superhf train --help                           # every setting, grouped
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    help="SuperHF: align language models with supervised iterative learning from feedback.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Keep `train` a subcommand (Typer runs a lone command directly otherwise)."""


_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command(context_settings=_PASSTHROUGH)
def train(ctx: typer.Context) -> None:
    """Run SuperHF: sample, score, keep the best of each prompt, fine-tune; repeat.

    Settings come from the defaults, then `--config FILE.yaml`, then `--name value` flags.
    `superhf train --help` lists every setting. `superhf train --resume RUN_DIR` continues a
    stopped or killed run from its newest valid checkpoint.
    """
    from superhf.config import ConfigError, parse_train_args
    from superhf.data import DatasetError
    from superhf.rewards.scoring import RewardError
    from superhf.train.checkpoint import CheckpointError
    from superhf.train.trainer import SuperHFTrainer, TrainingError

    try:
        config = parse_train_args(list(ctx.args))
        trainer = SuperHFTrainer(args=config)
        trainer.train()
    except (ConfigError, DatasetError, RewardError) as err:
        console.print(f"[bold red]error:[/bold red] {err}", soft_wrap=True)
        raise typer.Exit(2) from None
    except (TrainingError, CheckpointError) as err:
        console.print(f"[bold red]error:[/bold red] {err}", soft_wrap=True)
        raise typer.Exit(1) from None
    if trainer.stop_signal is not None:  # stopped by SIGINT/SIGTERM after saving
        raise typer.Exit(128 + trainer.stop_signal)
    if trainer.stop_reason is not None:  # stop_on_reward_hacking: saved, not finished
        raise typer.Exit(3)
    console.print(f"Done. Model, metrics.jsonl and completions.jsonl are in {config.output_dir}")


reward_app = typer.Typer(help="Reward models: train them on human preference pairs.")
app.add_typer(reward_app, name="reward")


@reward_app.command("train", context_settings=_PASSTHROUGH)
def reward_train(ctx: typer.Context) -> None:
    """Train a Bradley-Terry reward model; `superhf reward train --help` lists every setting."""
    from superhf.config import ConfigError, parse_config_args
    from superhf.data import DatasetError
    from superhf.rewards.training import RewardTrainingConfig, train_reward_model

    try:
        config = parse_config_args(
            RewardTrainingConfig,
            list(ctx.args),
            prog="superhf reward train",
            description="Train a reward model (one logit) with the Bradley-Terry loss on "
            "preference pairs. Settings come from the defaults, then --config FILE (YAML), "
            "then the command line.",
        )
        train_reward_model(config)
    except (ConfigError, DatasetError) as err:
        console.print(f"[bold red]error:[/bold red] {err}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"Done. Use it with: superhf train --reward_funcs {config.output_dir}")


@app.command("eval", context_settings=_PASSTHROUGH)
def eval_(ctx: typer.Context) -> None:
    """Evaluate models or run folders on held-out prompts (reward, test reward, METEOR, KL).

    `superhf eval MODEL_OR_RUN_DIR [MODEL_OR_RUN_DIR ...] [--config FILE] [--name value ...]`;
    `superhf eval --help` lists every setting.
    """
    from superhf.config import ConfigError
    from superhf.data import DatasetError
    from superhf.rewards.scoring import RewardError

    try:
        from superhf.config import parse_eval_args
        from superhf.evaluation.evaluate import evaluate_models

        models, config = parse_eval_args(list(ctx.args))
        evaluate_models(models, config, console=console)
    except (ConfigError, DatasetError, RewardError) as err:
        console.print(f"[bold red]error:[/bold red] {err}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"Done. eval.json and completions-*.jsonl are in {config.output_dir}")


@app.command("report")
def report(
    run_dirs: Annotated[
        list[str], typer.Argument(metavar="RUN_DIR", help="Run folders of `superhf train`.")
    ],
    output_dir: Annotated[
        str | None,
        typer.Option(
            "--output_dir",
            help="Where report.md and the plots go (default: the run folder, or runs/report).",
        ),
    ] = None,
) -> None:
    """Plots and a Markdown report of one or more training runs (reward, KL, METEOR)."""
    from superhf.config import ConfigError

    try:
        from superhf.evaluation.report import build_report

        path = build_report(run_dirs, output_dir, console=console)
    except ConfigError as err:
        console.print(f"[bold red]error:[/bold red] {err}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"Done. Report: {path}")


@app.command("calibrate")
def calibrate(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Hub ids, model folders, run folders (LoRA) or embedded:SmolLM2-135M-Instruct."
        ),
    ],
    dataset: Annotated[str, typer.Option("--dataset", help="cais/mmlu or a local file.")] = (
        "cais/mmlu"
    ),
    config_name: Annotated[str, typer.Option("--config_name", help="Hub config.")] = "all",
    split: Annotated[str, typer.Option("--split", help="Hub split of the questions.")] = "test",
    fewshot_split: Annotated[
        str, typer.Option("--fewshot_split", help="Hub split of the few-shot examples.")
    ] = "dev",
    fewshot_file: Annotated[
        str | None,
        typer.Option(
            "--fewshot_file",
            help="Local file of few-shot examples (for a local --dataset the default is the "
            "other questions).",
        ),
    ] = None,
    num_fewshot: Annotated[int, typer.Option("--num_fewshot", help="Shots per prompt.")] = 5,
    limit: Annotated[
        int | None, typer.Option("--limit", help="A seeded sample of N questions.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch_size", help="Prompts per forward.")] = 8,
    dtype: Annotated[str, typer.Option("--dtype", help="float32 or bfloat16.")] = "float32",
    output_dir: Annotated[str, typer.Option("--output_dir", help="Output folder.")] = (
        "runs/calibration"
    ),
) -> None:
    """MMLU calibration: the paper's MSE over 10 bins, and ECE.

    Writes calibration.json and reliability.png into --output_dir.
    """
    from superhf.config import ConfigError
    from superhf.data import DatasetError

    try:
        from superhf.evaluation.calibration import run_calibration

        run_calibration(
            models, dataset, config_name, split, fewshot_split, fewshot_file, num_fewshot,
            limit, batch_size, dtype, output_dir, console=console,
        )  # fmt: skip
    except (ConfigError, DatasetError) as err:
        console.print(f"[bold red]error:[/bold red] {err}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"Done. calibration.json and reliability.png are in {output_dir}")


@app.command("judge")
def judge(
    files: Annotated[
        list[str],
        typer.Argument(
            help="completions-*.jsonl of `superhf eval` (rows: prompt, completion, "
            "model): two or more files, or one file with several models."
        ),
    ],
    judge_model: Annotated[
        str, typer.Option("--judge_model", help="Judge: a chat model name, or (local) a model.")
    ],
    judge_url: Annotated[
        str | None,
        typer.Option(
            "--judge_url",
            help="OpenAI-compatible base URL (default $SUPERHF_JUDGE_BASE_URL, $OPENAI_BASE_URL). "
            "The key is read from $SUPERHF_JUDGE_API_KEY or $OPENAI_API_KEY only.",
        ),
    ] = None,
    judge_backend: Annotated[
        str, typer.Option("--judge_backend", help="api (chat endpoint) or local (HF causal LM).")
    ] = "api",
    num_prompts: Annotated[
        int | None, typer.Option("--num_prompts", help="Judge the first N aligned prompts.")
    ] = None,
    num_orderings: Annotated[
        int, typer.Option("--num_orderings", help="Random game orderings Elo is averaged over.")
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Judging order and Elo orderings.")] = 0,
    output_dir: Annotated[str, typer.Option("--output_dir", help="Output folder.")] = "runs/judge",
) -> None:
    """Pairwise LLM judge, both orders per pair; Elo and win rates.

    Writes judge.json and judgements.jsonl (every judge call) into --output_dir.
    """
    from superhf.config import ConfigError
    from superhf.data import DatasetError

    try:
        from superhf.evaluation.judge import JudgeError, LocalHFJudge, OpenAIChatJudge, run_judge

        if judge_backend not in ("api", "local"):
            raise ConfigError(f"judge_backend must be api or local, got {judge_backend!r}.")
        if num_prompts is not None and num_prompts < 1:
            raise ConfigError(f"num_prompts must be >= 1, got {num_prompts}.")
        if judge_backend == "local":
            judge_ = LocalHFJudge(judge_model)
        else:
            judge_ = OpenAIChatJudge(judge_model, base_url=judge_url)
        run_judge(files, judge_, output_dir, num_prompts, seed, num_orderings, console=console)
    except (ConfigError, DatasetError, JudgeError) as err:
        console.print(f"[bold red]error:[/bold red] {err}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"Done. judge.json and judgements.jsonl are in {output_dir}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
