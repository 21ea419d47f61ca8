"""Options shared by several commands, declared once: the fusion options (``--r``, ``--mode``, ``--switch``, ...)
that `with_fusion_options` adds to a command, made from the `FusionConfig` fields' declarations (as are the flags
`export_flags` prints), and the model argument, image size and checkpoint options."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tofu_edge.choices import StepBackend, parse_choice
from tofu_edge.config import FusionConfig, config_fields, value_text
from tofu_edge.errors import ConfigError

__all__ = [
    "ModelArg",
    "ImgSizeOption",
    "CheckpointOption",
    "StepOption",
    "FusionOptions",
    "NO_FUSION_OPTIONS",
    "with_fusion_options",
    "export_flags",
    "option_name",
    "read_config_file",
    "one_line_choice",
]

E = TypeVar("E", bound=Enum)

ModelArg = Annotated[str, typer.Argument(help="timm model name, e.g. deit_small_patch16_224.", show_default=False)]
ImgSizeOption = Annotated[
    int | None, typer.Option(help="Square input size (default: the model's own).", show_default=False)
]
CheckpointOption = Annotated[
    Path | None, typer.Option(help="Weights: .safetensors or a torch state dict.", show_default=False)
]

StepOption = Annotated[
    StepBackend,
    typer.Option(
        "--step",
        help="Where PyTorch runs the fusion steps: auto (the Triton kernels on CUDA where Triton runs, the PyTorch "
        "ops elsewhere), torch or triton (to compare them, or for a bug report).",
    ),
]


@dataclass(frozen=True)
class FusionOptions:
    """The fusion options as the user gave them.

    Args:
        values: Each `FusionConfig` field's option value by field name: what typer parsed, or the text of an option
            that takes text (``--r``, ``--ops``; ``None`` when not given).
        given: The options given on the command line (field names, and ``config_file`` for ``--config``).
        config_file: The ``--config`` file.
    """

    values: Mapping[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()
    config_file: Path | None = None

    @property
    def schedule_given(self) -> bool:
        """Whether ``--r``, ``--keep`` or ``--config`` was given."""
        return any(self.values.get(name) is not None for name in ("r", "keep")) or self.config_file is not None

    def config(self) -> FusionConfig:
        """The `FusionConfig` these options describe (no ``--r`` and no ``--keep``: ``r=0``, nothing fused), or the
        one in the ``--config`` file.

        Raises:
            ConfigError: a malformed ``--r`` or ``--ops``, conflicting options, an unreadable ``--config`` file
                (the library's own checks), or a fusion option given next to ``--config``.
        """
        if self.config_file is not None:
            others = set(self.given) - {"config_file"}
            self.refuse(others, "--config FILE holds the whole fusion config; leave out the other fusion options")
            return read_config_file(self.config_file)
        if self.values.get("r") is not None and self.values.get("keep") is not None:
            raise ConfigError("give either --keep (a MACs target) or --r (a token schedule), not both")
        values = {}
        for config_field, text in config_fields():
            value = self.values.get(config_field.name)
            if text.parse is not None:
                if value is None:
                    continue  # the field's default
                value = text.parse(value)
            values[config_field.name] = value
        return FusionConfig(**values)

    def refuse(self, names: Iterable[str], message: str) -> None:
        """Refuse the options among ``names`` (field names, ``config_file``) that were given, in one line: the
        ``message``, then those options, so that an option a command cannot apply is never silently dropped.

        Raises:
            ConfigError: one of them was given.
        """
        names = set(names)
        given = [name for name in (*(f.name for f, _ in config_fields()), "config_file") if name in names & self.given]
        if given:
            raise ConfigError(f"{message} ({', '.join(option_name(name) for name in given)})")


NO_FUSION_OPTIONS = FusionOptions()  # the placeholder default of a command's ``fusion`` parameter


def option_name(name: str) -> str:
    """The command-line option of a `FusionConfig` field (``prop_attn`` -> ``--prop-attn``), or ``--config``."""
    return "--config" if name == "config_file" else "--" + name.replace("_", "-")


def export_flags(config: FusionConfig) -> str:
    """The fusion options that give ``config`` on the command line (``--r 13 --mode tofu --switch 2``): the schedule
    (``--r`` or ``--keep``), the mode (or ``--ops``), then every other field that is not at its default."""
    flags = [f"--keep {config.keep}" if config.keep is not None else f"--r {value_text(config.r)}"]
    for config_field, _ in config_fields():
        name, value = config_field.name, getattr(config, config_field.name)
        if name in ("r", "keep") or (name == "mode" and config.ops is not None):
            continue
        if name != "mode" and value == config_field.default:
            continue
        if isinstance(value, bool):
            flags.append(option_name(name) if value else f"--no-{option_name(name)[2:]}")
        else:
            flags.append(f"{option_name(name)} {value_text(value)}")
    return " ".join(flags)


def _fusion_parameters() -> list[inspect.Parameter]:
    """The typer parameters of the fusion options: one per `FusionConfig` field (its help, type and default from
    the field's declaration), then ``--config``."""
    hints = typing.get_type_hints(FusionConfig)
    parameters = []
    for config_field, text in config_fields():
        name = config_field.name
        kind, default = (str | None, None) if text.parse is not None else (hints[name], config_field.default)
        declared = (option_name(name), text.short) if text.short else ()
        option = typer.Option(*declared, help=text.help, show_default=default is not None)
        parameters.append(_keyword(name, Annotated[kind, option], default))
    config_help = "A fusion config file (JSON, as tofu-edge calibrate writes it) instead of the options above."
    config_option = typer.Option("--config", help=config_help, show_default=False)
    parameters.append(_keyword("config_file", Annotated[Path | None, config_option], None))
    return parameters


def _keyword(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


_FUSION_PARAMETERS = _fusion_parameters()
_CONTEXT = "fusion_context"  # the typer.Context the wrapper asks for: which options the command line gave
_GIVEN_SOURCES = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def with_fusion_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the fusion options, declared once with the `FusionConfig` fields; it receives them as
    ``fusion: FusionOptions``.

    The command declares ``fusion: FusionOptions = NO_FUSION_OPTIONS`` where the options should appear in
    ``--help``; the wrapper that typer sees has the options themselves in its place.
    """
    signature = inspect.signature(command, eval_str=True)
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()]
    at = [p.name for p in own].index("fusion")
    names = [p.name for p in _FUSION_PARAMETERS]
    context = _keyword(_CONTEXT, typer.Context, None)

    def wrapper(**kwargs: Any) -> Any:  # typer passes every parameter by keyword
        ctx = kwargs.pop(_CONTEXT, None)
        values = {name: kwargs.pop(name) for name in names}
        config_file = values.pop("config_file")
        fusion = FusionOptions(values, _given(ctx, values, config_file), config_file)
        return command(fusion=fusion, **kwargs)

    wrapper.__name__, wrapper.__qualname__, wrapper.__doc__ = command.__name__, command.__qualname__, command.__doc__
    wrapper.__module__ = command.__module__
    wrapper.__signature__ = signature.replace(parameters=[context, *own[:at], *_FUSION_PARAMETERS, *own[at + 1 :]])
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper


def _given(ctx: typer.Context | None, values: Mapping[str, Any], config_file: Path | None) -> frozenset[str]:
    """The fusion options given on the command line; without a command line (a direct call), those not at their
    defaults."""
    if ctx is None:
        defaults = {p.name: p.default for p in _FUSION_PARAMETERS}
        given = {name for name, value in values.items() if value != defaults[name]}
        return frozenset(given | ({"config_file"} if config_file is not None else set()))
    names = [*values, "config_file"]
    return frozenset(name for name in names if getattr(ctx.get_parameter_source(name), "name", None) in _GIVEN_SOURCES)


def read_config_file(path: Path) -> FusionConfig:
    """The `FusionConfig` of a JSON file: the config itself, or an object with a ``config`` entry (``calibrate``'s).

    Raises:
        ConfigError: the file is missing, not JSON, or not a valid fusion config.
    """
    import json

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"--config {path} is not a JSON file: {error}") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    return FusionConfig.from_dict(data)


def one_line_choice(kind: type[E], what: str) -> Callable[[str], E]:
    """A typer ``parser`` for an option typed with the closed choice ``kind`` that refuses a bad value as the library
    does: `parse_choice`'s one line (``error: unknown op 'max'; choose one of ...``), exit 2, where typer's own enum
    options print a usage box."""

    def parse(value: str) -> E:
        try:
            return parse_choice(kind, value, what)
        except ConfigError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(error.exit_code) from None

    return parse
