"""`ViTArch`: the sizes of a ViT that token plans and MAC counts need, independent of torch modules."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["ViTArch", "split_sizes", "max_reduction"]


@dataclass(frozen=True)
class ViTArch:
    """Static sizes of a plain ViT (one token sequence through ``num_blocks`` identical-shape blocks).

    Args:
        name: Model name, for messages.
        num_blocks: Transformer blocks ``L``.
        num_prefix: Protected prefix tokens ``P`` (class, distillation, registers).
        num_patches: Patch tokens ``T`` at the input of block 0.
        embed_dim: Token width ``C``.
        num_heads: Attention heads ``H``.
        head_dim: Width of one head ``D`` (also the width of the matching metric).
        attn_linear_macs: MACs per token of the attention's linear layers (qkv, proj, gate).
        mlp_macs: MACs per token of the MLP.
        embed_macs: MACs of the patch embedding for one image.
        head_macs: MACs of the classifier head(s) for one image.
    """

    name: str
    num_blocks: int
    num_prefix: int
    num_patches: int
    embed_dim: int
    num_heads: int
    head_dim: int
    attn_linear_macs: int
    mlp_macs: int
    embed_macs: int
    head_macs: int

    @property
    def num_tokens(self) -> int:
        """Tokens at the input of block 0, ``P + T``."""
        return self.num_prefix + self.num_patches

    def block_macs(self, tokens_in: int, r: int) -> int:
        """MACs of one block for one image: attention on ``tokens_in``, matching, MLP on ``tokens_in - r``."""
        attention = tokens_in * self.attn_linear_macs + 2 * self.num_heads * tokens_in * tokens_in * self.head_dim
        num_a, num_b = split_sizes(tokens_in, self.num_prefix)
        matching = num_a * num_b * self.head_dim if r > 0 else 0
        return attention + matching + (tokens_in - r) * self.mlp_macs

    def to_dict(self) -> dict:
        """The sizes as plain JSON types."""
        return asdict(self)


def split_sizes(num_tokens: int, num_prefix: int) -> tuple[int, int]:
    """Sizes of the A set (non-prefix tokens at even positions) and the B set (odd positions).

    Args:
        num_tokens: Tokens ``N`` in the block, prefix included.
        num_prefix: Protected prefix tokens ``P``.

    Returns:
        ``(|A|, |B|)`` with ``|A| + |B| = N - P``.
    """
    num_a = (num_tokens + 1) // 2 - (num_prefix + 1) // 2
    return num_a, num_tokens - num_prefix - num_a


def max_reduction(num_tokens: int, num_prefix: int) -> int:
    """The most tokens one fusion step can remove: every A token, provided B has a token to absorb them."""
    num_a, num_b = split_sizes(num_tokens, num_prefix)
    return num_a if num_b > 0 else 0
