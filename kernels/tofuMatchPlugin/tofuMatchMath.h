/*
 * TofuMatch, the per-element math shared by the CUDA kernel and the host loops of common/tofuHostStep.h
 * (the host test library, the onnxruntime custom ops).
 *
 * Semantics of tofu_edge/ops/match.py (match_tokens) from the scores on:
 *   A = non-prefix tokens at even positions of the full sequence, B = those at odd positions;
 *   every A row i takes its best B column (the first maximum on ties);
 *   A tokens are ranked by a stable descending sort of their best score (equal scores: lower index first);
 *   the r best are the sources, the other A tokens (unm) keep ascending position;
 *   order = [prefix 0..P-1, unm positions, B positions, source positions (ascending)],
 *   dst_slot[k] = P + (|A| - r) + best B index of the k-th source.
 *
 * Shapes: scores [|A|, |B|] per batch item, order [num_tokens], dst_slot [r].
 */
#pragma once

#include "tofuCommon.h"

#include <climits>
#include <cmath>

namespace tofu_edge
{

//! Where the A and B sets of one step start and how big they are (tofu_edge.ops.match.split_starts).
struct MatchLayout
{
    int32_t numTokens;
    int32_t numPrefix;
    int32_t r;
    int32_t aStart;
    int32_t bStart;
    int32_t numA;
    int32_t numB;
};

TOFU_HD int32_t countFrom(int32_t start, int32_t end) // len(range(start, end, 2))
{
    return start < end ? (end - start + 1) / 2 : 0;
}

TOFU_HD MatchLayout makeMatchLayout(int32_t numTokens, int32_t numPrefix, int32_t r)
{
    MatchLayout layout{};
    layout.numTokens = numTokens;
    layout.numPrefix = numPrefix;
    layout.r = r;
    layout.aStart = numPrefix + numPrefix % 2;
    layout.bStart = 2 * numPrefix + 1 - layout.aStart;
    layout.numA = countFrom(layout.aStart, numTokens);
    layout.numB = countFrom(layout.bStart, numTokens);
    return layout;
}

//! Largest num_tokens TofuMatch takes: the kernel keeps 12 bytes per A token in 48 KiB of shared memory.
constexpr int32_t kMaxMatchTokens = 8192;

//! nullptr if the attributes describe a valid step, else why not (static text).
inline char const* checkMatchAttributes(int32_t numTokens, int32_t numPrefix, int32_t r)
{
    if (numTokens < 2 || numTokens > kMaxMatchTokens)
    {
        return "num_tokens must be in [2, 8192]";
    }
    if (numPrefix < 0 || numPrefix > numTokens - 2)
    {
        return "num_prefix must be in [0, num_tokens - 2] (at least one A and one B token)";
    }
    MatchLayout const layout = makeMatchLayout(numTokens, numPrefix, r);
    if (r < 1 || r > layout.numA)
    {
        return "r must be in [1, |A|], |A| = the non-prefix tokens at even positions";
    }
    return nullptr;
}

//! A candidate maximum: a score and its index; index kNoIndex until a score was seen.
struct ArgMax
{
    float value;
    int32_t index;
};

constexpr int32_t kNoIndex = INT_MAX;

TOFU_HD ArgMax argMaxInit()
{
    return ArgMax{-INFINITY, kNoIndex};
}

//! The total order of both steps: (score, index) is ahead of (other, otherIndex) if it scores higher, or the
//! same with a lower index. So the argmax keeps the first maximum and the ranking is a stable descending sort.
//! NaN is never ahead of anything.
TOFU_HD bool isAhead(float score, int32_t index, float other, int32_t otherIndex)
{
    return score > other || (score == other && index < otherIndex);
}

//! Combines two partial argmaxes. The order is total, so any reduction tree gives the sequential result.
TOFU_HD ArgMax argMaxCombine(ArgMax a, ArgMax b)
{
    return isAhead(b.value, b.index, a.value, a.index) ? b : a;
}

//! Argmax over row[start], row[start + stride], ... < n.
template <typename T>
TOFU_HD ArgMax argMaxScan(T const* row, int32_t n, int32_t start, int32_t stride)
{
    ArgMax best = argMaxInit();
    for (int32_t j = start; j < n; j += stride)
    {
        best = argMaxCombine(best, ArgMax{toFloat(row[j]), j});
    }
    return best;
}

//! A finished argmax: a row of NaNs still picks column 0, with score -inf (ranked last), so the outputs stay a
//! valid permutation whatever the input.
TOFU_HD ArgMax argMaxFinish(ArgMax a)
{
    return a.index == kNoIndex ? ArgMax{-INFINITY, 0} : a;
}

//! Rank of A token i in the stable descending sort of the best scores: how many tokens are ahead of it.
TOFU_HD int32_t stableRank(float const* best, int32_t numA, int32_t i)
{
    int32_t rank = 0;
    for (int32_t j = 0; j < numA; ++j)
    {
        rank += isAhead(best[j], j, best[i], i) ? 1 : 0;
    }
    return rank;
}

//! How many of the A tokens before i are sources.
TOFU_HD int32_t sourcesBefore(int32_t const* isSource, int32_t i)
{
    int32_t count = 0;
    for (int32_t j = 0; j < i; ++j)
    {
        count += isSource[j];
    }
    return count;
}

//! Writes A token i: a source goes to slot N - r + (its rank among sources by position) and records its
//! destination slot; an unmerged token goes after the prefix, in ascending position.
TOFU_HD void writeAToken(MatchLayout const& layout, int32_t i, bool isSource, int32_t before, int32_t bestB,
    int32_t* order, int32_t* dstSlot)
{
    int32_t const position = layout.aStart + 2 * i;
    if (isSource)
    {
        order[layout.numTokens - layout.r + before] = position;
        dstSlot[before] = layout.numPrefix + layout.numA - layout.r + bestB;
    }
    else
    {
        order[layout.numPrefix + (i - before)] = position;
    }
}

//! Writes the k-th token whose slot does not depend on the scores: the prefix (k < P), then the B tokens.
TOFU_HD void writeFixedToken(MatchLayout const& layout, int32_t k, int32_t* order)
{
    if (k < layout.numPrefix)
    {
        order[k] = k;
    }
    else
    {
        int32_t const j = k - layout.numPrefix;
        order[layout.numPrefix + layout.numA - layout.r + j] = layout.bStart + 2 * j;
    }
}

} // namespace tofu_edge
