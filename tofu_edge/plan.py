"""Resolve a `FusionConfig` into a static per-block plan: tokens in, r, mode, tokens out, MACs."""

from __future__ import annotations

from dataclasses import dataclass

from tofu_edge.arch import ViTArch, max_reduction, split_sizes
from tofu_edge.config import DEFAULT_TOFU_SWITCH, FusionConfig, Mode, Selection, StepOp
from tofu_edge.errors import ConfigError, ScheduleError

__all__ = ["BlockPlan", "FusionPlan", "resolve_plan", "schedule_r", "align_schedule", "protected_count"]

# The share of a block's A tokens each selection protects, chosen on the calibration photos only (DINOv2 at r=16:
# 0.1 and 0.2 tried for both; benchmarks/README.md, "Selection").
PROTECT_FRACTION = {Selection.ENERGY: 0.1, Selection.ATTENTION: 0.2}


@dataclass(frozen=True)
class BlockPlan:
    """The fixed fusion step of one block. Every field is a Python value, so shapes are static.

    Args:
        index: Block index.
        tokens_in: Tokens ``N`` entering the block.
        r: Tokens removed after the attention.
        op: What the step does with its sources: prune, mean or MLERP (``tofu`` schedules resolve to these).
        num_prefix: Protected prefix tokens ``P``.
        sized: Token sizes can differ from 1 at the input (an earlier block merged).
        prop_attn: Add ``log(size)`` to the attention logits (only when ``sized``).
        macs: MACs of this block for one image.
        selection: Which A tokens may become sources (`Selection`).
        protect: A tokens the selection protects from removal (0 for ``bipartite``).
    """

    index: int
    tokens_in: int
    r: int
    op: StepOp
    num_prefix: int
    sized: bool
    prop_attn: bool
    macs: int
    selection: Selection = Selection.BIPARTITE
    protect: int = 0

    @property
    def tokens_out(self) -> int:
        """Tokens leaving the block, ``N - r``."""
        return self.tokens_in - self.r

    @property
    def merges(self) -> bool:
        """Whether the step changes sizes (``mean``/``mlerp`` with ``r > 0``)."""
        return self.r > 0 and self.op is not StepOp.PRUNE

    def to_dict(self) -> dict:
        """The block plan as plain JSON types."""
        return {
            "block": self.index,
            "tokens_in": self.tokens_in,
            "r": self.r,
            "mode": self.op.value,  # the key files and scripts already read
            "tokens_out": self.tokens_out,
            "prop_attn": self.prop_attn,
            "gmacs": self.macs / 1e9,
            "selection": self.selection.value,
            "protect": self.protect,
        }


@dataclass(frozen=True)
class FusionPlan:
    """The resolved plan of a whole model: its config, its sizes and one `BlockPlan` per block."""

    config: FusionConfig
    arch: ViTArch
    blocks: tuple[BlockPlan, ...]

    @property
    def macs(self) -> int:
        """MACs of the fused model for one image."""
        return self.arch.embed_macs + sum(b.macs for b in self.blocks) + self.arch.head_macs

    @property
    def unfused_macs(self) -> int:
        """MACs of the unfused model for one image."""
        blocks = self.arch.num_blocks * self.arch.block_macs(self.arch.num_tokens, 0)
        return self.arch.embed_macs + blocks + self.arch.head_macs

    @property
    def r_schedule(self) -> tuple[int, ...]:
        """``r`` of every block."""
        return tuple(b.r for b in self.blocks)

    @property
    def tokens_out(self) -> int:
        """Tokens leaving the last block."""
        return self.blocks[-1].tokens_out if self.blocks else self.arch.num_tokens

    def to_dict(self) -> dict:
        """The plan as plain JSON types (config, sizes, blocks and totals)."""
        return {
            "model": self.arch.name,
            "config": self.config.to_dict(),
            "num_prefix": self.arch.num_prefix,
            "tokens_in": self.arch.num_tokens,
            "tokens_out": self.tokens_out,
            "blocks": [b.to_dict() for b in self.blocks],
            "gmacs": self.macs / 1e9,
            "unfused_gmacs": self.unfused_macs / 1e9,
            "macs_ratio": self.macs / self.unfused_macs,
        }


