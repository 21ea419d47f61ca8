"""Fusion ops: matching (an index plan), applying it (prune / mean / MLERP), and their loop references."""

from tofu_edge.ops.match import TokenMatch, match_tokens
from tofu_edge.ops.merge import fuse_tokens, gather_tokens

__all__ = ["TokenMatch", "match_tokens", "fuse_tokens", "gather_tokens"]
