"""The settings machinery every command shares: fields with their --help, type checks, YAML, flags.

A command's settings are a dataclass of `config_field`s (what a setting is: its default, one
or two lines of help and its --help section). `parse_config_args` reads them the same way for
every command: the defaults, then `--config FILE.yaml`, then `--name value` flags. The command
settings themselves live in `superhf.config` (train, eval), `superhf.compare.config` and the
evaluation modules; nothing here knows them, and nothing here imports torch.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml

from superhf.errors import ConfigError

SOURCES = (
    "Settings come from the defaults, then --config FILE (YAML), then the command line "
    "(--name value)."
)
"""Appended to every command's --help description by `parse_config_args`."""


def config_field(default: Any, help: str, group: str, positional: str | None = None) -> Any:
    """A dataclass field with its --help text and its --help section.

    `positional` (a metavar such as "RUN_DIR") makes a list field the command's leading
    arguments instead of a `--name` flag.
    """
    metadata = {"help": help, "group": group, "positional": positional}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def with_default(piece: type, name: str, default: Any) -> Any:
    """A setting of `piece` with another default (its help and --help section stay the piece's)."""
    f = piece.__dataclass_fields__[name]
    return config_field(default, f.metadata["help"], f.metadata["group"])


def check_at_least(config: Any, low: int, *names: str) -> None:
    """A ConfigError naming the first of `names` whose value is below `low`."""
    for name in names:
        if getattr(config, name) < low:
            raise ConfigError(f"{name} must be >= {low}, got {getattr(config, name)}.")


def check_finite(config: Any) -> None:
    """A ConfigError naming the first field holding a NaN or an infinity."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ConfigError(f"{f.name} must be a finite number, got {value!r}.")


# --- type checks -----------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin is dict:
        return isinstance(value, dict)
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, tp)


def check_types(config: Any) -> None:
    """Raise a ConfigError naming the first field whose value has the wrong type."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, tp = getattr(config, f.name), hints[f.name]
        if isinstance(value, str) and _matches(1.0, tp) and not _matches(value, tp):
            # YAML reads `1e-4` (no dot) as a string; take it as the number it is.
            try:
                value = float(value)
                setattr(config, f.name, value)
            except ValueError:
                pass
        if not _matches(value, tp):
            raise ConfigError(
                f"{f.name} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})."
            )
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and float
            in (
                tp,
                *typing.get_args(tp),
            )
        ):
            setattr(config, f.name, float(value))


