/*
 * TofuMatch kernel: one thread block per batch item.
 *   1. one warp per A row: argmax over the B columns (lanes stride the row, coalesced), shuffle-combined;
 *   2. one thread per A token: its rank in the stable descending sort of the best scores, source if < r;
 *   3. one thread per A token: its slot from the number of sources before it; prefix and B slots are fixed.
 * Steps 2-3 are O(|A|^2) shared-memory reads per image, a few microseconds even at |A| = 4096, and exact.
 */
#include "tofuMatchKernel.h"
#include "tofuMatchMath.h"
#include "tofuReduce.cuh"

namespace tofu_edge
{
namespace kernels
{

constexpr int kMatchThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kMatchThreads) tofuMatchKernel(
    T const* __restrict__ scores, MatchLayout layout, int32_t* __restrict__ order, int32_t* __restrict__ dstSlot)
{
    extern __shared__ float sharedBest[]; // [numA] best score, then [numA] best B index, [numA] source flag
    int32_t const numA = layout.numA;
    int32_t const numB = layout.numB;
    int32_t* bestB = reinterpret_cast<int32_t*>(sharedBest + numA);
    int32_t* isSource = bestB + numA;

    int64_t const item = blockIdx.x;
    T const* itemScores = scores + item * numA * numB;
    int32_t* itemOrder = order + item * layout.numTokens;
    int32_t* itemDst = dstSlot + item * layout.r;

    int const lane = threadIdx.x % kWarpSize;
    for (int32_t i = threadIdx.x / kWarpSize; i < numA; i += kMatchThreads / kWarpSize)
    {
        ArgMax best = argMaxScan(itemScores + static_cast<int64_t>(i) * numB, numB, lane, kWarpSize);
        for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
        {
            ArgMax const other{__shfl_xor_sync(0xFFFFFFFFU, best.value, offset),
                __shfl_xor_sync(0xFFFFFFFFU, best.index, offset)};
            best = argMaxCombine(best, other);
        }
        if (lane == 0)
        {
            best = argMaxFinish(best);
            sharedBest[i] = best.value;
            bestB[i] = best.index;
        }
    }
    __syncthreads();

    for (int32_t i = threadIdx.x; i < numA; i += kMatchThreads)
    {
        isSource[i] = stableRank(sharedBest, numA, i) < layout.r ? 1 : 0;
    }
    __syncthreads();

    for (int32_t i = threadIdx.x; i < numA; i += kMatchThreads)
    {
        writeAToken(layout, i, isSource[i] != 0, sourcesBefore(isSource, i), bestB[i], itemOrder, itemDst);
    }
    for (int32_t k = threadIdx.x; k < layout.numPrefix + numB; k += kMatchThreads)
    {
        writeFixedToken(layout, k, itemOrder);
    }
}

size_t tofuMatchSharedBytes(int32_t numA) noexcept
{
    return static_cast<size_t>(numA) * (sizeof(float) + 2 * sizeof(int32_t));
}

cudaError_t launchTofuMatch(void const* scores, FloatType scoreType, int32_t batch, int32_t numTokens,
    int32_t numPrefix, int32_t r, int32_t* order, int32_t* dstSlot, cudaStream_t stream) noexcept
{
    if (batch <= 0)
    {
        return batch == 0 ? cudaSuccess : cudaErrorInvalidValue;
    }
    if (checkMatchAttributes(numTokens, numPrefix, r) != nullptr)
    {
        return cudaErrorInvalidValue;
    }
    MatchLayout const layout = makeMatchLayout(numTokens, numPrefix, r);
    size_t const shared = tofuMatchSharedBytes(layout.numA);
    dim3 const grid(static_cast<unsigned>(batch));
    if (scoreType == FloatType::kHALF)
    {
        tofuMatchKernel<__half><<<grid, kMatchThreads, shared, stream>>>(
            static_cast<__half const*>(scores), layout, order, dstSlot);
    }
    else
    {
        tofuMatchKernel<float><<<grid, kMatchThreads, shared, stream>>>(
            static_cast<float const*>(scores), layout, order, dstSlot);
    }
    return cudaGetLastError();
}

} // namespace kernels
} // namespace tofu_edge
