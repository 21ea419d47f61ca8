"""An ONNX file's external data (weights kept beside it, as files over 2 GB must): present and whole, or one line.

onnxruntime and TensorRT report a missing or truncated ``.data`` file deep in their loaders ("Deserialize tensor w
failed ... out of bounds"); this check reads only the graph's headers and the data files' sizes, so it costs
nothing and names the file to copy. Needs onnx only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["external_data_problem"]


def external_data_problem(path: Path, proto: Any) -> str | None:
    """What is wrong with the external data of the ONNX model ``proto`` read from ``path``, or ``None``.

    Args:
        path: The ``.onnx`` file; external data locations are relative to its folder.
        proto: Its ``onnx.ModelProto``, loaded without external data.

    Returns:
        A one-line message naming the data file (missing, a folder, outside the model's folder, or shorter than the
        tensors stored in it need), or ``None`` when every external tensor can be read.
    """
    from onnx import TensorProto

    needed: dict[str, int] = {}  # data file -> bytes its tensors reach
    for tensor in _tensors(proto.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entry = {item.key: item.value for item in tensor.external_data}
        end = int(entry.get("offset", 0)) + int(entry.get("length", 0))
        location = entry.get("location", "")
        needed[location] = max(needed.get(location, 0), end)
    folder = path.parent
    for location, end in sorted(needed.items()):
        data = folder / location
        if not location or Path(location).is_absolute() or ".." in Path(location).parts:
            return f"{path} keeps weights at {location!r}, outside its folder; export it again"
        if not data.is_file():
            return (
                f"{path} keeps its weights in {data.name} beside it, and {data} is missing; copy the .onnx together "
                "with its data file"
            )
        size = data.stat().st_size
        if size < end:
            return (
                f"{path} keeps its weights in {data}, which is truncated ({size} bytes; its tensors need {end}); "
                "copy or export it again"
            )
    return None


def _tensors(graph: Any) -> list[Any]:
    """The initializers of ``graph`` and of its subgraphs (If/Loop bodies), and constant nodes' tensors."""
    from onnx import AttributeProto

    tensors = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == AttributeProto.TENSOR:
                tensors.append(attribute.t)
            elif attribute.type == AttributeProto.GRAPH:
                tensors += _tensors(attribute.g)
            elif attribute.type == AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    tensors += _tensors(sub)
    return tensors
