/*
 * TofuMerge kernel: one thread block per output token (grid: N - r slots x batch), threads over channels.
 * Warp 0 lists the slot's sources in source order with ballots (the same order as the host loop and as
 * fuse_tokens' sums); a slot without sources is a copy. MLERP needs the average's norm and each member's
 * norm: block sums, then the average is recomputed per channel rather than kept (no limit on C).
 */
#include "tofuMergeKernel.h"
#include "tofuReduce.cuh"

namespace tofu_edge
{
namespace kernels
{

constexpr int kMergeThreads = 128;
constexpr int32_t kMaxGridY = 65535;

template <typename T>
__global__ void __launch_bounds__(kMergeThreads) tofuMergeKernel(T const* __restrict__ x, T const* __restrict__ size,
    int32_t const* __restrict__ order, int32_t const* __restrict__ dstSlot, int32_t numTokens, int32_t channels,
    int32_t r, MergeMode mode, T* __restrict__ xOut, T* __restrict__ sizeOut)
{
    extern __shared__ int32_t sharedRows[]; // [r] token rows of this slot's sources, then [r] their sizes
    float* sharedWeights = reinterpret_cast<float*>(sharedRows + r);
    __shared__ int32_t sharedCount;
    __shared__ float scratch[kMergeThreads / kWarpSize];

    int32_t const numOut = numTokens - r;
    int32_t const slot = blockIdx.x;
    int64_t const item = blockIdx.y;
    T const* itemX = x + item * numTokens * channels;
    T const* itemSize = size + item * numTokens;
    int32_t const* itemOrder = order + item * numTokens;
    int32_t const* itemDst = dstSlot + item * r;
    T* outRow = xOut + (item * numOut + slot) * channels;
    int32_t const dstRow = clampIndex(itemOrder[slot], numTokens);
    T const* dstX = itemX + static_cast<int64_t>(dstRow) * channels;

    int32_t count = 0;
    if (mode != MergeMode::kPRUNE)
    {
        if (threadIdx.x < kWarpSize)
        {
            uint32_t const lane = threadIdx.x;
            int32_t found = 0;
            for (int32_t base = 0; base < r; base += kWarpSize)
            {
                int32_t const k = base + static_cast<int32_t>(lane);
                bool const hit = k < r && itemDst[k] == slot;
                uint32_t const mask = __ballot_sync(0xFFFFFFFFU, hit);
                if (hit)
                {
                    int32_t const at = found + __popc(mask & ((1U << lane) - 1U));
                    int32_t const row = clampIndex(itemOrder[numOut + k], numTokens);
                    sharedRows[at] = row;
                    sharedWeights[at] = toFloat(itemSize[row]);
                }
                found += __popc(mask);
            }
            if (lane == 0)
            {
                sharedCount = found;
            }
        }
        __syncthreads();
        count = sharedCount; // the same in every thread: the branches below are uniform
    }

    if (count == 0)
    {
        for (int32_t c = threadIdx.x; c < channels; c += kMergeThreads)
        {
            outRow[c] = dstX[c];
        }
        if (threadIdx.x == 0)
        {
            sizeOut[item * numOut + slot] = itemSize[dstRow];
        }
        return;
    }

    float const dstWeight = toFloat(itemSize[dstRow]);
    float const total = groupSize(dstWeight, sharedWeights, count);
    if (mode == MergeMode::kMEAN)
    {
        for (int32_t c = threadIdx.x; c < channels; c += kMergeThreads)
        {
            outRow[c] = fromFloat<T>(
                groupAverage(itemX, channels, dstRow, dstWeight, sharedRows, sharedWeights, count, total, c));
        }
    }
    else
    {
        float squares = 0.F;
        for (int32_t c = threadIdx.x; c < channels; c += kMergeThreads)
        {
            float const v
                = groupAverage(itemX, channels, dstRow, dstWeight, sharedRows, sharedWeights, count, total, c);
            squares += v * v;
        }
        float const averageNorm = sqrtf(blockSum<kMergeThreads>(squares, scratch));
        float largest = blockSum<kMergeThreads>(squaresScan(dstX, channels, threadIdx.x, kMergeThreads), scratch);
        for (int32_t k = 0; k < count; ++k)
        {
            T const* srcX = itemX + static_cast<int64_t>(sharedRows[k]) * channels;
            largest = fmaxf(largest, blockSum<kMergeThreads>(squaresScan(srcX, channels, threadIdx.x, kMergeThreads), scratch));
        }
        float const largestNorm = sqrtf(largest);
        for (int32_t c = threadIdx.x; c < channels; c += kMergeThreads)
        {
            float const v
                = groupAverage(itemX, channels, dstRow, dstWeight, sharedRows, sharedWeights, count, total, c);
            outRow[c] = fromFloat<T>(mlerpValue(v, averageNorm, largestNorm));
        }
    }
    if (threadIdx.x == 0)
    {
        sizeOut[item * numOut + slot] = fromFloat<T>(total);
    }
}

cudaError_t launchTofuMerge(void const* x, void const* size, int32_t const* order, int32_t const* dstSlot,
    FloatType tokenType, int32_t batch, int32_t numTokens, int32_t channels, int32_t r, MergeMode mode, void* xOut,
    void* sizeOut, cudaStream_t stream) noexcept
{
    if (batch == 0)
    {
        return cudaSuccess;
    }
    if (batch < 0 || batch > kMaxGridY || channels < 0
        || checkMergeAttributes(numTokens, r, static_cast<int32_t>(mode)) != nullptr)
    {
        return cudaErrorInvalidValue;
    }
    dim3 const grid(static_cast<unsigned>(numTokens - r), static_cast<unsigned>(batch));
    size_t const shared = static_cast<size_t>(r) * (sizeof(int32_t) + sizeof(float));
    if (tokenType == FloatType::kHALF)
    {
        tofuMergeKernel<__half><<<grid, kMergeThreads, shared, stream>>>(static_cast<__half const*>(x),
            static_cast<__half const*>(size), order, dstSlot, numTokens, channels, r, mode, static_cast<__half*>(xOut),
            static_cast<__half*>(sizeOut));
    }
    else
    {
        tofuMergeKernel<float><<<grid, kMergeThreads, shared, stream>>>(static_cast<float const*>(x),
            static_cast<float const*>(size), order, dstSlot, numTokens, channels, r, mode, static_cast<float*>(xOut),
            static_cast<float*>(sizeOut));
    }
    return cudaGetLastError();
}

} // namespace kernels
} // namespace tofu_edge
