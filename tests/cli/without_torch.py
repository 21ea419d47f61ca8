"""Run a tofu-edge command, or export/python/run_engine.py, as on a device install: importing torch, timm or
torchvision fails, and TensorRT and cuda-python are the stand-ins of tests/stubs (no GPU here).

Usage: python tests/cli/without_torch.py tofu-edge ARGS... | run_engine.py ARGS...

At exit it prints ``imported: <names>`` on stderr for any blocked package that got imported anyway (none should).
"""

from __future__ import annotations

import atexit
import importlib.abc
import runpy
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "timm", "torchvision")


class NoTorch(importlib.abc.MetaPathFinder):
    """Makes ``import torch`` (and timm, torchvision) fail as on a machine that does not have them."""

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (a device install without torch)", name=name)
        return None


def install_stand_ins() -> None:
    sys.path.insert(0, str(REPO))
    from tests.stubs.stub_runtime import add_stub_runtime, make_stub_cudart
    from tests.stubs.stub_tensorrt import make_stub_tensorrt

    trt, cudart = make_stub_tensorrt(), make_stub_cudart()
    add_stub_runtime(trt, cudart)
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.bindings, bindings.runtime = bindings, cudart
    sys.modules.update({"tensorrt": trt, "cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": cudart})


def report_blocked_imports() -> None:
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    if leaked:
        print(f"imported: {', '.join(leaked)}", file=sys.stderr)


def main() -> None:
    sys.meta_path.insert(0, NoTorch())
    install_stand_ins()
    atexit.register(report_blocked_imports)
    program, sys.argv = sys.argv[1], sys.argv[1:]
    if program == "run_engine.py":
        runpy.run_path(str(REPO / "export" / "python" / "run_engine.py"), run_name="__main__")
    else:
        from tofu_edge.cli import main as tofu_edge

        tofu_edge()


if __name__ == "__main__":
    main()