def resolve_plan(config: FusionConfig, arch: ViTArch) -> FusionPlan:
    """Turn a config into the static plan of one model.

    Args:
        config: What to fuse.
        arch: The model's sizes.

    Returns:
        The plan, one `BlockPlan` per block.

    Raises:
        ScheduleError: ``r`` too large for a block (the message names the block and its limit), a list
            longer than the model, a switch past the last block, or a ``keep`` target out of reach.
    """
    if config.switch is not None and config.switch > arch.num_blocks:
        raise ScheduleError(f"switch={config.switch} is past the last block of {arch.name} ({arch.num_blocks} blocks)")
    if config.ops is not None and len(config.ops) != arch.num_blocks:
        raise ScheduleError(f"ops lists {len(config.ops)} operations but {arch.name} has {arch.num_blocks} blocks")
    rs = _solve_keep(config, arch) if config.keep is not None else schedule_r(config, arch.num_blocks)
    if config.align is None:
        return _plan(config, arch, rs)
    base = _plan(config, arch, rs)  # the schedule as asked (and every check on it) before it is shaped
    return _plan(config, arch, align_schedule(arch, list(base.r_schedule), config.align))


def schedule_r(config: FusionConfig, num_blocks: int) -> list[int]:
    """Per-block ``r`` from a constant (with ToMe's inflection) or an explicit list.

    Raises:
        ScheduleError: a list with more entries than the model has blocks.
    """
    if isinstance(config.r, tuple):
        if len(config.r) > num_blocks:
            raise ScheduleError(f"r lists {len(config.r)} blocks but the model has {num_blocks}")
        return list(config.r) + [0] * (num_blocks - len(config.r))
    if num_blocks == 1 or not config.inflection:
        return [config.r] * num_blocks
    # ToMe's (r, inflection) schedule: a line from r*(1-inflection) to r*(1+inflection), same total.
    first = int(config.r * (1.0 - config.inflection))
    last = 2 * config.r - first
    step = (last - first) / (num_blocks - 1)
    return [int(first + step * i) for i in range(num_blocks)]


def _block_op(config: FusionConfig, index: int, num_blocks: int) -> StepOp:
    if config.ops is not None:
        return config.ops[index]
    if config.mode is not Mode.TOFU:
        return StepOp(config.mode.value)
    switch = min(DEFAULT_TOFU_SWITCH, num_blocks) if config.switch is None else config.switch
    return StepOp.PRUNE if index < switch else StepOp.MLERP


def protected_count(num_a: int, r: int, selection: Selection) -> int:
    """How many A tokens ``selection`` protects in a block of ``num_a`` A tokens that removes ``r``:
    its `PROTECT_FRACTION` of ``num_a`` rounded half up, capped so that ``r`` unprotected ones remain."""
    if selection is Selection.BIPARTITE or r == 0:
        return 0
    return max(0, min(int(PROTECT_FRACTION[selection] * num_a + 0.5), num_a - r))


def _plan(config: FusionConfig, arch: ViTArch, rs: list[int]) -> FusionPlan:
    if config.selection is Selection.ATTENTION and arch.num_prefix == 0:
        raise ConfigError(
            f"selection=attention follows the class token's attention, and {arch.name} has no class token; "
            "use selection=energy or bipartite"
        )
    blocks = []
    tokens, sized = arch.num_tokens, False
    for index, r in enumerate(rs):
        limit = max_reduction(tokens, arch.num_prefix)
        if config.clamp:
            r = min(r, limit)
        if r > limit:
            num_a, num_b = split_sizes(tokens, arch.num_prefix)
            raise ScheduleError(
                f"block {index}: r={r} is more than it can remove ({limit}): {tokens} tokens in, "
                f"{arch.num_prefix} protected, {num_a} sources and {num_b} destinations "
                "(lower r there, or clamp=True / --clamp to cap it)"
            )
        op = _block_op(config, index, arch.num_blocks)
        block = BlockPlan(
            index=index,
            tokens_in=tokens,
            r=r,
            op=op,
            num_prefix=arch.num_prefix,
            sized=sized,
            prop_attn=config.prop_attn and sized,
            macs=arch.block_macs(tokens, r),
            selection=config.selection,
            protect=protected_count(split_sizes(tokens, arch.num_prefix)[0], r, config.selection),
        )
        blocks.append(block)
        tokens, sized = block.tokens_out, sized or block.merges
    return FusionPlan(config=config, arch=arch, blocks=tuple(blocks))


