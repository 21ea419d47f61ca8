"""The native onnxruntime ops of the plugin flavour: find, check and register ``libtofu_edge_ort.so``.

``kernels/onnxruntime`` builds ``TofuMatch`` and ``TofuMerge`` for onnxruntime's CPU provider on the same math
as the TensorRT plugins (kernels/README.md, "onnxruntime custom ops"). With it, a plugin-flavour file runs in
onnxruntime at native speed and without torch; without it, tofu-edge falls back to the PyTorch loop reference
(`tofu_edge.export.plugin.enable_reference_ops`), slow and needing torch.

Where the library is looked for, first found wins:

1. a path given explicitly (``ort_session(..., ort_ops=PATH)``);
2. ``$TOFU_EDGE_ORT_OPS`` (the word ``reference`` there forces the PyTorch reference, e.g. to compare the two);
3. ``build/onnxruntime/libtofu_edge_ort.so`` of the checkout this package runs from (where the README's build
   command puts it).

A library given in 1. or 2. must load: a missing file, one built for another CPU, one built from another plugin
contract (``plugin_specs.json``) or from older sources of this checkout, or an onnxruntime older than its API is an
error. At 3. the same problems only print a one-line note, and the reference runs instead. Needs only the standard
library and onnxruntime.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tofu_edge.errors import MissingDependencyError
from tofu_edge.export.plugin_spec import SPEC_PATH

__all__ = [
    "LIBRARY_NAME",
    "ENV_VAR",
    "REFERENCE",
    "OrtOpsError",
    "CHECKOUT",
    "OrtOpsLibrary",
    "find_ort_ops",
    "load_ort_ops",
    "default_library_path",
    "note_reference_fallback",
]

LIBRARY_NAME = "libtofu_edge_ort.so"
ENV_VAR = "TOFU_EDGE_ORT_OPS"
REFERENCE = "reference"  # as $TOFU_EDGE_ORT_OPS: run the PyTorch reference even where the library is built
CHECKOUT = Path(__file__).resolve().parents[2]  # the repository root when running from a checkout
BUILD_HINT = (
    "bash kernels/onnxruntime/fetch_onnxruntime_headers.sh build/onnxruntime-headers && "
    "cmake -S kernels/onnxruntime -B build/onnxruntime && cmake --build build/onnxruntime"
)
_ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64"}
_MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "i686": "x86", "i386": "x86", "armv7l": "arm"}


class OrtOpsError(MissingDependencyError):
    """The native onnxruntime ops library cannot be used (missing, wrong CPU, stale, too new for onnxruntime)."""


@dataclass(frozen=True)
class OrtOpsLibrary:
    """A checked ``libtofu_edge_ort.so``.

    Attributes:
        path: The library file.
        api_version: The onnxruntime C API version it was built against (it needs an onnxruntime at least as new).
        contract_sha256: SHA-256 of the ``plugin_specs.json`` it was built from (equal to this package's).
    """

    path: Path
    api_version: int
    contract_sha256: str

    def register(self, options: Any) -> None:
        """Register the ops with an ``onnxruntime.SessionOptions``."""
        options.register_custom_ops_library(str(self.path))


def default_library_path() -> Path:
    """Where the README's build command puts the library in a checkout: ``build/onnxruntime/libtofu_edge_ort.so``."""
    return CHECKOUT / "build" / "onnxruntime" / LIBRARY_NAME


def find_ort_ops(explicit: str | Path | None = None) -> OrtOpsLibrary | None:
    """The native ops library to register, checked, or ``None`` to run the reference ops instead.

    Args:
        explicit: A library path the user gave (wins over ``$TOFU_EDGE_ORT_OPS`` and the checkout's build), or
            ``"reference"`` for none.

    Raises:
        OrtOpsError: an explicit or ``$TOFU_EDGE_ORT_OPS`` library cannot be used (the message says why).
    """
    given = explicit if explicit is not None else os.environ.get(ENV_VAR) or None
    if given == REFERENCE:
        return None
    if given is not None:
        return load_ort_ops(Path(given))
    path = default_library_path()
    if not path.is_file():
        return None
    try:
        return load_ort_ops(path)
    except OrtOpsError as error:
        _note(f"note: not using {path}: {error}; running the plugin nodes through the PyTorch reference")
        return None


@functools.cache
def load_ort_ops(path: Path) -> OrtOpsLibrary:
    """Check and open one library file (once per process and path).

    Raises:
        OrtOpsError: the file is missing, is not a shared library for this CPU, does not load, was built from
            another ``plugin_specs.json`` or from older sources of this checkout, or needs a newer onnxruntime.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise OrtOpsError(f"onnxruntime ops library {path} does not exist; build it: {BUILD_HINT}")
    _check_machine(path)
    try:
        handle = ctypes.CDLL(str(path))
        for name, restype in (
            ("tofu_ort_contract_sha256", ctypes.c_char_p),
            ("tofu_ort_sources", ctypes.c_char_p),
            ("tofu_ort_sources_sha256", ctypes.c_char_p),
            ("tofu_ort_api_version", ctypes.c_int),
        ):
            getattr(handle, name).restype = restype
            getattr(handle, name).argtypes = []
    except (OSError, AttributeError) as error:
        raise OrtOpsError(f"{path} is not a tofu-edge onnxruntime ops library: {error}") from None
    contract = handle.tofu_ort_contract_sha256().decode()
    if contract != hashlib.sha256(SPEC_PATH.read_bytes()).hexdigest():
        raise OrtOpsError(
            f"{path} was built from another plugin contract than {SPEC_PATH.name}; rebuild it: {BUILD_HINT}"
        )
    _check_sources(path, handle.tofu_ort_sources().decode(), handle.tofu_ort_sources_sha256().decode())
    api_version = int(handle.tofu_ort_api_version())
    _check_onnxruntime(path, api_version)
    return OrtOpsLibrary(path=path, api_version=api_version, contract_sha256=contract)


def _check_machine(path: Path) -> None:
    """An ELF shared object for this CPU, read from its header before dlopen can fail obscurely."""
    with open(path, "rb") as file:
        header = file.read(20)
    if header[:4] != b"\x7fELF" or len(header) < 20:
        raise OrtOpsError(f"{path} is not a shared library (no ELF header)")
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    built_for = _ELF_MACHINES.get(machine, f"ELF machine {machine}")
    here = platform.machine().lower()
    here = _MACHINE_ALIASES.get(here, here)
    if built_for != here:
        raise OrtOpsError(f"{path} is built for {built_for}, this machine is {here}; build it here: {BUILD_HINT}")


def _check_sources(path: Path, sources: str, built_sha256: str) -> None:
    """In a checkout, the library must come from the sources now there (a library elsewhere cannot be checked)."""
    files = [CHECKOUT / relative for relative in sources.split(";") if relative]
    if not files or not all(file.is_file() for file in files):
        return
    digest = hashlib.sha256()
    for relative, file in zip(sources.split(";"), files, strict=True):
        digest.update(f"{relative}\n{hashlib.sha256(file.read_bytes()).hexdigest()}\n".encode())
    if digest.hexdigest() != built_sha256:
        raise OrtOpsError(f"{path} is stale: kernels/ changed since it was built; rebuild: {BUILD_HINT}")


def _check_onnxruntime(path: Path, api_version: int) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        raise OrtOpsError("onnxruntime is not installed: pip install onnxruntime") from None
    minor = int(ort.__version__.split(".")[1])  # onnxruntime 1.N serves C API versions up to N
    if minor < api_version:
        raise OrtOpsError(
            f"{path} needs onnxruntime >= 1.{api_version}, this is {ort.__version__}: pip install -U onnxruntime"
        )


def note_reference_fallback() -> None:
    """Say once that plugin nodes run through the slow PyTorch reference, and how to build the native ops (unless
    ``$TOFU_EDGE_ORT_OPS`` asked for the reference)."""
    if os.environ.get(ENV_VAR) == REFERENCE:
        return
    _note(
        f"note: no native onnxruntime ops library; plugin nodes run through the PyTorch reference. Build: {BUILD_HINT}"
    )


@functools.cache
def _note(message: str) -> None:
    """One line on stderr, once per process."""
    print(message, file=sys.stderr)
