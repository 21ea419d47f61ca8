/*
 * One batch item of TofuMatch and of TofuMerge on the host, written once for the two host runtimes: the host
 * test library (hostTest/tofuHostMath.cpp) and the onnxruntime custom ops (onnxruntime/). Both loop over the
 * batch (onnxruntime over its intra-op threads) and call these; the CUDA kernels spread the same per-element
 * functions of tofuMatchMath.h / tofuMergeMath.h over threads instead.
 *
 * Indices are trusted here: callers check the attributes (checkMatchAttributes / checkMergeAttributes) and
 * that order / dst_slot are in range before the first item. Host only. The item functions allocate nothing:
 * the scratch structs hold what an item needs and can be reused across the items of one call.
 */
#pragma once

#include "tofuMatchMath.h"
#include "tofuMergeMath.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace tofu_edge
{
namespace host
{

//! What matchItem needs per A token: best score, best B column, source flag.
struct MatchScratch
{
    std::vector<float> best;
    std::vector<int32_t> bestB;
    std::vector<int32_t> isSource;

    explicit MatchScratch(MatchLayout const& layout)
        : best(layout.numA)
        , bestB(layout.numA)
        , isSource(layout.numA)
    {
    }
};

//! TofuMatch of one item. Shapes: scores [|A|, |B|]; order [N], dstSlot [r] (written).
template <typename T>
void matchItem(MatchLayout const& layout, T const* scores, MatchScratch& scratch, int32_t* order, int32_t* dstSlot)
{
    for (int32_t i = 0; i < layout.numA; ++i)
    {
        ArgMax const m = argMaxFinish(argMaxScan(scores + static_cast<int64_t>(i) * layout.numB, layout.numB, 0, 1));
        scratch.best[i] = m.value;
        scratch.bestB[i] = m.index;
    }
    // The exact rank is O(|A|^2) comparisons (9.6k at DeiT's |A| = 98): cheaper than sorting at these sizes,
    // and the very function the kernel calls, so ties fall the same way.
    for (int32_t i = 0; i < layout.numA; ++i)
    {
        scratch.isSource[i] = stableRank(scratch.best.data(), layout.numA, i) < layout.r ? 1 : 0;
    }
    for (int32_t i = 0; i < layout.numA; ++i)
    {
        int32_t const before = sourcesBefore(scratch.isSource.data(), i);
        writeAToken(layout, i, scratch.isSource[i] != 0, before, scratch.bestB[i], order, dstSlot);
    }
    for (int32_t k = 0; k < layout.numPrefix + layout.numB; ++k)
    {
        writeFixedToken(layout, k, order);
    }
}

//! What mergeItem needs: the sources listed by output slot, and one row of channels.
struct MergeScratch
{
    std::vector<int32_t> groupEnd; // [N - r + 1]: after listing, slot s has [groupEnd[s - 1], groupEnd[s])
    std::vector<int32_t> srcRows; // [r] token rows of the sources, grouped by slot, in source order
    std::vector<float> srcWeights; // [r] their sizes
    std::vector<float> average; // [C]

    MergeScratch(int32_t numTokens, int32_t channels, int32_t r)
        : groupEnd(numTokens - r + 1)
        , srcRows(r)
        , srcWeights(r)
        , average(channels)
    {
    }
};

//! Lists the sources of every slot in O(N + r), a counting sort by dst_slot that keeps source order, which is
//! the order the kernel's ballots and fuse_tokens' sums take.
template <typename T>
void listSources(T const* size, int32_t const* order, int32_t const* dstSlot, int32_t numTokens, int32_t r,
    MergeScratch& scratch)
{
    int32_t const numOut = numTokens - r;
    int32_t* groupEnd = scratch.groupEnd.data();
    std::fill(scratch.groupEnd.begin(), scratch.groupEnd.end(), 0);
    for (int32_t k = 0; k < r; ++k)
    {
        ++groupEnd[dstSlot[k] + 1];
    }
    for (int32_t s = 1; s <= numOut; ++s) // groupEnd[s] = first entry of slot s
    {
        groupEnd[s] += groupEnd[s - 1];
    }
    for (int32_t k = 0; k < r; ++k) // each slot's cursor ends at the start of the next: groupEnd[s] = end of s
    {
        int32_t const at = groupEnd[dstSlot[k]]++;
        int32_t const row = order[numOut + k];
        scratch.srcRows[at] = row;
        scratch.srcWeights[at] = toFloat(size[row]);
    }
}

//! TofuMerge of one item. Shapes: x [N, C], size [N]; order [N], dstSlot [r] (valid); xOut [N - r, C],
//! sizeOut [N - r] (written). A group of one (every slot when pruning) is copied bit for bit.
template <typename T>
void mergeItem(T const* x, T const* size, int32_t const* order, int32_t const* dstSlot, int32_t numTokens,
    int32_t channels, int32_t r, MergeMode mode, MergeScratch& scratch, T* xOut, T* sizeOut)
{
    int32_t const numOut = numTokens - r;
    if (mode != MergeMode::kPRUNE)
    {
        listSources(size, order, dstSlot, numTokens, r, scratch);
    }
    float* average = scratch.average.data();
    for (int32_t slot = 0; slot < numOut; ++slot)
    {
        T* outRow = xOut + static_cast<int64_t>(slot) * channels;
        int32_t const dstRow = order[slot];
        T const* dstX = x + static_cast<int64_t>(dstRow) * channels;
        int32_t const first = slot == 0 ? 0 : scratch.groupEnd[slot - 1];
        int32_t const count = mode == MergeMode::kPRUNE ? 0 : scratch.groupEnd[slot] - first;
        if (count == 0)
        {
            if (channels > 0) // C = 0 is a valid shape, whose empty tensors may have null data
            {
                std::memcpy(outRow, dstX, sizeof(T) * static_cast<size_t>(channels));
            }
            sizeOut[slot] = size[dstRow];
            continue;
        }
        int32_t const* srcRows = scratch.srcRows.data() + first;
        float const* srcWeights = scratch.srcWeights.data() + first;
        float const dstWeight = toFloat(size[dstRow]);
        float const total = groupSize(dstWeight, srcWeights, count);
        groupAverageRow(x, channels, dstRow, dstWeight, srcRows, srcWeights, count, total, average);
        if (mode == MergeMode::kMEAN)
        {
            for (int32_t c = 0; c < channels; ++c)
            {
                outRow[c] = fromFloat<T>(average[c]);
            }
        }
        else
        {
            float const averageNorm = std::sqrt(squaresRow(average, channels));
            float largest = squaresRow(dstX, channels);
            for (int32_t k = 0; k < count; ++k)
            {
                largest = std::fmax(largest, squaresRow(x + static_cast<int64_t>(srcRows[k]) * channels, channels));
            }
            float const largestNorm = std::sqrt(largest);
            for (int32_t c = 0; c < channels; ++c)
            {
                outRow[c] = fromFloat<T>(mlerpValue(average[c], averageNorm, largestNorm));
            }
        }
        sizeOut[slot] = fromFloat<T>(total);
    }
}

} // namespace host
} // namespace tofu_edge
