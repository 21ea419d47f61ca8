"""`tofu-edge plan`: the per-block token plan and MACs of a fused model."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tofu_edge.cli.options import NO_FUSION_OPTIONS, FusionOptions, ImgSizeOption, ModelArg, with_fusion_options
from tofu_edge.config import Selection
from tofu_edge.plan import FusionPlan, resolve_plan

__all__ = ["plan_command", "render_plan"]


@with_fusion_options
def plan_command(
    model: ModelArg,
    fusion: FusionOptions = NO_FUSION_OPTIONS,
    img_size: ImgSizeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show how a model is fused: tokens in and out, r, mode and GMACs of every block, and the totals.

    Example: tofu-edge plan deit_small_patch16_224 --r 13 --mode tofu
    """
    from tofu_edge.models import create_model
    from tofu_edge.patch import describe_vit

    plan = resolve_plan(fusion.config(), describe_vit(create_model(model, img_size=img_size)))
    if as_json:
        typer.echo(json.dumps(plan.to_dict(), indent=2))
    else:
        render_plan(plan, Console())


def render_plan(plan: FusionPlan, console: Console) -> None:
    """Print the plan as a table with a totals line."""
    selection = plan.config.selection
    protects = selection is not Selection.BIPARTITE
    title = f"{plan.arch.name}: {plan.config.mode.value} fusion"
    title += f", {selection.value} selection" if protects else ""
    table = Table(title=title, title_justify="left")
    columns = ("block", "tokens in", "r", "mode", *(("protected",) if protects else ()), "tokens out", "GMACs")
    for column in columns:
        table.add_column(column, justify="left" if column == "mode" else "right")
    for block in plan.blocks:
        mode = block.op.value if block.r else "-"
        protected = (str(block.protect),) if protects else ()
        table.add_row(
            str(block.index),
            str(block.tokens_in),
            str(block.r),
            mode,
            *protected,
            str(block.tokens_out),
            f"{block.macs / 1e9:.3f}",
        )
    console.print(table)
    console.print(
        f"total {plan.macs / 1e9:.3f} GMACs vs {plan.unfused_macs / 1e9:.3f} unfused: "
        f"{plan.macs / plan.unfused_macs:.3f} of the MACs, ideal speed-up {plan.unfused_macs / plan.macs:.2f}x\n"
        f"tokens {plan.arch.num_tokens} -> {plan.tokens_out}"
    )
