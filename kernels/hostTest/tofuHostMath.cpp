/*
 * libtofu_edge_host: the plugins' math on host memory, from the same __host__ __device__ functions the kernels
 * call (tofuMatchMath.h, tofuMergeMath.h), looped where the kernels spread them over threads. The loop over
 * one batch item is common/tofuHostStep.h, which the onnxruntime custom ops run too. The only differences from
 * the kernels are the order of float sums inside MLERP's norms (block sums on the GPU).
 *
 * Every function returns 0 on success, 1 on invalid arguments (the message is kept for tofu_host_last_error).
 */
#include "tofuHostStep.h"

#define TOFU_HOST_API extern "C" __attribute__((visibility("default")))

namespace tofu_edge
{
namespace host
{
namespace
{
thread_local char const* gLastError = "";

int fail(char const* message)
{
    gLastError = message;
    return 1;
}

template <typename T>
int match(T const* scores, int32_t batch, int32_t numTokens, int32_t numPrefix, int32_t r, int32_t* order,
    int32_t* dstSlot)
{
    if (char const* problem = checkMatchAttributes(numTokens, numPrefix, r))
    {
        return fail(problem);
    }
    if (batch < 0 || scores == nullptr || order == nullptr || dstSlot == nullptr)
    {
        return fail("bad buffers or batch");
    }
    MatchLayout const layout = makeMatchLayout(numTokens, numPrefix, r);
    MatchScratch scratch(layout);
    for (int64_t item = 0; item < batch; ++item)
    {
        matchItem(layout, scores + item * layout.numA * layout.numB, scratch, order + item * numTokens,
            dstSlot + item * r);
    }
    return 0;
}

template <typename T>
int merge(T const* x, T const* size, int32_t const* order, int32_t const* dstSlot, int32_t batch, int32_t numTokens,
    int32_t channels, int32_t r, int32_t mode, T* xOut, T* sizeOut)
{
    if (char const* problem = checkMergeAttributes(numTokens, r, mode))
    {
        return fail(problem);
    }
    if (batch < 0 || channels < 0 || x == nullptr || size == nullptr || order == nullptr || dstSlot == nullptr
        || xOut == nullptr || sizeOut == nullptr)
    {
        return fail("bad buffers, batch or channels");
    }
    int32_t const numOut = numTokens - r;
    for (int64_t i = 0; i < static_cast<int64_t>(batch) * numTokens; ++i)
    {
        if (order[i] < 0 || order[i] >= numTokens)
        {
            return fail("order has an index outside [0, num_tokens)");
        }
    }
    for (int64_t i = 0; i < static_cast<int64_t>(batch) * r; ++i)
    {
        if (dstSlot[i] < 0 || dstSlot[i] >= numOut)
        {
            return fail("dst_slot has a slot outside [0, num_tokens - r)");
        }
    }
    MergeScratch scratch(numTokens, channels, r);
    for (int64_t item = 0; item < batch; ++item)
    {
        mergeItem(x + item * numTokens * channels, size + item * numTokens, order + item * numTokens,
            dstSlot + item * r, numTokens, channels, r, static_cast<MergeMode>(mode), scratch,
            xOut + item * numOut * channels, sizeOut + item * numOut);
    }
    return 0;
}
} // namespace
} // namespace host
} // namespace tofu_edge

using tofu_edge::HalfType;
using tofu_edge::host::match;
using tofu_edge::host::merge;

TOFU_HOST_API int tofu_host_match_f32(float const* scores, int32_t batch, int32_t numTokens, int32_t numPrefix,
    int32_t r, int32_t* order, int32_t* dstSlot)
{
    return match(scores, batch, numTokens, numPrefix, r, order, dstSlot);
}

//! fp16 scores as raw IEEE half bits (numpy float16).
TOFU_HOST_API int tofu_host_match_f16(uint16_t const* scores, int32_t batch, int32_t numTokens, int32_t numPrefix,
    int32_t r, int32_t* order, int32_t* dstSlot)
{
    return match(reinterpret_cast<HalfType const*>(scores), batch, numTokens, numPrefix, r, order, dstSlot);
}

TOFU_HOST_API int tofu_host_merge_f32(float const* x, float const* size, int32_t const* order, int32_t const* dstSlot,
    int32_t batch, int32_t numTokens, int32_t channels, int32_t r, int32_t mode, float* xOut, float* sizeOut)
{
    return merge(x, size, order, dstSlot, batch, numTokens, channels, r, mode, xOut, sizeOut);
}

TOFU_HOST_API int tofu_host_merge_f16(uint16_t const* x, uint16_t const* size, int32_t const* order,
    int32_t const* dstSlot, int32_t batch, int32_t numTokens, int32_t channels, int32_t r, int32_t mode,
    uint16_t* xOut, uint16_t* sizeOut)
{
    return merge(reinterpret_cast<HalfType const*>(x), reinterpret_cast<HalfType const*>(size), order, dstSlot, batch,
        numTokens, channels, r, mode, reinterpret_cast<HalfType*>(xOut), reinterpret_cast<HalfType*>(sizeOut));
}

TOFU_HOST_API char const* tofu_host_last_error()
{
    return tofu_edge::host::gLastError;
}

TOFU_HOST_API float tofu_host_eps()
{
    return tofu_edge::kEps;
}
