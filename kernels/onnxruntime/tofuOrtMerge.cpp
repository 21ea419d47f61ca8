/*
 * TofuMerge on onnxruntime's CPU provider: x [B, N, C], size [B, N, 1] (both fp32 or both fp16), order [B, N],
 * dst_slot [B, r] (int32) -> x_out [B, N - r, C], size_out [B, N - r, 1]. The attributes are read and checked
 * once, when onnxruntime creates the node's kernel; the shapes and every index are checked before any item
 * runs (an index out of range is an error here, where the GPU kernel can only clamp it). Each batch item is
 * common/tofuHostStep.h's mergeItem, the items spread over the intra-op threads.
 */
#include "tofuHostStep.h"
#include "tofuOrtNode.h"
#include "tofuOrtOps.h"

#include <limits>

namespace tofu_edge
{
namespace ort
{
namespace
{

using Spec = spec::TofuMerge;

enum Input : size_t
{
    kX = 0,
    kSize = 1,
    kOrder = 2,
    kDstSlot = 3
};

//! Throws, naming the first element of `values` ([batch, width], row-major) outside [0, limit).
void checkIndices(int32_t const* values, int64_t batch, int64_t width, int32_t limit, char const* name,
    std::string const& where)
{
    for (int64_t i = 0; i < batch * width; ++i)
    {
        if (values[i] < 0 || values[i] >= limit)
        {
            fail(where + ": " + name + "[" + std::to_string(i / width) + ", " + std::to_string(i % width)
                + "] = " + std::to_string(values[i]) + " is outside [0, " + std::to_string(limit) + ")");
        }
    }
}

template <typename T>
class MergeKernel
{
public:
    explicit MergeKernel(OrtKernelInfo const* info)
        : mAttributes(info, Spec::kNAME, Spec::kVERSION, Spec::kATTRIBUTE_NAMES, Spec::kNB_ATTRIBUTES)
        , mNumTokens(mAttributes[Spec::kATTR_INDEX_NUM_TOKENS])
        , mR(mAttributes[Spec::kATTR_INDEX_R])
        , mMode(mAttributes[Spec::kATTR_INDEX_MODE])
    {
        mAttributes.check(checkMergeAttributes(mNumTokens, mR, mMode));
    }

    OrtStatusPtr ComputeV2(OrtKernelContext* context) const noexcept
    {
        try
        {
            compute(Ort::KernelContext(context));
            return nullptr;
        }
        catch (...)
        {
            return toStatus();
        }
    }

private:
    void compute(Ort::KernelContext const& context) const
    {
        std::string const& where = mAttributes.where();
        std::vector<int64_t> const xShape = context.GetInput(kX).GetTensorTypeAndShapeInfo().GetShape();
        checkShape(xShape, {-1, mNumTokens, -1}, Spec::kINPUT_NAMES[kX], "[B, num_tokens, C]", where);
        int64_t const batch = xShape[0];
        if (xShape[2] > std::numeric_limits<int32_t>::max())
        {
            fail(where + ": input x has " + std::to_string(xShape[2]) + " channels, more than int32 counts");
        }
        auto const channels = static_cast<int32_t>(xShape[2]);
        auto shapeOf = [&](Input input) { return context.GetInput(input).GetTensorTypeAndShapeInfo().GetShape(); };
        checkShape(shapeOf(kSize), {batch, mNumTokens, 1}, Spec::kINPUT_NAMES[kSize], "[B, num_tokens, 1]", where);
        checkShape(shapeOf(kOrder), {batch, mNumTokens}, Spec::kINPUT_NAMES[kOrder], "[B, num_tokens]", where);
        checkShape(shapeOf(kDstSlot), {batch, mR}, Spec::kINPUT_NAMES[kDstSlot], "[B, r]", where);

        int32_t const numOut = mNumTokens - mR;
        int32_t const* order = context.GetInput(kOrder).GetTensorData<int32_t>();
        int32_t const* dstSlot = context.GetInput(kDstSlot).GetTensorData<int32_t>();
        checkIndices(order, batch, mNumTokens, mNumTokens, Spec::kINPUT_NAMES[kOrder], where);
        checkIndices(dstSlot, batch, mR, numOut, Spec::kINPUT_NAMES[kDstSlot], where);

        Ort::UnownedValue xOut = context.GetOutput(0, {batch, numOut, channels});
        Ort::UnownedValue sizeOut = context.GetOutput(1, {batch, numOut, 1});
        if (batch == 0)
        {
            return;
        }
        T const* x = context.GetInput(kX).GetTensorData<T>();
        T const* size = context.GetInput(kSize).GetTensorData<T>();
        T* xOutData = xOut.GetTensorMutableData<T>();
        T* sizeOutData = sizeOut.GetTensorMutableData<T>();
        int32_t const numTokens = mNumTokens;
        int32_t const r = mR;
        auto const mode = static_cast<MergeMode>(mMode);
        forEachItem(context, batch, where, [&](int64_t item) {
            host::MergeScratch scratch(numTokens, channels, r);
            host::mergeItem(x + item * numTokens * channels, size + item * numTokens, order + item * numTokens,
                dstSlot + item * r, numTokens, channels, r, mode, scratch, xOutData + item * numOut * channels,
                sizeOutData + item * numOut);
        });
    }

    NodeAttributes mAttributes;
    int32_t mNumTokens;
    int32_t mR;
    int32_t mMode;
};

template <typename T>
struct MergeOp : Ort::CustomOpBase<MergeOp<T>, MergeKernel<T>, true>
{
    OrtStatusPtr CreateKernelV2(OrtApi const& /*api*/, OrtKernelInfo const* info, void** kernel) const noexcept
    {
        try
        {
            *kernel = new MergeKernel<T>(info);
            return nullptr;
        }
        catch (...)
        {
            return toStatus();
        }
    }

    char const* GetName() const noexcept
    {
        return Spec::kNAME;
    }

    size_t GetInputTypeCount() const noexcept
    {
        return Spec::kNB_INPUTS;
    }

    ONNXTensorElementDataType GetInputType(size_t index) const noexcept
    {
        return index == kX || index == kSize ? ElementType<T>::kVALUE : ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    }

    size_t GetOutputTypeCount() const noexcept
    {
        return Spec::kNB_OUTPUTS;
    }

    ONNXTensorElementDataType GetOutputType(size_t /*index*/) const noexcept
    {
        return ElementType<T>::kVALUE;
    }
};

} // namespace

OrtCustomOp const* mergeOp(FloatType type)
{
    // Leaked on purpose, as matchOp's.
    static auto const* const fp32 = new MergeOp<float>();
    static auto const* const fp16 = new MergeOp<Half>();
    return type == FloatType::kHALF ? static_cast<OrtCustomOp const*>(fp16) : static_cast<OrtCustomOp const*>(fp32);
}

} // namespace ort
} // namespace tofu_edge
