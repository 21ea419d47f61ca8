"""`fuse` / `unfuse` for timm Vision Transformers: swap classes in place, keep every weight and key."""

from __future__ import annotations

import torch
from timm.layers import Attention, PatchEmbed
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import Block, VisionTransformer

from tofu_edge.arch import ViTArch
from tofu_edge.config import FusionConfig
from tofu_edge.errors import InputShapeError, UnsupportedModelError
from tofu_edge.models import input_shape
from tofu_edge.patch.block import FusedBlock
from tofu_edge.plan import FusionPlan, resolve_plan

__all__ = ["fuse", "unfuse", "is_fused", "describe_vit", "embed_tokens", "SUPPORTED"]

SUPPORTED = (
    "timm VisionTransformer and VisionTransformerDistilled models built from the standard Block and "
    "Attention with a fixed image size and token, avg, max or no pooling: ViT, DeiT (incl. distilled), "
    "DeiT-III, DINOv2-style (registers, LayerScale), CLIP-style (norm_pre), q/k-norm and average-pooled ViTs"
)
_MODEL_CLASSES = (VisionTransformer, VisionTransformerDistilled)
_POOLS = ("token", "avg", "max", "")


class FusedVisionTransformer:
    """Mixin placed in front of the model's own class by `fuse`: threads token sizes through the blocks.

    The model's modules are called as they are; only the loop over blocks (which now also carries sizes)
    and the pooling of average-pooled models (weighted by size) differ from timm.
    """

    tofu_plan: FusionPlan
    tofu_unfused_class: type

    def forward_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens after the final norm and their sizes (``None`` while all ones).

        Shapes:
            images: [B, in_chans, H, W]
            returns: [B, N_out, C], [B, N_out, 1]
        """
        self._check_images(images)
        x, size = embed_tokens(self, images), None
        for block in self.blocks:
            x, size = block.forward_fused(x, size)
        return self.norm(x), size

    def forward_features(self, images: torch.Tensor, attn_mask: None = None, is_causal: bool = False) -> torch.Tensor:
        """Tokens after the final norm, as timm's `forward_features` (``N_out`` of them).

        Shapes:
            images: [B, in_chans, H, W]
            returns: [B, N_out, C]
        """
        _reject_masks(attn_mask, is_causal)
        return self.forward_tokens(images)[0]

    def forward(self, images: torch.Tensor, attn_mask: None = None, is_causal: bool = False) -> torch.Tensor:
        """Logits (or whatever the model's head returns) of the fused model.

        Shapes:
            images: [B, in_chans, H, W]
            returns: [B, num_classes]
        """
        _reject_masks(attn_mask, is_causal)
        return self.forward_fused_head(*self.forward_tokens(images))

    def forward_fused_head(self, tokens: torch.Tensor, size: torch.Tensor | None) -> torch.Tensor:
        """The model's head on fused tokens: timm's `forward_head`, its average pooling weighted by size.

        Shapes:
            tokens: [B, N_out, C] after the final norm
            size: [B, N_out, 1], or ``None`` while all ones
            returns: [B, num_classes]
        """
        if self.global_pool == "avg" and size is not None:
            tokens = _size_weighted_tokens(tokens, size, self.num_prefix_tokens)
        return self.forward_head(tokens)

    def forward_intermediates(self, *args, **kwargs):
        raise UnsupportedModelError("forward_intermediates needs full token grids; call tofu_edge.unfuse(model) first")

    def _check_images(self, images: torch.Tensor) -> None:
        expected = input_shape(self)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise InputShapeError(
                f"{self.tofu_plan.arch.name} was fused for images of shape [B, {', '.join(map(str, expected))}], "
                f"got {list(images.shape)}"
            )


def fuse(model: torch.nn.Module, config: FusionConfig | None = None) -> torch.nn.Module:
    """Fuse tokens in every block of a timm ViT, in place. Fusing a fused model re-fuses it.

    The model's weights, buffers and ``state_dict`` keys are untouched; classes are swapped, and the
    resolved plan is kept as ``model.tofu_plan``. ``r=0`` everywhere gives timm's outputs exactly.

    Args:
        model: A supported timm Vision Transformer (see ``SUPPORTED``).
        config: What to fuse; the default fuses nothing (``r=0``).

    Returns:
        The same model object.

    Raises:
        UnsupportedModelError: a model family or option fusion does not handle (lists what is supported).
        ScheduleError: a schedule that cannot be carried out (names the block and the limit).
    """
    config = config or FusionConfig()
    arch = describe_vit(model)
    plan = resolve_plan(config, arch)  # every check before the first change
    unfuse(model)
    for block, step in zip(model.blocks, plan.blocks, strict=True):
        block.__class__ = FusedBlock
        block.tofu_step = step
    model.__class__ = _fused_class(type(model))
    model.tofu_plan = plan
    return model


def unfuse(model: torch.nn.Module) -> torch.nn.Module:
    """Undo `fuse` in place (a no-op on a model that is not fused).

    Returns:
        The same model object, now of its original class.
    """
    if not is_fused(model):
        return model
    for block in model.blocks:
        block.__class__ = Block
        del block.tofu_step
        block.__dict__.pop("tofu_fusion", None)  # a step `use_step` chose
    model.__class__ = model.tofu_unfused_class
    del model.tofu_plan
    return model


def embed_tokens(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The token sequence block 0 sees: timm's patch embedding, position embedding with the prefix tokens,
    patch dropout and pre-norm, called as timm composes them.

    Shapes:
        images: [B, in_chans, H, W]
        returns: [B, N, C]
    """
    return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(images))))


