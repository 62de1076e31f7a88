"""Command line: a thin layer over the Python API.

superhf train                                  # the embedded default (SmolLM2, offline)
superhf train --config configs/quickstart.yaml --num_generations 8
superhf train --help                           # every setting, grouped
"""

from __future__ import annotations

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
    `superhf train --help` lists every setting.
    """
    from superhf.config import ConfigError, parse_train_args
    from superhf.data import DatasetError
    from superhf.rewards import RewardError

    try:
        config = parse_train_args(list(ctx.args))
        from superhf.trainer import SuperHFTrainer

        trainer = SuperHFTrainer(args=config)
        trainer.train()
    except (ConfigError, DatasetError, RewardError) as err:
        console.print(f"[bold red]error:[/bold red] {err}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"Done. Model, metrics.jsonl and completions.jsonl are in {config.output_dir}")


reward_app = typer.Typer(help="Reward models: train them on human preference pairs.")
app.add_typer(reward_app, name="reward")


@reward_app.command("train", context_settings=_PASSTHROUGH)
def reward_train(ctx: typer.Context) -> None:
    """Train a Bradley-Terry reward model; `superhf reward train --help` lists every setting."""
    from superhf.config import ConfigError, parse_config_args
    from superhf.data import DatasetError
    from superhf.reward_modeling import RewardTrainingConfig, train_reward_model

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
