/*
 * Shared by the kernels and by the host test library: the host/device qualifier, fp32/fp16 conversions and
 * the eps of the reference. Nothing here needs TensorRT.
 */
#pragma once

#include <cstdint>
#include <cuda_fp16.h>

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

TOFU_HD float toFloat(__half v)
{
    return __half2float(v);
}

template <typename T>
TOFU_HD T fromFloat(float v);

template <>
TOFU_HD float fromFloat<float>(float v)
{
    return v;
}

template <>
TOFU_HD __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

//! A row index read from an index tensor, forced into [0, n) so that a malformed input cannot make a kernel
//! read out of bounds (TofuMatch only writes valid indices; the host API rejects invalid ones instead).
TOFU_HD int32_t clampIndex(int32_t index, int32_t n)
{
    return index < 0 ? 0 : (index >= n ? n - 1 : index);
}

} // namespace tofu_edge
