"""Which original patches each final token of a fused model stands for, and a picture of it (as ToMe draws it).

`track_sources` runs a fused model block by block through the phases of `FusedBlock` (attention residual, fusion
step, MLP residual) and applies every step's `TokenMatch` to a one-hot source matrix as well (`merge_sources`):
merged sources join their destination's row, pruned sources leave the matrix. A test checks that the tracked
tokens and sizes equal `forward_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from timm.data import create_transform

from tofu_edge.choices import GroupColours, parse_choice
from tofu_edge.errors import ConfigError
from tofu_edge.files import atomic_outputs, check_writable
from tofu_edge.images import data_config, load_image
from tofu_edge.ops.merge import merge_sources
from tofu_edge.patch import embed_tokens, is_fused

__all__ = ["TokenSources", "track_sources", "patch_groups", "render_groups", "visualize_fusion"]

DISPLAY_SIZE = 448  # pixels: small inputs are scaled up to at least this
PRUNED_GREY = np.array([96, 96, 96], dtype=np.float32)
HATCH_SPACING = 6  # pixels between the hatch lines over pruned patches
BORDER = (255, 255, 255)
LEGEND_HEIGHT = 44  # two lines of text
LEGEND_FONT_SIZE = 14


@dataclass(frozen=True)
class TokenSources:
    """Final tokens of a fused model and the original patches behind each.

    Args:
        tokens: Tokens after the final norm (as `forward_tokens` returns them).
        size: Patches each token stands for (all ones when nothing merged).
        sources: ``sources[b, n, t] = 1`` where final token ``n`` holds original patch ``t``; a patch with no 1 in
            its column was pruned. Prefix tokens hold no patch.

    Shapes:
        tokens: [B, N_out, C]
        size: [B, N_out, 1]
        sources: [B, N_out, T]
    """

    tokens: torch.Tensor
    size: torch.Tensor
    sources: torch.Tensor

    @property
    def pruned(self) -> torch.Tensor:
        """Patches no final token holds. Shapes: returns: [B, T] (bool)."""
        return self.sources.sum(dim=1) == 0


def track_sources(model: torch.nn.Module, images: torch.Tensor) -> TokenSources:
    """Run a fused model and follow every original patch through each fusion step.

    Raises:
        ConfigError: ``model`` is not fused (`tofu_edge.fuse`).
        InputShapeError: the images do not have the shape the model was fused for.

    Shapes:
        images: [B, 3, H, W]
    """
    if not is_fused(model):
        raise ConfigError("track_sources needs a fused model: call tofu_edge.fuse(model, config) first")
    model._check_images(images)
    with torch.inference_mode():
        x = embed_tokens(model, images)
        batch, num_tokens, _ = x.shape
        num_prefix = model.num_prefix_tokens
        eye = torch.eye(num_tokens - num_prefix, dtype=x.dtype)
        sources = torch.cat([torch.zeros(num_prefix, num_tokens - num_prefix, dtype=x.dtype), eye])
        sources = sources.expand(batch, -1, -1).contiguous()
        size = None
        for block in model.blocks:
            x, metric, attention = block.attention_residual(x, size)
            x, size, match = block.fusion_step(x, size, metric, attention)
            if match is not None:
                sources = merge_sources(sources, match, block.tofu_step.op)
            x = block.mlp_residual(x)
        size = torch.ones_like(x[..., :1]) if size is None else size
        return TokenSources(tokens=model.norm(x), size=size, sources=sources)


def patch_groups(sources: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """The final token of every patch on the patch grid, ``-1`` for pruned patches.

    Shapes:
        sources: [N_out, T] (one image)
        returns: [gh, gw] (int)
    """
    held = sources.sum(dim=0) > 0
    owner = torch.where(held, sources.argmax(dim=0), torch.full_like(held, -1, dtype=torch.int64))
    return owner.reshape(grid).numpy()


def render_groups(
    image: np.ndarray, groups: np.ndarray, legend: str, colours: GroupColours | str = GroupColours.AVERAGE
) -> np.ndarray:
    """ToMe-style picture: the input beside its token groups, each painted in one colour with white borders
    between groups, and pruned patches greyed and hatched; a legend below.

    Args:
        image: The preprocessed input as RGB bytes.
        groups: `patch_groups` of the image.
        legend: Text for the lines below the picture.
        colours: ``average`` (the group's mean pixel colour, as ToMe draws it) or ``random`` (a seeded random
            colour per group over the faded image, which shows the members of a scattered group more clearly).

    Shapes:
        image: [H, W, 3] (uint8)
        groups: [gh, gw]
        returns: [H' + legend, 2 W' + gap, 3] (uint8)
    """
    from PIL import Image, ImageDraw, ImageFont

    scale = max(1, -(-DISPLAY_SIZE // max(image.shape[:2])))
    height, width = image.shape[0] * scale, image.shape[1] * scale
    big = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC)).astype(np.float32)
    cell_h, cell_w = height // groups.shape[0], width // groups.shape[1]
    labels = np.kron(groups, np.ones((cell_h, cell_w), dtype=groups.dtype))
    colours = parse_choice(GroupColours, colours, "colours")
    palette = np.random.default_rng(0).integers(40, 256, size=(groups.size, 3)).astype(np.float32)
    painted = big.copy()
    for group in np.unique(groups):
        mask = labels == group
        if group < 0:
            painted[mask] = 0.35 * big[mask] + 0.65 * PRUNED_GREY
        else:
            painted[mask] = (
                big[mask].mean(axis=0) if colours is GroupColours.AVERAGE else 0.6 * palette[group] + 0.4 * big[mask]
            )
    rows, cols = np.indices(labels.shape)
    hatch = (labels < 0) & ((rows + cols) % HATCH_SPACING == 0)
    painted[hatch] = 40.0
    edges = np.zeros_like(labels, dtype=bool)
    edges[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edges[1:, :] |= labels[1:, :] != labels[:-1, :]
    painted[edges] = BORDER

    gap = 8
    canvas = Image.new("RGB", (2 * width + gap, height + LEGEND_HEIGHT), "white")
    canvas.paste(Image.fromarray(big.round().clip(0, 255).astype(np.uint8)), (0, 0))
    canvas.paste(Image.fromarray(painted.round().clip(0, 255).astype(np.uint8)), (width + gap, 0))
    ImageDraw.Draw(canvas).multiline_text(
        (4, height + 4), legend, fill=(0, 0, 0), font=ImageFont.load_default(size=LEGEND_FONT_SIZE), spacing=4
    )
    return np.asarray(canvas)


def visualize_fusion(
    model: torch.nn.Module, image_path: str | Path, output: str | Path, colours: GroupColours | str = "average"
) -> TokenSources:
    """Preprocess one image as timm does for ``model``, track its patches and write the picture (atomically).

    Args:
        model: A fused model (`tofu_edge.fuse`).
        image_path: A photograph (JPEG, PNG, ...).
        output: The ``.png`` to write.
        colours: ``average`` or ``random`` group colours (`render_groups`).

    Returns:
        The tracked sources of the image.

    Raises:
        TofuError: missing or unreadable image, unwritable output, a model that is not fused.
    """
    output = Path(output)
    check_writable(output)
    config = data_config(model)
    tensor = load_image(image_path, create_transform(**config))[None]
    tracked = track_sources(model, tensor)
    mean, std = torch.tensor(config["mean"])[:, None, None], torch.tensor(config["std"])[:, None, None]
    rgb = ((tensor[0] * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    groups = patch_groups(tracked.sources[0], tuple(model.patch_embed.grid_size))
    plan = model.tofu_plan
    kept = int((groups >= 0).sum())
    merged = int((tracked.size[0, plan.arch.num_prefix :, 0] > 1).sum())
    r_values = sorted(set(plan.r_schedule))
    r_text = str(r_values[0]) if len(r_values) == 1 else ",".join(map(str, plan.r_schedule))
    modes = _mode_runs([step.op.value for step in plan.blocks])
    legend = (
        f"{plan.arch.name}  r={r_text}  mode={plan.config.mode.value} ({modes})\n"
        f"left: input as the model sees it; right: {groups.size} patches -> {plan.tokens_out - plan.arch.num_prefix} "
        f"tokens, {merged} of them merged groups; {groups.size - kept} patches pruned (grey, hatched)"
    )
    picture = render_groups(rgb, groups, legend, colours)
    from PIL import Image

    with atomic_outputs(output) as (temp,):
        Image.fromarray(picture).save(temp, format="PNG")
    return tracked


def _mode_runs(modes: list[str]) -> str:
    """``["prune", "prune", "mlerp"]`` -> ``"prune 0-1, mlerp 2"``."""
    runs: list[list] = []
    for index, mode in enumerate(modes):
        if runs and runs[-1][0] == mode:
            runs[-1][2] = index
        else:
            runs.append([mode, index, index])
    return ", ".join(f"{mode} {first}" + (f"-{last}" if last > first else "") for mode, first, last in runs)