ALIGN_MACS_TOLERANCE = 0.01  # an aligned schedule keeps the total MACs within 1 % of the schedule it shapes


def align_schedule(arch: ViTArch, rs: list[int], align: int) -> list[int]:
    """``rs`` reshaped so that the tokens leaving every fusion step are a multiple of ``align``, at the same total
    MACs (within 1 %).

    GEMMs, and tensor cores on GPUs, run fastest when the token count is a multiple of 8 or 16: a 197-token
    DeiT-S at r=13 leaves 184, 171, 158, ... tokens; with ``align=8`` it leaves 184, 176, 160, .... Block by
    block, the tokens out move to the multiple of ``align`` just below or above the original count, whichever
    keeps the MACs spent so far closer to the original's (so rounding errors do not add up); blocks that remove
    nothing stay that way, and no block removes more than it can.

    Raises:
        ScheduleError: no aligned schedule within 1 % of the MACs (say, ``align`` larger than the steps).
    """
    aligned, tokens, spent, target = [], arch.num_tokens, 0, 0
    original = arch.num_tokens
    for r in rs:
        target += arch.block_macs(original, r)
        original -= r
        if r == 0:
            aligned.append(0)
            spent += arch.block_macs(tokens, 0)
            continue
        low = max(original // align * align, tokens - max_reduction(tokens, arch.num_prefix))
        candidates = {t for t in (original // align * align, -(-original // align) * align) if low <= t <= tokens}
        candidates = candidates or {max(low, tokens - r)}  # no multiple in reach: keep this block's own step
        out = min(sorted(candidates), key=lambda t: abs(spent + arch.block_macs(tokens, tokens - t) - target))
        aligned.append(tokens - out)
        spent += arch.block_macs(tokens, tokens - out)
        tokens = out
    total = arch.embed_macs + arch.head_macs
    if abs(spent - target) > ALIGN_MACS_TOLERANCE * (target + total):
        raise ScheduleError(
            f"align={align}: no schedule with token counts in multiples of {align} comes within "
            f"{ALIGN_MACS_TOLERANCE:.0%} of the MACs of r={rs}; use a smaller align"
        )
    return aligned


def _capped(arch: ViTArch, rs: list[int]) -> list[int]:
    """``rs`` with every block's ``r`` capped at what that block can remove."""
    capped, tokens = [], arch.num_tokens
    for r in rs:
        capped.append(min(r, max_reduction(tokens, arch.num_prefix)))
        tokens -= capped[-1]
    return capped


def _schedule_macs(arch: ViTArch, rs: list[int]) -> int:
    total, tokens = arch.embed_macs + arch.head_macs, arch.num_tokens
    for r in rs:
        total += arch.block_macs(tokens, r)
        tokens -= r
    return total


def _solve_keep(config: FusionConfig, arch: ViTArch) -> list[int]:
    """The gentlest schedule at or below ``keep`` of the unfused MACs: ``r`` in the first ``k`` blocks and
    ``r - 1`` after them (each capped at its block's limit), with the smallest ``r``, then the smallest ``k``."""
    num_blocks = arch.num_blocks
    unfused = _schedule_macs(arch, [0] * num_blocks)
    target = config.keep * unfused
    r = 0
    while _schedule_macs(arch, _capped(arch, [r] * num_blocks)) > target:
        if _capped(arch, [r + 1] * num_blocks) == _capped(arch, [r] * num_blocks):
            best = _schedule_macs(arch, _capped(arch, [r] * num_blocks)) / unfused
            raise ScheduleError(
                f"keep={config.keep} is out of reach for {arch.name}: removing all it can keeps {best:.3f}"
            )
        r += 1
    if r == 0:
        return [0] * num_blocks
    for k in range(num_blocks):
        rs = _capped(arch, [r] * k + [r - 1] * (num_blocks - k))
        if _schedule_macs(arch, rs) <= target:
            return rs
    return _capped(arch, [r] * num_blocks)
