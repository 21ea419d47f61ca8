/*
 * The C ABI of libtofu_edge_kernels (tofuKernelApi.h): argument checks, then the launchers the plugins call.
 * Nothing here throws; the launchers are noexcept.
 */
#include "tofuKernelApi.h"

#include "tofuMatchKernel.h"
#include "tofuMatchMath.h"
#include "tofuMergeKernel.h"
#include "tofuMergeMath.h"

#define TOFU_KERNELS_API extern "C" __attribute__((visibility("default")))

namespace
{

bool floatType(int32_t code, tofu_edge::FloatType& type) noexcept
{
    if (code == TOFU_KERNELS_FLOAT32 || code == TOFU_KERNELS_FLOAT16)
    {
        type = code == TOFU_KERNELS_FLOAT16 ? tofu_edge::FloatType::kHALF : tofu_edge::FloatType::kFLOAT;
        return true;
    }
    return false;
}

static_assert(static_cast<int32_t>(tofu_edge::FloatType::kFLOAT) == TOFU_KERNELS_FLOAT32
        && static_cast<int32_t>(tofu_edge::FloatType::kHALF) == TOFU_KERNELS_FLOAT16,
    "the C type codes are FloatType's values");

} // namespace

TOFU_KERNELS_API int32_t tofu_kernels_abi_version(void)
{
    return TOFU_KERNELS_ABI_VERSION;
}

TOFU_KERNELS_API int tofu_kernels_match(void const* scores, int32_t dtype, int32_t batch, int32_t num_tokens,
    int32_t num_prefix, int32_t r, int32_t* order, int32_t* dst_slot, cudaStream_t stream)
{
    tofu_edge::FloatType type{};
    if (!floatType(dtype, type) || batch < 0 || tofu_edge::checkMatchAttributes(num_tokens, num_prefix, r) != nullptr
        || (batch > 0 && (scores == nullptr || order == nullptr || dst_slot == nullptr)))
    {
        return cudaErrorInvalidValue;
    }
    return tofu_edge::kernels::launchTofuMatch(scores, type, batch, num_tokens, num_prefix, r, order, dst_slot, stream);
}

TOFU_KERNELS_API int tofu_kernels_merge(void const* x, void const* size, int32_t const* order,
    int32_t const* dst_slot, int32_t dtype, int32_t batch, int32_t num_tokens, int32_t channels, int32_t r,
    int32_t mode, void* x_out, void* size_out, cudaStream_t stream)
{
    tofu_edge::FloatType type{};
    if (!floatType(dtype, type) || batch < 0 || channels < 0
        || tofu_edge::checkMergeAttributes(num_tokens, r, mode) != nullptr
        || (batch > 0
            && (x == nullptr || size == nullptr || order == nullptr || dst_slot == nullptr || x_out == nullptr
                || size_out == nullptr)))
    {
        return cudaErrorInvalidValue;
    }
    return tofu_edge::kernels::launchTofuMerge(x, size, order, dst_slot, type, batch, num_tokens, channels, r,
        static_cast<tofu_edge::MergeMode>(mode), x_out, size_out, stream);
}

TOFU_KERNELS_API char const* tofu_kernels_match_problem(int32_t num_tokens, int32_t num_prefix, int32_t r)
{
    return tofu_edge::checkMatchAttributes(num_tokens, num_prefix, r);
}

TOFU_KERNELS_API char const* tofu_kernels_merge_problem(int32_t num_tokens, int32_t r, int32_t mode)
{
    return tofu_edge::checkMergeAttributes(num_tokens, r, mode);
}

TOFU_KERNELS_API char const* tofu_kernels_error_string(int status)
{
    return cudaGetErrorString(static_cast<cudaError_t>(status));
}

TOFU_KERNELS_API int tofu_kernels_runtime_version(int32_t* version)
{
    int value = 0;
    cudaError_t const status = cudaRuntimeGetVersion(&value);
    if (version != nullptr)
    {
        *version = value;
    }
    return status;
}

TOFU_KERNELS_API int tofu_kernels_driver_version(int32_t* version)
{
    int value = 0;
    cudaError_t const status = cudaDriverGetVersion(&value);
    if (version != nullptr)
    {
        *version = value;
    }
    return status;
}