def is_fused(model: torch.nn.Module) -> bool:
    """Whether `fuse` was applied to ``model``."""
    return isinstance(model, FusedVisionTransformer)


def describe_vit(model: torch.nn.Module) -> ViTArch:
    """The sizes of a supported ViT, after checking that fusion handles it.

    Raises:
        UnsupportedModelError: the model, its blocks, its embedding or its pooling are not supported.
    """
    base = model.tofu_unfused_class if is_fused(model) else type(model)
    name = getattr(model, "pretrained_cfg", {}).get("architecture") or base.__name__
    _refuse_unless(base in _MODEL_CLASSES, f"{name} is a {base.__name__}")
    _refuse_unless(
        type(model.patch_embed) is PatchEmbed, f"{name} embeds patches with {type(model.patch_embed).__name__}"
    )
    _refuse_unless(not model.dynamic_img_size, f"{name} has dynamic_img_size=True (fusion fixes the token count)")
    _refuse_unless(model.attn_pool is None, f"{name} pools with attention (global_pool='map')")
    _refuse_unless(model.global_pool in _POOLS, f"{name} pools with global_pool={model.global_pool!r}")
    _refuse_unless(not model.pool_include_prefix, f"{name} includes prefix tokens in its pooling")
    for index, block in enumerate(model.blocks):
        _refuse_unless(
            type(block) is Block or isinstance(block, FusedBlock), f"{name} block {index} is a {type(block).__name__}"
        )
        _refuse_unless(type(block.attn) is Attention, f"{name} block {index} attends with {type(block.attn).__name__}")

    attn = model.blocks[0].attn
    heads = [h for h in (model.head, getattr(model, "head_dist", None)) if isinstance(h, torch.nn.Linear)]
    return ViTArch(
        name=name,
        num_blocks=len(model.blocks),
        num_prefix=model.num_prefix_tokens,
        num_patches=model.patch_embed.num_patches,
        embed_dim=model.embed_dim,
        num_heads=attn.num_heads,
        head_dim=attn.head_dim,
        attn_linear_macs=_linear_macs(attn),
        mlp_macs=_linear_macs(model.blocks[0].mlp),
        embed_macs=model.patch_embed.num_patches * model.patch_embed.proj.weight.numel(),
        head_macs=sum(h.weight.numel() for h in heads),
    )


def _refuse_unless(ok: bool, what: str) -> None:
    if not ok:
        raise UnsupportedModelError(f"{what}; tofu-edge supports {SUPPORTED}")


def _linear_macs(module: torch.nn.Module) -> int:
    """MACs per token of every linear layer in ``module``."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def _size_weighted_tokens(tokens: torch.Tensor, size: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Prefix tokens plus one token holding the size-weighted mean of the others, so that the model's
    own average pooling (a mean over that single token) returns the weighted mean.

    Shapes:
        tokens: [B, N, C]
        size: [B, N, 1]
        returns: [B, P + 1, C]
    """
    patch_size = size[:, num_prefix:]
    weighted = (tokens[:, num_prefix:] * patch_size).sum(dim=1, keepdim=True) / patch_size.sum(dim=1, keepdim=True)
    return torch.cat([tokens[:, :num_prefix], weighted], dim=1)


def _reject_masks(attn_mask: torch.Tensor | None, is_causal: bool) -> None:
    if attn_mask is not None or is_causal:
        raise UnsupportedModelError("a fused model takes no attn_mask or is_causal: token counts change per block")


_FUSED_CLASSES: dict[type, type] = {}


def _fused_class(base: type) -> type:
    """``Fused<Base>``: `FusedVisionTransformer` in front of the model's class, one per class."""
    if base not in _FUSED_CLASSES:
        attrs = {"tofu_unfused_class": base, "__module__": __name__}
        _FUSED_CLASSES[base] = type(f"Fused{base.__name__}", (FusedVisionTransformer, base), attrs)
    return _FUSED_CLASSES[base]
