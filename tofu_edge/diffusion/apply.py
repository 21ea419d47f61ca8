"""`apply` / `remove`: token fusion in a diffusers UNet or diffusion transformer, in place, by swapping classes.

Only the classes of the fused sub-modules (``attn1``, optionally ``attn2`` and ``ff`` of every
``BasicTransformerBlock`` at a fused level) change; weights, buffers and ``state_dict`` keys are untouched, and
`remove` restores the original classes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from diffusers.models.attention import BasicTransformerBlock, FeedForward
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from tofu_edge.diffusion.config import DiffusionFusionConfig
from tofu_edge.diffusion.family import Family, family_of
from tofu_edge.diffusion.layers import MergeStep, fused_class, is_fused_module
from tofu_edge.diffusion.tokens import GridPartition, grid_partition
from tofu_edge.errors import ConfigError, ScheduleError, UnsupportedModelError

__all__ = ["DiffusionPlan", "plan_fusion", "apply", "remove", "is_applied", "SUPPORTED", "latent_size"]

SUPPORTED = (
    "diffusers UNet2DConditionModel (SD 1.x/2.x layout: Transformer2DModel of BasicTransformerBlock with "
    "norm_type layer_norm), DiTTransformer2DModel (ada_norm_zero) and PixArtTransformer2DModel (ada_norm_single), "
    "with default attention (AttnProcessor2_0 or AttnProcessor) and no only_cross_attention, double_self_attention, "
    "gated (GLIGEN) attention, positional embeddings in the block or chunked feed-forward"
)
_NORM_TYPES = {Family.UNET: ("layer_norm",), Family.DIT: ("ada_norm_zero",), Family.PIXART: ("ada_norm_single",)}
_PROCESSORS = (AttnProcessor2_0, AttnProcessor)


@dataclass(frozen=True)
class DiffusionPlan:
    """What `apply` did to a model: the config, the latent size it was fixed for, and every fused sub-module."""

    model: str
    sample_size: tuple[int, int]
    config: DiffusionFusionConfig
    steps: tuple[MergeStep, ...]

    def to_dict(self) -> dict:
        """A JSON-ready summary: one entry per level (grid, tokens, r, fused sub-modules), not per module."""
        levels: dict[int, dict] = {}
        for step in self.steps:
            entry = levels.setdefault(
                step.level,
                {
                    "level": step.level,
                    "grid": [step.partition.height, step.partition.width],
                    "tokens": step.num_tokens,
                    "r": step.r,
                    "modules": {},
                },
            )
            entry["modules"][step.kind] = entry["modules"].get(step.kind, 0) + 1
        return {
            "model": self.model,
            "sample_size": list(self.sample_size),
            "config": self.config.to_dict(),
            "fused_modules": len(self.steps),
            "levels": [levels[k] for k in sorted(levels)],
        }


def latent_size(model: torch.nn.Module, sample_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
    """``(height, width)`` of the latent: ``sample_size`` or the model's ``config.sample_size``.

    Raises:
        ConfigError: neither gives a size, or it is not positive.
    """
    size = sample_size if sample_size is not None else getattr(model.config, "sample_size", None)
    if size is None:
        raise ConfigError("the model's config has no sample_size; pass sample_size=(height, width) of the latent")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if min(height, width) < 1:
        raise ConfigError(f"sample_size must be positive, got {size!r}")
    return int(height), int(width)


def plan_fusion(
    model: torch.nn.Module, config: DiffusionFusionConfig, sample_size: int | tuple[int, int] | None = None
) -> DiffusionPlan:
    """Check the model and resolve every fused sub-module's static step, without changing anything.

    Raises:
        UnsupportedModelError: a model, block or option that is not supported (lists what is).
        ConfigError: a latent size the model cannot take, or ratios for levels the model does not have.
        ScheduleError: a ratio that merges more tokens than a level has sources.
    """
    family = _family(model)
    height, width = latent_size(model, sample_size)
    groups = list(_transformer_groups(model, family, height, width))
    num_levels = 1 + max(level for _, level, _, _ in groups) if groups else 0
    if isinstance(config.ratio, tuple) and len(config.ratio) > max(num_levels, 1):
        raise ConfigError(
            f"{len(config.ratio)} per-level ratios given, but {family.model_class.__name__} has {num_levels} levels"
        )
    steps, partitions, module_index = [], {}, 0
    for prefix, level, grid, transformer in groups:
        for index, block in enumerate(_blocks(transformer)):
            name = f"{prefix}transformer_blocks.{index}"
            _check_block(name, block, family)
            ratio = config.level_ratio(level)
            for kind in _kinds(config, block):
                r = int(ratio * grid[0] * grid[1])
                if r == 0:
                    continue
                key = (grid, module_index)
                if key not in partitions:
                    partitions[key] = grid_partition(*grid, config.sx, config.sy, config.destinations, module_index)
                _check_r(name, level, ratio, r, partitions[key], config)
                steps.append(MergeStep(f"{name}.{kind}", kind, level, partitions[key], r, config.op))
            module_index += 1
    return DiffusionPlan(family.model_class.__name__, (height, width), config, tuple(steps))


def apply(
    model: torch.nn.Module,
    config: DiffusionFusionConfig | None = None,
    *,
    sample_size: int | tuple[int, int] | None = None,
) -> torch.nn.Module:
    """Fuse tokens in a diffusers UNet or diffusion transformer, in place. Applying again re-applies.

    Token counts are fixed here for one latent size (``sample_size``, default the model's ``config.sample_size``):
    a call with another size raises `InputShapeError`. A ratio of 0 everywhere leaves every module as it was.

    Args:
        model: A supported diffusers model (see ``SUPPORTED``).
        config: What to fuse; default `DiffusionFusionConfig()` (ratio 0.5 at the full-resolution level, mean).
        sample_size: Latent ``height`` (int: square) or ``(height, width)``.

    Returns:
        The same model object; ``model.tofu_plan`` holds the `DiffusionPlan`.

    Raises:
        UnsupportedModelError: the model or one of its blocks is not supported (lists what is).
        ConfigError, ScheduleError: a size or ratio the model cannot take.
    """
    plan = plan_fusion(model, config or DiffusionFusionConfig(), sample_size)  # every check before the first change
    remove(model)
    for step in plan.steps:
        module = model.get_submodule(step.name)
        module.__class__ = fused_class(type(module))
        module.tofu_step = step
    model.tofu_plan = plan
    return model


def remove(model: torch.nn.Module) -> torch.nn.Module:
    """Undo `apply` in place (a no-op on a model that is not fused).

    Returns:
        The same model object, every sub-module of its original class.
    """
    for module in model.modules():
        if is_fused_module(module):
            module.__class__ = module.tofu_unfused_class
            del module.tofu_step
    if isinstance(model.__dict__.get("tofu_plan"), DiffusionPlan):
        del model.tofu_plan
    return model


def is_applied(model: torch.nn.Module) -> bool:
    """Whether `apply` was called on ``model`` (and not undone)."""
    return isinstance(model.__dict__.get("tofu_plan"), DiffusionPlan)


def _family(model: torch.nn.Module) -> Family:
    family = family_of(model)
    if family is not None:
        return family
    raise UnsupportedModelError(f"{type(model).__name__} is not supported; tofu_edge.diffusion supports {SUPPORTED}")


def _transformer_groups(
    model: torch.nn.Module, family: Family, height: int, width: int
) -> Iterator[tuple[str, int, tuple[int, int], torch.nn.Module]]:
    """``(name prefix, level, token grid, module holding transformer_blocks)`` for every group of blocks."""
    if family is not Family.UNET:
        patch = model.config.patch_size
        if height % patch or width % patch:
            raise ConfigError(f"latent size {height}x{width} is not a multiple of the patch size {patch}")
        yield "", 0, (height // patch, width // patch), model
        return
    downsamples = sum(getattr(b, "downsamplers", None) is not None for b in model.down_blocks)
    multiple = 2**downsamples
    if height % multiple or width % multiple:
        raise ConfigError(f"latent size {height}x{width} is not a multiple of {multiple} (the UNet downsamples it)")
    stages = [(f"down_blocks.{i}", b) for i, b in enumerate(model.down_blocks)]
    stages += [("mid_block", model.mid_block)] if model.mid_block is not None else []
    stages += [(f"up_blocks.{i}", b) for i, b in enumerate(model.up_blocks)]
    factor = 1
    for name, stage in stages:
        for index, transformer in enumerate(getattr(stage, "attentions", None) or []):
            if not isinstance(transformer, Transformer2DModel) or not transformer.is_input_continuous:
                _refuse(f"{name}.attentions.{index} is a {type(transformer).__name__}")
            level = int(math.log2(factor))
            yield f"{name}.attentions.{index}.", level, (height // factor, width // factor), transformer
        if name.startswith("down") and getattr(stage, "downsamplers", None) is not None:
            factor *= 2
        elif name.startswith("up") and getattr(stage, "upsamplers", None) is not None:
            factor //= 2


def _blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    return list(transformer.transformer_blocks)


def _check_block(name: str, block: torch.nn.Module, family: Family) -> None:
    if not isinstance(block, BasicTransformerBlock):
        _refuse(f"{name} is a {type(block).__name__}")
    norms = _NORM_TYPES[family]
    checks = (
        (block.norm_type in norms, f"has norm_type {block.norm_type!r}"),
        (not block.only_cross_attention, "has only_cross_attention=True"),
        (not block.double_self_attention, "has double_self_attention=True"),
        (not hasattr(block, "fuser"), "has gated (GLIGEN) attention"),
        (block.pos_embed is None, "adds positional embeddings in the block"),
        (block._chunk_size is None, "chunks its feed-forward"),
        (type(block.ff) is FeedForward or is_fused_module(block.ff), f"has a {type(block.ff).__name__} feed-forward"),
    )
    for ok, what in checks:
        if not ok:
            _refuse(f"{name} {what}")
    for attn_name in ("attn1", "attn2"):
        attn = getattr(block, attn_name)
        if attn is None:
            continue
        if not isinstance(attn, Attention) or type(attn.processor) not in _PROCESSORS:
            processor = type(getattr(attn, "processor", None)).__name__
            _refuse(f"{name}.{attn_name} is a {type(attn).__name__} with processor {processor}")
        if attn.group_norm is not None or attn.spatial_norm is not None or attn.residual_connection:
            _refuse(f"{name}.{attn_name} has a group norm, spatial norm or residual connection inside the attention")


def _kinds(config: DiffusionFusionConfig, block: torch.nn.Module) -> list[str]:
    kinds = ["attn1"] if config.merge_attn else []
    kinds += ["attn2"] if config.merge_crossattn and block.attn2 is not None else []
    return kinds + (["ff"] if config.merge_mlp else [])


def _check_r(name: str, level: int, ratio: float, r: int, partition: GridPartition, config: DiffusionFusionConfig):
    if r > partition.num_a:
        limit = partition.num_a / partition.num_tokens
        raise ScheduleError(
            f"{name} (level {level}, {partition.height}x{partition.width} tokens): ratio {ratio} merges {r} tokens, "
            f"more than the {partition.num_a} that are not destinations; with sx={config.sx}, sy={config.sy} use a "
            f"ratio of at most {math.floor(limit * 1000) / 1000}"
        )


def _refuse(what: str) -> None:
    raise UnsupportedModelError(f"{what}; tofu_edge.diffusion supports {SUPPORTED}")
