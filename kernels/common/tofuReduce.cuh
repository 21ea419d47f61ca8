/*
 * Deterministic block-wide sums for the kernels (device only).
 */
#pragma once

#include <cuda_runtime.h>

namespace tofu_edge
{
namespace kernels
{

constexpr int kWarpSize = 32;

__device__ __forceinline__ float warpSum(float v)
{
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    {
        v += __shfl_xor_sync(0xFFFFFFFFU, v, offset);
    }
    return v;
}

//! Sum of `v` over a block of kThreads threads; every thread gets the total. `scratch` holds kThreads / 32
//! floats of shared memory. All threads must call it; it synchronises twice, so it can be called in a row.
template <int kThreads>
__device__ __forceinline__ float blockSum(float v, float* scratch)
{
    static_assert(kThreads % kWarpSize == 0 && kThreads <= 1024, "whole warps only");
    constexpr int kWarps = kThreads / kWarpSize;
    v = warpSum(v);
    if (threadIdx.x % kWarpSize == 0)
    {
        scratch[threadIdx.x / kWarpSize] = v;
    }
    __syncthreads();
    float total = 0.F;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) // the same order in every thread: every thread gets the same bits
    {
        total += scratch[w];
    }
    __syncthreads();
    return total;
}

} // namespace kernels
} // namespace tofu_edge
