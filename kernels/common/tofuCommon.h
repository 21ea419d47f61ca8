/*
 * Shared by the kernels, the host test library and the onnxruntime custom ops: the host/device qualifier,
 * fp32/fp16 conversions and the eps of the reference. Nothing here needs TensorRT.
 *
 * The fp16 type is CUDA's __half, except with TOFU_NO_CUDA defined (the onnxruntime ops, which build without
 * a CUDA toolkit): then it is tofu_edge::Half (tofuHalf.h), rounding to nearest even as __float2half_rn does.
 * HalfType names either.
 */
#pragma once

#include <cstdint>

#if defined(TOFU_NO_CUDA)
#if defined(__CUDACC__)
#error "TOFU_NO_CUDA is for host-only builds: the kernels need __half"
#endif
#include "tofuHalf.h"
#else
#include <cuda_fp16.h>
#endif

#if defined(__CUDACC__)
#define TOFU_HD __host__ __device__ __forceinline__
#else
#define TOFU_HD inline
#endif

namespace tofu_edge
{

//! Element type of the float tensors of a plugin (linear fp32 or fp16).
enum class FloatType : int32_t
{
    kFLOAT = 0,
    kHALF = 1
};

//! Clamps the norm of a merged average before dividing by it: tofu_edge/ops/match.py EPS.
constexpr float kEps = 1e-6F;

TOFU_HD float toFloat(float v)
{
    return v;
}

#if defined(TOFU_NO_CUDA)
using HalfType = Half;

inline float toFloat(Half v)
{
    return halfToFloat(v);
}
#else
using HalfType = __half;

TOFU_HD float toFloat(__half v)
{
    return __half2float(v);
}
#endif

template <typename T>
TOFU_HD T fromFloat(float v);

template <>
TOFU_HD float fromFloat<float>(float v)
{
    return v;
}

#if defined(TOFU_NO_CUDA)
template <>
inline Half fromFloat<Half>(float v)
{
    return floatToHalf(v);
}
#else
template <>
TOFU_HD __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}
#endif

//! A row index read from an index tensor, forced into [0, n) so that a malformed input cannot make a kernel
//! read out of bounds (TofuMatch only writes valid indices; the host API rejects invalid ones instead).
TOFU_HD int32_t clampIndex(int32_t index, int32_t n)
{
    return index < 0 ? 0 : (index >= n ? n - 1 : index);
}

} // namespace tofu_edge
