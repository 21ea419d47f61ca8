"""Load weights safely: safetensors, or a torch state dict through ``weights_only=True``."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from tofu_edge.errors import CheckpointError

__all__ = ["load_state_dict", "load_checkpoint"]

_NESTED_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module", "state_dict_ema")
_MAX_LISTED = 8


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a state dict without running arbitrary pickled code.

    Accepts ``.safetensors`` files and torch files holding a dict of tensors, or a training checkpoint
    that nests one under ``state_dict``, ``model``, ``model_state``, ``module`` or ``state_dict_ema``.

    Raises:
        CheckpointError: missing, corrupt, unsafe (objects other than tensors) or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _unpickler_reason(error)
        if "global" not in reason.lower():
            raise CheckpointError(f"checkpoint {path} is not a readable torch file ({reason})") from None
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors, which weights_only=True refuses to load "
            f"({reason}); save model.state_dict() or a .safetensors file instead"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is not a readable torch file: {_first_line(error)}") from None
    return _as_state_dict(loaded, path)


def load_checkpoint(model: torch.nn.Module, path: Path | str) -> None:
    """Load ``path`` into ``model`` strictly.

    Raises:
        CheckpointError: as `load_state_dict`, or keys or shapes that do not match (listed in the message).
    """
    state = load_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label} ({len(keys)}): {_listing(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", reshaped))
        if keys
    ]
    if problems:
        raise CheckpointError(f"checkpoint {Path(path).name} does not fit the model: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {_first_line(error)}") from None


def _as_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, dict):
        for key in _NESTED_KEYS:
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"checkpoint {path} is not a state dict (a dict of tensor names to tensors)")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    """The weights-only unpickler's own reason (e.g. ``Unsupported global: GLOBAL x.Y``), not its advice."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].split(" was not an allowed global")[0] if lines else "unsafe pickle"


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
