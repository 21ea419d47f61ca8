"""`trace_onnx`: the one trace of a PyTorch model to ONNX, for the ViT and the diffusion exporters alike.

torch's dynamo exporter writes opset 18 (`tofu_edge.export.graph.convert_opset` takes it to the opset asked for);
its progress on stdout and its warnings are kept out of the user's results, and its errors become an `ExportError`
with their first line.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import onnx_ir
import onnxscript.optimizer
import torch

from tofu_edge.errors import ExportError

__all__ = ["TRACE_OPSET", "trace_onnx"]

TRACE_OPSET = 18


def trace_onnx(
    module: torch.nn.Module,
    inputs: Sequence[torch.Tensor],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    fold_limit: int,
    dynamic_shapes: Any = None,
    optimize: bool = True,
    translation_table: Mapping[Any, Any] | None = None,
) -> onnx_ir.Model:
    """``module`` as an ONNX IR model (opset 18), its weight-only subgraphs constant-folded.

    Args:
        module: The model in eval mode (fused or not).
        inputs: Example inputs, positional.
        input_names: The graph's input names, in order.
        output_names: The graph's output names.
        fold_limit: Fold subgraphs whose inputs and outputs have at most this many elements each (large enough for
            a ViT's head-averaged key projection, small enough to leave a UNet's big weights alone).
        dynamic_shapes: torch.export's dynamic shapes (the symbolic batch), ``None`` for static ones.
        optimize: Let torch's exporter optimize the graph first.
        translation_table: Custom op translations (the plugin flavour's fusion steps).

    Raises:
        ExportError: torch's exporter failed (its first line).
    """
    # the exporter prints progress on stdout; keep stdout for results
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module,
                tuple(inputs),
                dynamo=True,
                opset_version=TRACE_OPSET,
                dynamic_shapes=dynamic_shapes,
                input_names=list(input_names),
                output_names=list(output_names),
                verbose=False,
                optimize=optimize,
                custom_translation_table=translation_table,
            )
        except (torch.onnx.errors.OnnxExporterError, RuntimeError) as error:
            first_line = str(error).strip().splitlines()[0]
            raise ExportError(f"torch.onnx.export failed: {first_line}") from None
    model = program.model
    onnxscript.optimizer.optimize(model, input_size_limit=fold_limit, output_size_limit=fold_limit)
    return model
