"""The built libraries: what they export, what they need at load time, and the GPU code they carry."""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.kernels.conftest import CUDA_ARCHS

FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)
FATBIN_PTX, FATBIN_ELF = 1, 2


def needed(library: Path) -> list[str]:
    """The NEEDED entries of a shared library's dynamic section."""
    output = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in output.splitlines() if "(NEEDED)" in line]


def exported_functions(library: Path) -> set[str]:
    output = subprocess.run(
        ["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[-1] for line in output.splitlines() if len(line.split()) == 3 and line.split()[1] in "TW"}


def fatbin_entries(library: Path) -> set[tuple[int, int]]:
    """(kind, sm) of every entry of the CUDA fat binaries embedded in a library: kind 1 is PTX, 2 is SASS."""
    data = library.read_bytes()
    entries = set()
    start = data.find(FATBIN_MAGIC)
    while start != -1:
        _, _, header_size, fat_size = struct.unpack_from("<IHHQ", data, start)
        offset, end = start + header_size, start + header_size + fat_size
        while offset < end:
            kind, _, entry_header_size, payload_size = struct.unpack_from("<HHIQ", data, offset)
            entries.add((kind, struct.unpack_from("<I", data, offset + 28)[0]))
            offset += entry_header_size + payload_size
        start = data.find(FATBIN_MAGIC, end)
    return entries


@pytest.fixture(scope="module", autouse=True)
def binutils() -> None:
    for tool in ("readelf", "nm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (binutils) is not on PATH")


def test_plugin_library_exports_only_the_loader_entry_points(kernel_build):
    assert exported_functions(kernel_build.plugin_library) == {"getCreators", "setLoggerFinder"}


def test_plugin_library_does_not_need_libnvinfer_or_the_driver(kernel_build):
    libraries = needed(kernel_build.plugin_library)
    assert libraries, "no NEEDED entries read"
    assert not [name for name in libraries if name.startswith(("libnvinfer", "libcuda.", "libcublas"))], libraries


def test_plugin_library_carries_sass_and_ptx_for_every_arch(kernel_build):
    entries = fatbin_entries(kernel_build.plugin_library)
    for arch in CUDA_ARCHS:
        assert (FATBIN_ELF, int(arch)) in entries, f"no sm_{arch} code in {sorted(entries)}"
        assert (FATBIN_PTX, int(arch)) in entries, f"no compute_{arch} PTX in {sorted(entries)}"


def test_plugin_library_loads_and_lists_its_creators_without_a_gpu(kernel_build):
    library = ctypes.CDLL(str(kernel_build.plugin_library))
    library.getCreators.argtypes = [ctypes.POINTER(ctypes.c_int32)]
    library.getCreators.restype = ctypes.POINTER(ctypes.c_void_p)
    count = ctypes.c_int32(-1)
    creators = library.getCreators(ctypes.byref(count))
    assert count.value == 2
    assert all(creators[i] for i in range(count.value))


def test_host_library_has_no_device_code_and_no_cuda_runtime(kernel_build):
    assert not [name for name in needed(kernel_build.host_library) if name.startswith(("libcuda", "libnvinfer"))]
    assert not fatbin_entries(kernel_build.host_library)
