"""Options shared by several commands, declared once: the fusion options (``--r``, ``--mode``, ``--switch``, ...)
that `with_fusion_options` adds to a command, and the model argument, image size and checkpoint options."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tofu_edge.choices import StepBackend, parse_choice
from tofu_edge.config import DEFAULT_MODE, FusionConfig, Mode, Selection
from tofu_edge.errors import ConfigError

__all__ = [
    "ModelArg",
    "ImgSizeOption",
    "CheckpointOption",
    "StepOption",
    "FusionOptions",
    "NO_FUSION_OPTIONS",
    "with_fusion_options",
    "parse_r",
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
    """The fusion options as the user gave them; ``r`` is ``None`` when ``--r`` was not given."""

    r: str | None = None
    mode: Mode = DEFAULT_MODE
    switch: int | None = None
    ops: str | None = None
    inflection: float = 0.0
    keep: float | None = None
    clamp: bool = False
    prop_attn: bool = True
    align: int | None = None
    selection: Selection = Selection.BIPARTITE
    config_file: Path | None = None

    @property
    def schedule_given(self) -> bool:
        """Whether ``--r``, ``--keep`` or ``--config`` was given."""
        return self.r is not None or self.keep is not None or self.config_file is not None

    def config(self) -> FusionConfig:
        """The `FusionConfig` these options describe (no ``--r`` and no ``--keep``: ``r=0``, nothing fused), or the
        one in the ``--config`` file.

        Raises:
            ConfigError: a malformed ``--r`` or ``--ops``, conflicting options, an unreadable ``--config`` file
                (the library's own checks).
        """
        if self.config_file is not None:
            if self != FusionOptions(config_file=self.config_file):
                raise ConfigError("--config FILE holds the whole fusion config; leave out the other fusion options")
            return read_config_file(self.config_file)
        if self.r is not None and self.keep is not None:
            raise ConfigError("give either --keep (a MACs target) or --r (a token schedule), not both")
        return FusionConfig(
            r=0 if self.r is None else parse_r(self.r),
            mode=self.mode,
            switch=self.switch,
            prop_attn=self.prop_attn,
            inflection=self.inflection,
            keep=self.keep,
            clamp=self.clamp,
            ops=None if self.ops is None else tuple(op.strip() for op in self.ops.split(",")),
            align=self.align,
            selection=self.selection,
        )


NO_FUSION_OPTIONS = FusionOptions()  # the placeholder default of a command's ``fusion`` parameter

_FUSION_PARAMETERS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
    for name, annotation, default in (
        (
            "r",
            Annotated[
                str | None,
                typer.Option(
                    "--r",
                    "-r",
                    help="Tokens removed per block: one int for every block, or a comma list per block.",
                    show_default=False,
                ),
            ],
            None,
        ),
        (
            "mode",
            Annotated[
                Mode,
                typer.Option(
                    help="mlerp (default), mean (ToMe) or prune in every block; tofu = prune below --switch, MLERP "
                    "from it."
                ),
            ],
            DEFAULT_MODE,
        ),
        (
            "switch",
            Annotated[
                int | None,
                typer.Option(help="First MLERP block in tofu mode (default 1; see calibrate).", show_default=False),
            ],
            None,
        ),
        (
            "ops",
            Annotated[
                str | None,
                typer.Option(
                    help="One step operation per block, e.g. prune,prune,mlerp,...: mode per-block (see calibrate).",
                    show_default=False,
                ),
            ],
            None,
        ),
        (
            "inflection",
            Annotated[float, typer.Option(help="ToMe's schedule shape for a constant r: <0 decreasing.")],
            0.0,
        ),
        (
            "keep",
            Annotated[
                float | None,
                typer.Option(
                    help="Target fraction of the unfused MACs, solved into per-block r (instead of --r).",
                    show_default=False,
                ),
            ],
            None,
        ),
        ("clamp", Annotated[bool, typer.Option(help="Cap r at what each block can remove instead of failing.")], False),
        (
            "prop_attn",
            Annotated[bool, typer.Option(help="Proportional attention: add log(size) to the logits.")],
            True,
        ),
        (
            "align",
            Annotated[
                int | None,
                typer.Option(
                    help="Shape r so every block leaves a multiple of this many tokens (e.g. 8), same MACs within 1 %.",
                    show_default=False,
                ),
            ],
            None,
        ),
        (
            "selection",
            Annotated[
                Selection,
                typer.Option(
                    help="Which tokens may be removed: bipartite (ToMe), energy (isolated tokens protected) or "
                    "attention (tokens the class token attends to most protected)."
                ),
            ],
            Selection.BIPARTITE,
        ),
        (
            "config_file",
            Annotated[
                Path | None,
                typer.Option(
                    "--config",
                    help="A fusion config file (JSON, as tofu-edge calibrate writes it) instead of the options above.",
                    show_default=False,
                ),
            ],
            None,
        ),
    )
]


def with_fusion_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the fusion options, declared here once; it receives them as ``fusion: FusionOptions``.

    The command declares ``fusion: FusionOptions = NO_FUSION_OPTIONS`` where the options should appear in
    ``--help``; the wrapper that typer sees has the options themselves in its place.
    """
    signature = inspect.signature(command, eval_str=True)
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()]
    at = [p.name for p in own].index("fusion")
    names = [p.name for p in _FUSION_PARAMETERS]

    def wrapper(**kwargs: Any) -> Any:  # typer passes every parameter by keyword
        fusion = FusionOptions(**{name: kwargs.pop(name) for name in names})
        return command(fusion=fusion, **kwargs)

    wrapper.__name__, wrapper.__qualname__, wrapper.__doc__ = command.__name__, command.__qualname__, command.__doc__
    wrapper.__module__ = command.__module__
    wrapper.__signature__ = signature.replace(parameters=[*own[:at], *_FUSION_PARAMETERS, *own[at + 1 :]])
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper


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


def parse_r(text: str) -> int | tuple[int, ...]:
    """``"13"`` → 13, ``"16,16,8"`` → (16, 16, 8).

    Raises:
        ConfigError: not an int or a comma list of ints.
    """
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--r takes an int or a comma list of ints, got {text!r}") from None
    return values[0] if len(values) == 1 else values


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
