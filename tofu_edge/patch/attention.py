"""Self-attention of a timm `Attention` plus the matching metric (keys averaged over heads).

Where the keys are a linear function of the input (no ``k_norm``), timm's own ``Attention.forward`` runs
unchanged and the metric comes from one small extra projection with the head-averaged key weights
(``mean_h(x W_h + b_h) = x mean_h(W_h) + mean_h(b_h)``), so the attention graph stays exactly timm's. With
``k_norm`` the attention is composed from the module's own sub-layers to reuse the normalized keys. Tests
check both against ``attn(x, attn_mask=bias)`` for every supported family.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Attention

__all__ = ["attend", "mean_key", "size_bias"]


def size_bias(size: torch.Tensor) -> torch.Tensor:
    """Proportional-attention bias ``log(size)`` of every key token.

    Shapes:
        size: [B, N, 1]
        returns: [B, 1, 1, N]
    """
    return size.log().transpose(1, 2)[:, None]


def mean_key(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Keys averaged over heads for an attention without ``k_norm``, from head-averaged key weights.

    Shapes:
        x: [B, N, C]
        returns: [B, N, D]
    """
    dim, heads = attn.attn_dim, attn.num_heads
    weight = attn.qkv.weight[dim : 2 * dim].reshape(heads, attn.head_dim, -1).mean(dim=0)
    bias = attn.qkv.bias
    bias = None if bias is None else bias[dim : 2 * dim].reshape(heads, attn.head_dim).mean(dim=0)
    return F.linear(x, weight, bias)


def attend(
    attn: Attention, x: torch.Tensor, bias: torch.Tensor | None, with_metric: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multi-head self-attention with an optional additive logit bias, and the matching metric.

    Args:
        attn: timm's `Attention` module.
        x: Normalized tokens.
        bias: Added to the attention logits (proportional attention), or ``None``.
        with_metric: Also return the keys averaged over heads (after ``k_norm``).

    Returns:
        The attention output, and the metric or ``None``.

    Shapes:
        x: [B, N, C]
        bias: [B, 1, 1, N]
        returns: [B, N, C], [B, N, D]
    """
    if isinstance(attn.k_norm, torch.nn.Identity) or not with_metric:
        return attn(x, attn_mask=bias), mean_key(attn, x) if with_metric else None
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