class CheckedSettings:
    """A settings dataclass checked when made: types first, then `validate`."""

    def __post_init__(self) -> None:
        check_types(self)
        self.validate()

    def validate(self) -> None:
        """Reject impossible values before anything heavy loads."""
        check_finite(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


# --- YAML and the command line --------------------------------------------------------------


def _unknown_keys_error(cls: type, keys: list[str], where: str, prog: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    hints = []
    for key in keys:
        close = difflib.get_close_matches(key, names, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ConfigError(
        f"Unknown setting(s) in {where}: {', '.join(hints)}. See `{prog} --help` for every setting."
    )


def read_yaml_config(path: str | Path, cls: type, prog: str) -> dict[str, Any]:
    """Read a YAML file of `cls`'s settings as a dict, or raise a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: no such file {str(path)!r}.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"--config: {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of setting: value.")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise _unknown_keys_error(cls, unknown, str(path), prog)
    return data


def _yaml_mapping(text: str) -> dict[str, Any]:
    """A mapping given on the command line as YAML, e.g. `--method_settings '{sft: {x: 1}}'`."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise argparse.ArgumentTypeError(f"not valid YAML: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"a mapping expected, got {text!r}")
    return value


def _string_to_bool(value: str | bool) -> bool:
    """`--use_peft false` as transformers' HfArgumentParser reads it."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"Truthy value expected: got {value!r}.")


def _add_field_argument(group: argparse._ArgumentGroup, f: dataclasses.Field, tp: Any) -> None:
    """One `--name value` option (and `--name-with-dashes`) for a dataclass field, read the way
    transformers' HfArgumentParser reads it (bools take an optional value and, when True by
    default, a `--no_name` complement; lists take one or more values; `X | None` is X); built
    on argparse alone so that parsing (and a refused setting) never imports transformers."""
    kwargs: dict[str, Any] = {"help": f.metadata.get("help", "")}
    if f.metadata.get("positional"):
        (item,) = typing.get_args(tp)
        # no "(default: ...)" in --help: the leading arguments have none worth showing
        kwargs["default"] = argparse.SUPPRESS
        group.add_argument(f.name, metavar=f.metadata["positional"], nargs="*", type=item, **kwargs)
        return
    options = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else str
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if default is dataclasses.MISSING:
        kwargs["required"] = True
    else:
        kwargs["default"] = default
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        by_text = {str(c): c for c in choices}
        kwargs.update(choices=choices, type=lambda text: by_text.get(text, text))
    elif tp is bool:
        kwargs.update(type=_string_to_bool, nargs="?", const=True)
        kwargs.setdefault("default", False)
    elif typing.get_origin(tp) is list:
        kwargs.update(type=typing.get_args(tp)[0], nargs="+")
    elif tp is dict or typing.get_origin(tp) is dict:
        kwargs.update(type=_yaml_mapping, metavar="YAML")
    else:
        kwargs["type"] = tp
    group.add_argument(*options, **kwargs)
    if tp is bool and default is True:
        group.add_argument(
            f"--no_{f.name}",
            f"--no-{f.name.replace('_', '-')}",
            action="store_false",
            dest=f.name,
            default=False,
            help=kwargs["help"],
        )


class _GroupedParser(argparse.ArgumentParser):
    """An argument parser for a config dataclass, its field groups as sections of --help."""

    def __init__(self, cls: type, **kwargs: Any) -> None:
        super().__init__(formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)
        hints = typing.get_type_hints(cls)
        in_order = sorted(dataclasses.fields(cls), key=lambda f: _group_rank(f))
        groups: dict[str, argparse._ArgumentGroup] = {}
        for f in in_order:
            name = f.metadata.get("group", "other")
            if name not in groups:
                groups[name] = self.add_argument_group(name)
            _add_field_argument(groups[name], f, hints[f.name])


HELP_GROUPS = ("model", "prompts", "generation", "rewards", "filter", "training", "evaluation")
"""The --help sections first in this order (shared settings come first in the dataclasses);
the others follow in field order."""


def _group_rank(f: dataclasses.Field) -> int:
    group = f.metadata.get("group", "other")
    return HELP_GROUPS.index(group) if group in HELP_GROUPS else len(HELP_GROUPS)


def parse_config_args(cls: type, argv: list[str], prog: str, description: str) -> Any:
    """`--config FILE` then `--field value` overrides, as TRL's command lines do.

    `description` is the command's own; --help adds where settings come from (`SOURCES`)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    parser = _GroupedParser(
        cls, prog=prog, allow_abbrev=False, description=f"{description} {SOURCES}"
    )
    parser.add_argument("--config", default=None, help="YAML file of settings.")
    file_values = read_yaml_config(known.config, cls, prog) if known.config else {}
    # Parse into a namespace first so that YAML values (already typed) are checked by the
    # dataclass itself, not converted by argparse.
    namespace, unknown = parser.parse_known_args(rest)
    if unknown:
        flags = [a.lstrip("-").split("=")[0] for a in unknown if a.startswith("-")]
        if flags:
            raise _unknown_keys_error(cls, flags, "the command line", prog)
        raise ConfigError(f"Unexpected argument(s): {' '.join(unknown)}.")
    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in rest if a.startswith("--")}
    given |= {g.removeprefix("no_") for g in given}
    values = dict(file_values)
    for f in dataclasses.fields(cls):
        if f.name in given or (f.metadata.get("positional") and getattr(namespace, f.name, None)):
            values[f.name] = getattr(namespace, f.name)
    return cls(**values)


def split_models_and_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The leading MODEL_OR_RUN_DIR arguments, then the `--flag value` settings."""
    argv = list(argv)
    first_flag = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    return argv[:first_flag], argv[first_flag:]
