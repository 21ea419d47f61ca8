"""Options shared by several commands, and their parsing into a `FusionConfig`."""

from __future__ import annotations

from typing import Annotated

import typer

from tofu_edge.config import FusionConfig, Mode
from tofu_edge.errors import ConfigError

__all__ = [
    "ModelArg",
    "ROption",
    "ModeOption",
    "SwitchOption",
    "InflectionOption",
    "KeepOption",
    "ClampOption",
    "PropAttnOption",
    "ImgSizeOption",
    "fusion_config",
    "parse_r",
]

ModelArg = Annotated[str, typer.Argument(help="timm model name, e.g. deit_small_patch16_224.", show_default=False)]
ROption = Annotated[
    str, typer.Option("--r", "-r", help="Tokens removed per block: one int for every block, or a comma list per block.")
]
ModeOption = Annotated[
    Mode,
    typer.Option(
        help="mlerp (default), mean (ToMe) or prune in every block; tofu = prune below --switch, MLERP from it."
    ),
]
SwitchOption = Annotated[
    int | None, typer.Option(help="First MLERP block in tofu mode (default 1; see calibrate).", show_default=False)
]
InflectionOption = Annotated[float, typer.Option(help="ToMe's schedule shape for a constant r: <0 decreasing.")]
KeepOption = Annotated[
    float | None,
    typer.Option(
        help="Target fraction of the unfused MACs, solved into per-block r (instead of --r).", show_default=False
    ),
]
ClampOption = Annotated[bool, typer.Option(help="Cap r at what each block can remove instead of failing.")]
PropAttnOption = Annotated[bool, typer.Option(help="Proportional attention: add log(size) to the logits.")]
ImgSizeOption = Annotated[
    int | None, typer.Option(help="Square input size (default: the model's own).", show_default=False)
]


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


def fusion_config(
    r: str, mode: Mode, switch: int | None, inflection: float, keep: float | None, clamp: bool, prop_attn: bool
) -> FusionConfig:
    """The `FusionConfig` the shared options describe (``--keep`` replaces ``--r``)."""
    return FusionConfig(
        r=0 if keep is not None else parse_r(r),
        mode=mode,
        switch=switch,
        prop_attn=prop_attn,
        inflection=inflection,
        keep=keep,
        clamp=clamp,
    )
