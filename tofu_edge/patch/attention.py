"""What a fused block needs beside timm's own attention: the proportional-attention bias, the matching metric (the
attention keys averaged over heads) and, for ``selection=attention``, the class token's attention.

The attention itself is always timm's ``Attention.forward``, called unchanged with the bias as its ``attn_mask``.
The metric is computed beside it from the same weights: where the keys are a linear function of the input (no
``k_norm``) it is one small projection with the head-averaged key weights
(``mean_h(x W_h + b_h) = x mean_h(W_h) + mean_h(b_h)``, exact); with ``k_norm`` the keys are projected,
normalized per head and then averaged (one extra ``C x C`` projection on q/k-norm models).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Attention

__all__ = ["mean_key", "size_bias", "class_attention"]


def size_bias(size: torch.Tensor) -> torch.Tensor:
    """Proportional-attention bias ``log(size)`` of every key token.

    Shapes:
        size: [B, N, 1]
        returns: [B, 1, 1, N]
    """
    # The same memory order as [B, N, 1]: one Reshape when exported (a Transpose and an Unsqueeze cost onnxruntime
    # about 35 µs per block at batch 1).
    return size.log().reshape(-1, 1, 1, size.shape[1])


def mean_key(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """The attention's keys averaged over heads (after ``k_norm`` where the model has one).

    Args:
        attn: timm's `Attention` module.
        x: The tokens the attention sees (after ``norm1``).

    Shapes:
        x: [B, N, C]
        returns: [B, N, D]
    """
    dim, heads, head_dim = attn.attn_dim, attn.num_heads, attn.head_dim
    weight = attn.qkv.weight[dim : 2 * dim]
    bias = None if attn.qkv.bias is None else attn.qkv.bias[dim : 2 * dim]
    if isinstance(attn.k_norm, torch.nn.Identity):  # linear keys: average the weights, not the outputs
        weight = weight.reshape(heads, head_dim, -1).mean(dim=0)
        bias = None if bias is None else bias.reshape(heads, head_dim).mean(dim=0)
        return F.linear(x, weight, bias)
    keys = F.linear(x, weight, bias).unflatten(-1, (heads, head_dim))  # [B, N, H, D]
    return attn.k_norm(keys).mean(dim=2)


def class_attention(attn: Attention, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The class token's attention probabilities to every token, averaged over heads.

    Only the class token's query is formed. Where the keys are linear (no ``k_norm``) its logits are
    ``scale * q_h . (W_h x_j + b_h)``: the bias term is the same for every ``j`` and cancels in the softmax, so
    the logits are one ``[B, N, C] x [B, C, H]`` product with ``scale * W_h^T q_h`` (exact, no keys formed).

    Args:
        attn: timm's `Attention` module.
        x: The tokens the attention sees (after ``norm1``); token 0 is the class token.
        bias: The proportional-attention bias (`size_bias`) where the block uses one.

    Shapes:
        x: [B, N, C]
        bias: [B, 1, 1, N]
        returns: [B, N]
    """
    dim, heads, head_dim = attn.attn_dim, attn.num_heads, attn.head_dim
    qkv_bias = attn.qkv.bias
    query = F.linear(x[:, 0], attn.qkv.weight[:dim], None if qkv_bias is None else qkv_bias[:dim])
    query = attn.q_norm(query.reshape(-1, heads, 1, head_dim))[:, :, 0] * attn.scale  # [B, H, D]
    key_weight = attn.qkv.weight[dim : 2 * dim]
    if isinstance(attn.k_norm, torch.nn.Identity):
        key_weight = key_weight.reshape(heads, head_dim, -1)  # [H, D, C]
        folded = torch.einsum("bhd,hdc->bch", query, key_weight)  # [B, C, H]
        logits = (x @ folded).transpose(1, 2)  # [B, H, N]
    else:
        key_bias = None if qkv_bias is None else qkv_bias[dim : 2 * dim]
        keys = attn.k_norm(F.linear(x, key_weight, key_bias).unflatten(-1, (heads, head_dim)).transpose(1, 2))
        logits = (keys @ query[..., None])[..., 0]  # [B, H, N]
    if bias is not None:
        logits = logits + bias[:, 0]
    return logits.softmax(dim=-1).mean(dim=1)
