/*
 * libtofu_edge_host: the plugins' math on host memory, from the same __host__ __device__ functions the kernels
 * call (tofuMatchMath.h, tofuMergeMath.h), looped here where the kernels spread them over threads. The only
 * differences are the order of float sums inside MLERP's norms (block sums on the GPU).
 *
 * Every function returns 0 on success, 1 on invalid arguments (the message is kept for tofu_host_last_error).
 */
#include "tofuMatchMath.h"
#include "tofuMergeMath.h"

#include <cmath>
#include <cstring>
#include <vector>

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
    std::vector<float> best(layout.numA);
    std::vector<int32_t> bestB(layout.numA);
    std::vector<int32_t> isSource(layout.numA);
    for (int64_t item = 0; item < batch; ++item)
    {
        T const* itemScores = scores + item * layout.numA * layout.numB;
        int32_t* itemOrder = order + item * numTokens;
        int32_t* itemDst = dstSlot + item * r;
        for (int32_t i = 0; i < layout.numA; ++i)
        {
            ArgMax const m = argMaxFinish(argMaxScan(itemScores + static_cast<int64_t>(i) * layout.numB, layout.numB, 0, 1));
            best[i] = m.value;
            bestB[i] = m.index;
        }
        for (int32_t i = 0; i < layout.numA; ++i)
        {
            isSource[i] = stableRank(best.data(), layout.numA, i) < r ? 1 : 0;
        }
        for (int32_t i = 0; i < layout.numA; ++i)
        {
            writeAToken(layout, i, isSource[i] != 0, sourcesBefore(isSource.data(), i), bestB[i], itemOrder, itemDst);
        }
        for (int32_t k = 0; k < numPrefix + layout.numB; ++k)
        {
            writeFixedToken(layout, k, itemOrder);
        }
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
    auto const mergeMode = static_cast<MergeMode>(mode);
    std::vector<int32_t> srcRows(r);
    std::vector<float> srcWeights(r);
    std::vector<float> average(channels);
    for (int64_t item = 0; item < batch; ++item)
    {
        T const* itemX = x + item * numTokens * channels;
        T const* itemSize = size + item * numTokens;
        int32_t const* itemOrder = order + item * numTokens;
        int32_t const* itemDst = dstSlot + item * r;
        for (int32_t slot = 0; slot < numOut; ++slot)
        {
            T* outRow = xOut + (item * numOut + slot) * channels;
            T* outSize = sizeOut + item * numOut + slot;
            int32_t const dstRow = itemOrder[slot];
            T const* dstX = itemX + static_cast<int64_t>(dstRow) * channels;
            int32_t count = 0;
            for (int32_t k = 0; mergeMode != MergeMode::kPRUNE && k < r; ++k) // sources in source order
            {
                if (itemDst[k] == slot)
                {
                    srcRows[count] = itemOrder[numOut + k];
                    srcWeights[count] = toFloat(itemSize[srcRows[count]]);
                    ++count;
                }
            }
            if (count == 0)
            {
                std::memcpy(outRow, dstX, sizeof(T) * channels);
                *outSize = itemSize[dstRow];
                continue;
            }
            float const dstWeight = toFloat(itemSize[dstRow]);
            float const total = groupSize(dstWeight, srcWeights.data(), count);
            for (int32_t c = 0; c < channels; ++c)
            {
                average[c] = groupAverage(itemX, channels, dstRow, dstWeight, srcRows.data(), srcWeights.data(), count, total, c);
            }
            if (mergeMode == MergeMode::kMEAN)
            {
                for (int32_t c = 0; c < channels; ++c)
                {
                    outRow[c] = fromFloat<T>(average[c]);
                }
            }
            else
            {
                float const averageNorm = std::sqrt(squaresScan(average.data(), channels, 0, 1));
                float largest = squaresScan(dstX, channels, 0, 1);
                for (int32_t k = 0; k < count; ++k)
                {
                    largest = std::fmax(largest, squaresScan(itemX + static_cast<int64_t>(srcRows[k]) * channels, channels, 0, 1));
                }
                float const largestNorm = std::sqrt(largest);
                for (int32_t c = 0; c < channels; ++c)
                {
                    outRow[c] = fromFloat<T>(mlerpValue(average[c], averageNorm, largestNorm));
                }
            }
            *outSize = fromFloat<T>(total);
        }
    }
    return 0;
}
} // namespace
} // namespace host
} // namespace tofu_edge

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
    return match(reinterpret_cast<__half const*>(scores), batch, numTokens, numPrefix, r, order, dstSlot);
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
    return merge(reinterpret_cast<__half const*>(x), reinterpret_cast<__half const*>(size), order, dstSlot, batch,
        numTokens, channels, r, mode, reinterpret_cast<__half*>(xOut), reinterpret_cast<__half*>(sizeOut));
}

TOFU_HOST_API char const* tofu_host_last_error()
{
    return tofu_edge::host::gLastError;
}

TOFU_HOST_API float tofu_host_eps()
{
    return tofu_edge::kEps;
}
