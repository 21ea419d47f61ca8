"""Self-attention of a timm `Attention` that also returns the keys (the matching metric).

Composed from the module's own sub-layers (``qkv``, ``q_norm``, ``k_norm``, ``norm``, ``gate``, ``proj``)
so LayerScale, q/k-norm, scale-norm, gating and fused attention all behave as in timm. A test checks that
the output equals ``attn(x, attn_mask=bias)`` for every supported family.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Attention

__all__ = ["attend", "size_bias"]


def size_bias(size: torch.Tensor) -> torch.Tensor:
    """Proportional-attention bias ``log(size)`` of every key token.

    Shapes:
        size: [B, N, 1]
        returns: [B, 1, 1, N]
    """
    return size.log().transpose(1, 2)[:, None]


def attend(attn: Attention, x: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head self-attention with an optional additive logit bias.

    Args:
        attn: timm's `Attention` module.
        x: Normalized tokens.
        bias: Added to the attention logits (proportional attention), or ``None``.

    Returns:
        The attention output and the keys averaged over heads (after ``k_norm``).

    Shapes:
        x: [B, N, C]
        bias: [B, 1, 1, N]
        returns: [B, N, C], [B, N, D]
    """
    batch, num_tokens, _ = x.shape
    qkv = attn.qkv(x).reshape(batch, num_tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    dropout = attn.attn_drop.p if attn.training else 0.0
    if attn.fused_attn:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
    else:
        logits = (q * attn.scale) @ k.transpose(-2, -1)
        if bias is not None:
            logits = logits + bias
        out = attn.attn_drop(logits.softmax(dim=-1)) @ v
    out = attn.norm(out.transpose(1, 2).reshape(batch, num_tokens, attn.attn_dim))
    if attn.gate is not None:
        out = out * attn.gate(x).sigmoid()
    return attn.proj_drop(attn.proj(out)), k.mean(dim=1)
