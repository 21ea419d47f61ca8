/*
 * TofuMatch kernel launcher.
 */
#pragma once

#include "tofuCommon.h"

#include <cstdint>
#include <cuda_runtime_api.h>

namespace tofu_edge
{
namespace kernels
{

//! Shared memory one batch item of TofuMatch needs (best score, best B index and source flag per A token).
size_t tofuMatchSharedBytes(int32_t numA) noexcept;

//! Computes order [batch, numTokens] and dstSlot [batch, r] (int32) from scores [batch, |A|, |B|] (fp32 or fp16
//! per scoreType), one thread block per batch item. The attributes must have passed checkMatchAttributes.
cudaError_t launchTofuMatch(void const* scores, FloatType scoreType, int32_t batch, int32_t numTokens,
    int32_t numPrefix, int32_t r, int32_t* order, int32_t* dstSlot, cudaStream_t stream) noexcept;

} // namespace kernels
} // namespace tofu_edge
