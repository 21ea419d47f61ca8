/*
 * TofuMatch on onnxruntime's CPU provider: scores [B, |A|, |B|] (fp32 or fp16) -> order [B, N], dst_slot
 * [B, r] (int32). The attributes are read and checked once, when onnxruntime creates the node's kernel; each
 * batch item is common/tofuHostStep.h's matchItem, the items spread over the intra-op threads.
 */
#include "tofuHostStep.h"
#include "tofuOrtNode.h"
#include "tofuOrtOps.h"

namespace tofu_edge
{
namespace ort
{
namespace
{

using Spec = spec::TofuMatch;

template <typename T>
class MatchKernel
{
public:
    explicit MatchKernel(OrtKernelInfo const* info)
        : mAttributes(info, Spec::kNAME, Spec::kVERSION, Spec::kATTRIBUTE_NAMES, Spec::kNB_ATTRIBUTES)
    {
        int32_t const numTokens = mAttributes[Spec::kATTR_INDEX_NUM_TOKENS];
        int32_t const numPrefix = mAttributes[Spec::kATTR_INDEX_NUM_PREFIX];
        int32_t const r = mAttributes[Spec::kATTR_INDEX_R];
        mAttributes.check(checkMatchAttributes(numTokens, numPrefix, r));
        mLayout = makeMatchLayout(numTokens, numPrefix, r);
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
        std::vector<int64_t> const shape = context.GetInput(0).GetTensorTypeAndShapeInfo().GetShape();
        checkShape(shape, {-1, mLayout.numA, mLayout.numB}, Spec::kINPUT_NAMES[0], "[B, |A|, |B|]",
            mAttributes.where());
        int64_t const batch = shape[0];
        MatchLayout const layout = mLayout;
        Ort::UnownedValue order = context.GetOutput(0, {batch, layout.numTokens});
        Ort::UnownedValue dstSlot = context.GetOutput(1, {batch, layout.r});
        if (batch == 0)
        {
            return;
        }
        T const* scores = context.GetInput(0).GetTensorData<T>();
        int32_t* orderData = order.GetTensorMutableData<int32_t>();
        int32_t* dstData = dstSlot.GetTensorMutableData<int32_t>();
        forEachItem(context, batch, mAttributes.where(), [&](int64_t item) {
            host::MatchScratch scratch(layout);
            host::matchItem(layout, scores + item * layout.numA * layout.numB, scratch,
                orderData + item * layout.numTokens, dstData + item * layout.r);
        });
    }

    NodeAttributes mAttributes;
    MatchLayout mLayout{};
};

template <typename T>
struct MatchOp : Ort::CustomOpBase<MatchOp<T>, MatchKernel<T>, true>
{
    OrtStatusPtr CreateKernelV2(OrtApi const& /*api*/, OrtKernelInfo const* info, void** kernel) const noexcept
    {
        try
        {
            *kernel = new MatchKernel<T>(info);
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

    ONNXTensorElementDataType GetInputType(size_t /*index*/) const noexcept
    {
        return ElementType<T>::kVALUE;
    }

    size_t GetOutputTypeCount() const noexcept
    {
        return Spec::kNB_OUTPUTS;
    }

    ONNXTensorElementDataType GetOutputType(size_t /*index*/) const noexcept
    {
        return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    }
};

} // namespace

OrtCustomOp const* matchOp(FloatType type)
{
    // Leaked on purpose: sessions hold these pointers, and may outlive static destructors at exit.
    static auto const* const fp32 = new MatchOp<float>();
    static auto const* const fp16 = new MatchOp<Half>();
    return type == FloatType::kHALF ? static_cast<OrtCustomOp const*>(fp16) : static_cast<OrtCustomOp const*>(fp32);
}

} // namespace ort
} // namespace tofu_edge
