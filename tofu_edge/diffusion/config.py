"""`DiffusionFusionConfig`: what token fusion does inside a diffusion model's transformer blocks."""

from __future__ import annotations

from dataclasses import dataclass, field

from tofu_edge.choices import Destinations, parse_choice
from tofu_edge.config import StepOp
from tofu_edge.errors import ConfigError

__all__ = ["DiffusionFusionConfig", "Destinations", "DEFAULT_OP"]

DEFAULT_OP = StepOp.MEAN
_DOWNSAMPLES = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class DiffusionFusionConfig:
    """Token fusion for the transformer blocks of a diffusers UNet or diffusion transformer (frozen).

    Every fused sub-module (self-attention, optionally cross-attention and feed-forward) merges its input tokens,
    runs on the ``N - r`` that remain, and unmerges its output back to ``N`` tokens before the block's residual add
    (tomesd's merge-then-unmerge). ``r = int(ratio * N)`` is fixed per resolution level when the model is fused.

    Args:
        ratio: Fraction of the tokens removed. A float applies at every level whose downsampling is at most
            ``max_downsample``; a tuple gives one ratio per level (level ``i`` is downsampled ``2**i`` times, level 0
            is the full latent resolution; missing levels get 0). Each in ``[0, 1)``.
        op: What merging does with the sources: ``mean`` (default; tomesd's average), ``mlerp`` or ``prune``.
        max_downsample: With a float ``ratio``: the largest downsampling factor that is fused (1, 2, 4, 8 or 16;
            default 1, the full-resolution level only, as tomesd).
        sx: Width of a destination cell in tokens.
        sy: Height of a destination cell in tokens.
        destinations: ``cycle`` (default) or ``corner``; see `Destinations`.
        merge_attn: Fuse the self-attention (``attn1``).
        merge_crossattn: Fuse the cross-attention queries (``attn2``).
        merge_mlp: Fuse the feed-forward (``ff``).
    """

    ratio: float | tuple[float, ...] = 0.5
    op: StepOp | str = DEFAULT_OP
    max_downsample: int | None = None
    sx: int = 2
    sy: int = 2
    destinations: Destinations | str = Destinations.CYCLE
    merge_attn: bool = True
    merge_crossattn: bool = False
    merge_mlp: bool = False
    _levels: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", parse_choice(StepOp, self.op, "op"))
        object.__setattr__(self, "destinations", parse_choice(Destinations, self.destinations, "destinations"))
        ratios = self.ratio if isinstance(self.ratio, (tuple, list)) else (self.ratio,)
        for value in ratios:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"ratio must be in [0, 1) (the fraction of tokens merged), got {value!r}")
        if isinstance(self.ratio, (tuple, list)):
            if self.max_downsample is not None:
                raise ConfigError("give either per-level ratios or max_downsample, not both")
            object.__setattr__(self, "ratio", tuple(float(v) for v in self.ratio))
            levels = self.ratio
        else:
            object.__setattr__(self, "ratio", float(self.ratio))
            limit = 1 if self.max_downsample is None else self.max_downsample
            if limit not in _DOWNSAMPLES:
                choices = ", ".join(map(str, _DOWNSAMPLES))
                raise ConfigError(f"max_downsample must be one of {choices}, got {self.max_downsample!r}")
            levels = tuple(self.ratio for factor in _DOWNSAMPLES if factor <= limit)
        object.__setattr__(self, "_levels", levels)
        for name in ("sx", "sy"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        if self.sx * self.sy < 2:
            raise ConfigError("sx * sy must be at least 2: every cell needs a destination and a source")

    def level_ratio(self, level: int) -> float:
        """The ratio at resolution level ``level`` (downsampled ``2**level`` times); 0 beyond the given levels."""
        return self._levels[level] if level < len(self._levels) else 0.0

    @property
    def num_levels(self) -> int:
        """How many levels the config gives a ratio for (trailing levels get 0)."""
        return len(self._levels)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {
            "ratio": list(self.ratio) if isinstance(self.ratio, tuple) else self.ratio,
            "op": str(self.op),
            "max_downsample": self.max_downsample,
            "sx": self.sx,
            "sy": self.sy,
            "destinations": str(self.destinations),
            "merge_attn": self.merge_attn,
            "merge_crossattn": self.merge_crossattn,
            "merge_mlp": self.merge_mlp,
        }
