"""`tofu-edge visualize`: a PNG of which patches each final token of a fused model stands for."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tofu_edge.choices import GroupColours
from tofu_edge.cli.options import (
    NO_FUSION_OPTIONS,
    CheckpointOption,
    FusionOptions,
    ImgSizeOption,
    ModelArg,
    with_fusion_options,
)
from tofu_edge.errors import ConfigError

__all__ = ["visualize_command"]


@with_fusion_options
def visualize_command(
    model: ModelArg,
    image: Annotated[Path, typer.Argument(help="A photograph (JPEG, PNG, ...).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .png to write.")],
    fusion: FusionOptions = NO_FUSION_OPTIONS,
    img_size: ImgSizeOption = None,
    checkpoint: CheckpointOption = None,
    pretrained: Annotated[bool, typer.Option(help="timm's hub weights (needs a network).")] = False,
    seed: Annotated[
        int, typer.Option(help="Seed of the random weights (without --checkpoint or --pretrained): the same picture.")
    ] = 0,
    colours: Annotated[
        GroupColours,
        typer.Option(help="average: each group's mean colour (ToMe); random: one random colour per group."),
    ] = GroupColours.AVERAGE,
) -> None:
    """Draw which original patches were merged into each final token, and which were pruned (as ToMe draws it).

    Left: the image as the model sees it (timm's preprocessing); right: every final token's patch group in its
    average colour with white borders, pruned patches grey and hatched. Random weights merge arbitrarily: pass
    trained weights (--checkpoint or --pretrained) to see what fusion does on a real model.

    Example: tofu-edge visualize deit_small_patch16_224 cat.jpg --pretrained --r 13 --output fused.png
    """
    if output.suffix.lower() != ".png":
        raise ConfigError(f"--output writes a PNG; give a .png name, got {output}")
    from tofu_edge.checkpoint import load_checkpoint
    from tofu_edge.models import create_model
    from tofu_edge.patch import fuse
    from tofu_edge.visualize import visualize_fusion
    from tofu_edge.weights import seeded

    config = fusion.config()
    with seeded(seed):
        module = create_model(model, img_size=img_size, pretrained=pretrained)
    if checkpoint is not None:
        load_checkpoint(module, checkpoint)
    fuse(module, config)
    tracked = visualize_fusion(module, image, output, colours)
    groups = int((tracked.size[0, module.num_prefix_tokens :, 0] > 1).sum())
    pruned = int(tracked.pruned[0].sum())
    typer.echo(
        f"wrote {output}: {tracked.sources.shape[1] - module.num_prefix_tokens} tokens, "
        f"{groups} merged groups, {pruned} patches pruned"
    )
