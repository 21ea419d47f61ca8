/*
 * TofuMerge kernel launcher.
 */
#pragma once

#include "tofuMergeMath.h"

#include <cstdint>
#include <cuda_runtime_api.h>

namespace tofu_edge
{
namespace kernels
{

//! Computes xOut [batch, N - r, C] and sizeOut [batch, N - r, 1] from x [batch, N, C], size [batch, N, 1]
//! (both fp32 or both fp16 per tokenType), order [batch, N] and dstSlot [batch, r] (int32), one thread block
//! per output token. The attributes must have passed checkMergeAttributes.
cudaError_t launchTofuMerge(void const* x, void const* size, int32_t const* order, int32_t const* dstSlot,
    FloatType tokenType, int32_t batch, int32_t numTokens, int32_t channels, int32_t r, MergeMode mode, void* xOut,
    void* sizeOut, cudaStream_t stream) noexcept;

} // namespace kernels
} // namespace tofu_edge
