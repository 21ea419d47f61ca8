"""tofu_edge::Half (kernels/common/tofuHalf.h), the fp16 of the builds without CUDA (the onnxruntime ops),
against numpy's float16: every half to float, and float to half on every tie between two halves, the floats
either side of it, the overflow and underflow boundaries, NaNs and a million random floats.

The conversions are compiled as the onnxruntime library uses them: tofuCommon.h's toFloat / fromFloat with
TOFU_NO_CUDA, into a small probe library (a C++ compiler is all it needs).
"""

from __future__ import annotations

import ctypes
import subprocess

import numpy as np
import pytest

from tests.kernels.ort_build import REPO, cxx_compiler

PROBE = r"""
#include "tofuCommon.h"

#include <cstdint>

extern "C" void halves_to_floats(uint16_t const* in, float* out, int64_t n)
{
    for (int64_t i = 0; i < n; ++i)
    {
        out[i] = tofu_edge::toFloat(tofu_edge::Half{in[i]});
    }
}

extern "C" void floats_to_halves(float const* in, uint16_t* out, int64_t n)
{
    for (int64_t i = 0; i < n; ++i)
    {
        out[i] = tofu_edge::fromFloat<tofu_edge::Half>(in[i]).bits;
    }
}
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    compiler = cxx_compiler()
    if compiler is None:
        pytest.skip("no C++ compiler ($CXX, c++, g++ or clang++)")
    folder = tmp_path_factory.mktemp("half-probe")
    (folder / "probe.cpp").write_text(PROBE)
    library = folder / "libhalfprobe.so"
    command = [compiler, "-std=c++17", "-O2", "-fPIC", "-shared", "-DTOFU_NO_CUDA"]
    command += ["-I", str(REPO / "kernels" / "common"), str(folder / "probe.cpp"), "-o", str(library)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    lib = ctypes.CDLL(str(library))
    for name in ("halves_to_floats", "floats_to_halves"):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        getattr(lib, name).restype = None
    return lib


def to_float(probe: ctypes.CDLL, bits: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(bits, np.uint16)
    out = np.empty(bits.shape, np.float32)
    probe.halves_to_floats(bits.ctypes.data, out.ctypes.data, bits.size)
    return out


def to_half(probe: ctypes.CDLL, values: np.ndarray) -> np.ndarray:
    values = np.ascontiguousarray(values, np.float32)
    out = np.empty(values.shape, np.uint16)
    probe.floats_to_halves(values.ctypes.data, out.ctypes.data, values.size)
    return out


def test_every_half_converts_to_its_exact_float(probe):
    bits = np.arange(1 << 16, dtype=np.uint16)
    actual = to_float(probe, bits)
    expected = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(expected)
    assert nan.sum() == 2 * 1023  # the NaN encodings of both signs
    np.testing.assert_array_equal(actual[~nan].view(np.uint32), expected[~nan].view(np.uint32))  # -0, subnormals
    assert np.isnan(actual[nan]).all()
    assert ((actual[nan].view(np.uint32) >> 22) & 1).all()  # quiet
    assert (np.signbit(actual[nan]) == np.signbit(expected[nan])).all()


def float_cases() -> np.ndarray:
    """Every finite half, each tie between neighbours with the floats either side of it, the boundaries, NaNs
    and random floats, both signs."""
    halves = np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)  # +0 .. 65504
    ties = ((halves[:-1] + halves[1:]) / 2).astype(np.float32)  # exact: 12 significant bits
    around = [np.nextafter(ties, np.float32(0)), np.nextafter(ties, np.float32(np.inf))]
    boundaries = np.array(
        [65504, 65519.996, 65520, 65520.004, 65536, 1e30, np.inf, 2.0**-14, 2.0**-24, 2.0**-25, 2.0**-26, 1e-40, 0.0],
        np.float32,
    )
    boundaries = np.concatenate([boundaries, np.nextafter(np.float32(2.0**-25), np.float32(1))[None]])
    nans = np.array([0x7FC00000, 0x7F800001, 0x7FBFFFFF, 0x7FFFE000, 0x7F802000], np.uint32).view(np.float32)
    random = np.random.default_rng(0).integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    positive = np.concatenate([halves.astype(np.float32), ties, *around, boundaries, nans, random.view(np.float32)])
    return np.concatenate([positive, -positive])


def test_floats_round_to_the_nearest_half_ties_to_even(probe):
    values = float_cases()
    actual = to_half(probe, values)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = values.astype(np.float16)
    nan = np.isnan(values)
    np.testing.assert_array_equal(actual[~nan], expected[~nan].view(np.uint16))
    nan_bits = actual[nan]
    assert ((nan_bits & 0x7C00) == 0x7C00).all() and ((nan_bits & 0x0200) != 0).all()  # NaN, quiet
    assert (((nan_bits >> 15) & 1) == np.signbit(values[nan])).all()
