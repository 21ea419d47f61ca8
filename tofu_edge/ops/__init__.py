"""Fusion ops: matching (an index plan), applying it (prune / mean / MLERP), and their loop references.

This layer knows tensors and `StepOp` only: it imports neither the plan, the patching nor the exporters.
"""

from tofu_edge.ops.match import TokenMatch, match_tokens
from tofu_edge.ops.merge import fuse_tokens, gather_tokens, merge_sources

__all__ = ["TokenMatch", "match_tokens", "fuse_tokens", "gather_tokens", "merge_sources"]
