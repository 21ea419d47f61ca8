/*
 * TofuMerge, the per-element math shared by the CUDA kernel and the host loops of common/tofuHostStep.h
 * (the host test library, the onnxruntime custom ops).
 *
 * Semantics of tofu_edge/ops/merge.py (fuse_tokens). Output slot o < N - r starts from the kept token
 * order[o]; the sources k (order[N - r + k]) with dst_slot[k] == o form its group with it:
 *   prune: the kept token and its size, unchanged;
 *   mean:  x = (s_dst x_dst + sum_k s_k x_k) / S, size = S = s_dst + sum_k s_k;
 *   mlerp: x = mean / max(||mean||, eps) * max over the group of ||x_g||, size = S.
 * A slot without sources is copied bit for bit in every mode. fp16 is accumulated in fp32.
 *
 * Shapes: x [N, C], size [N] per batch item; order [N], dst_slot [r] (int32).
 */
#pragma once

#include "tofuCommon.h"
#include "tofuPluginSpecs.h"

namespace tofu_edge
{

//! How a group is merged; the values come from the "modes" of plugin_specs.json.
enum class MergeMode : int32_t
{
    kPRUNE = spec::TofuMerge::kMODE_PRUNE,
    kMEAN = spec::TofuMerge::kMODE_MEAN,
    kMLERP = spec::TofuMerge::kMODE_MLERP
};

//! Largest r TofuMerge takes: the kernel keeps a source row and weight per source in 32 KiB of shared memory.
constexpr int32_t kMaxMergeR = 4096;

//! nullptr if the attributes describe a valid step, else why not.
inline char const* checkMergeAttributes(int32_t numTokens, int32_t r, int32_t mode)
{
    if (numTokens < 2)
    {
        return "num_tokens must be at least 2";
    }
    if (r < 1 || r > numTokens - 1 || r > kMaxMergeR)
    {
        return "r must be in [1, num_tokens - 1] (and at most 4096)";
    }
    if (mode != static_cast<int32_t>(MergeMode::kPRUNE) && mode != static_cast<int32_t>(MergeMode::kMEAN)
        && mode != static_cast<int32_t>(MergeMode::kMLERP))
    {
        return "mode must be one of the modes of plugin_specs.json (prune 0, mean 1, mlerp 2)";
    }
    return nullptr;
}

//! The group size S: the destination's size plus its sources' sizes (summed first, in source order).
TOFU_HD float groupSize(float dstWeight, float const* srcWeights, int32_t count)
{
    float sum = 0.F;
    for (int32_t k = 0; k < count; ++k)
    {
        sum += srcWeights[k];
    }
    return dstWeight + sum;
}

//! The size-weighted average of one channel of a group from its parts: the destination's value and the sum of
//! the sources' weighted values (summed from 0, in source order). Both forms of the average below end here.
TOFU_HD float finishAverage(float dstWeight, float dstValue, float sourceSum, float totalSize)
{
    return (dstWeight * dstValue + sourceSum) / totalSize;
}

//! Channel c of the size-weighted average of a group: rows are token indices into x [N, C].
template <typename T>
TOFU_HD float groupAverage(T const* x, int32_t channels, int32_t dstRow, float dstWeight, int32_t const* srcRows,
    float const* srcWeights, int32_t count, float totalSize, int32_t c)
{
    float sum = 0.F;
    for (int32_t k = 0; k < count; ++k)
    {
        sum += srcWeights[k] * toFloat(x[static_cast<int64_t>(srcRows[k]) * channels + c]);
    }
    return finishAverage(dstWeight, toFloat(x[static_cast<int64_t>(dstRow) * channels + c]), sum, totalSize);
}

//! groupAverage of every channel at once, for loops that walk whole rows (the host): the same sums in the same
//! order, so the same values, but each source row is read once, contiguously. average: [channels], written.
template <typename T>
TOFU_HD void groupAverageRow(T const* x, int32_t channels, int32_t dstRow, float dstWeight, int32_t const* srcRows,
    float const* srcWeights, int32_t count, float totalSize, float* average)
{
    for (int32_t c = 0; c < channels; ++c)
    {
        average[c] = 0.F;
    }
    for (int32_t k = 0; k < count; ++k)
    {
        T const* row = x + static_cast<int64_t>(srcRows[k]) * channels;
        float const weight = srcWeights[k];
        for (int32_t c = 0; c < channels; ++c)
        {
            average[c] += weight * toFloat(row[c]);
        }
    }
    T const* dst = x + static_cast<int64_t>(dstRow) * channels;
    for (int32_t c = 0; c < channels; ++c)
    {
        average[c] = finishAverage(dstWeight, toFloat(dst[c]), average[c], totalSize);
    }
}

//! Partial sum of squares of row[start], row[start + stride], ... < channels (a whole row with 0, 1).
template <typename T>
TOFU_HD float squaresScan(T const* row, int32_t channels, int32_t start, int32_t stride)
{
    float sum = 0.F;
    for (int32_t c = start; c < channels; c += stride)
    {
        float const v = toFloat(row[c]);
        sum += v * v;
    }
    return sum;
}

//! Lanes of squaresRow: 8 independent sums keep a CPU's adders busy and fit one AVX or two SSE/NEON registers.
constexpr int32_t kSquaresLanes = 8;

//! The sum of squares of a whole row split as the kernel splits it, into strided partial sums: lane l is
//! squaresScan(row, channels, l, kSquaresLanes), the lanes then added in lane order. Written as one loop over
//! the row so that a CPU runs the lanes side by side (one serial sum is a chain of dependent additions).
template <typename T>
TOFU_HD float squaresRow(T const* row, int32_t channels)
{
    float lanes[kSquaresLanes] = {};
    int32_t c = 0;
    for (; c + kSquaresLanes <= channels; c += kSquaresLanes)
    {
        for (int32_t l = 0; l < kSquaresLanes; ++l)
        {
            float const v = toFloat(row[c + l]);
            lanes[l] += v * v;
        }
    }
    for (int32_t l = 0; c + l < channels; ++l)
    {
        float const v = toFloat(row[c + l]);
        lanes[l] += v * v;
    }
    float sum = 0.F;
    for (int32_t l = 0; l < kSquaresLanes; ++l)
    {
        sum += lanes[l];
    }
    return sum;
}

//! One channel of MLERP: the average's direction times the largest norm of the group.
TOFU_HD float mlerpValue(float average, float averageNorm, float largestNorm)
{
    return average / (averageNorm > kEps ? averageNorm : kEps) * largestNorm;
}

} // namespace tofu_edge
