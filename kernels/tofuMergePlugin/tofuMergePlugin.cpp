#include "tofuMergePlugin.h"
#include "tofuMergeKernel.h"
#include "tofuMergeMath.h"

#include <limits>

namespace tofu_edge
{
namespace plugin
{
namespace
{
using Spec = spec::TofuMerge;
using nvinfer1::DataType;

constexpr int32_t kXIndex = 0;
constexpr int32_t kSizeIndex = 1;
constexpr int32_t kOrderIndex = 2;
constexpr int32_t kDstSlotIndex = 3;
constexpr int32_t kXOutIndex = 0;
constexpr int32_t kSizeOutIndex = 1;
static_assert(Spec::kNB_INPUTS == 4 && Spec::kNB_OUTPUTS == 2, "plugin_specs.json: TofuMerge's tensors changed");

//! dims[axis] is unknown (-1) or equal to value.
bool fits(nvinfer1::Dims const& dims, int32_t axis, int64_t value) noexcept
{
    return dims.d[axis] < 0 || dims.d[axis] == value;
}
} // namespace

char const* TofuMergePlugin::checkAttributes(int32_t const* attributes) noexcept
{
    return checkMergeAttributes(attributes[Spec::kATTR_INDEX_NUM_TOKENS], attributes[Spec::kATTR_INDEX_R],
        attributes[Spec::kATTR_INDEX_MODE]);
}

void TofuMergePlugin::describeAttributes(int32_t const* attributes, char* buffer, size_t capacity) noexcept
{
    formatMessage(buffer, capacity, "num_tokens = %d, r = %d, mode = %d", attributes[Spec::kATTR_INDEX_NUM_TOKENS],
        attributes[Spec::kATTR_INDEX_R], attributes[Spec::kATTR_INDEX_MODE]);
}

int32_t TofuMergePlugin::checkInputDims(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept
{
    if (nbInputs != Spec::kNB_INPUTS)
    {
        return fail("expects four inputs (x, size, order, dst_slot)");
    }
    nvinfer1::Dims const& x = dims[kXIndex];
    nvinfer1::Dims const& size = dims[kSizeIndex];
    nvinfer1::Dims const& order = dims[kOrderIndex];
    nvinfer1::Dims const& dst = dims[kDstSlotIndex];
    bool ok = x.nbDims == 3 && size.nbDims == 3 && order.nbDims == 2 && dst.nbDims == 2;
    ok = ok && fits(x, 1, numTokens()) && fits(size, 1, numTokens()) && fits(size, 2, 1)
        && fits(order, 1, numTokens()) && fits(dst, 1, r());
    if (ok && x.d[0] >= 0) // a known batch must be the same everywhere
    {
        ok = fits(size, 0, x.d[0]) && fits(order, 0, x.d[0]) && fits(dst, 0, x.d[0]);
    }
    if (!ok)
    {
        logInvalid("inputs do not fit the attributes",
            "expects x [B, num_tokens, C], size [B, num_tokens, 1], order [B, num_tokens], dst_slot [B, r]");
        return -1;
    }
    return 0;
}

// IPluginV3OneBuild

int32_t TofuMergePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != Spec::kNB_INPUTS || nbOutputs != Spec::kNB_OUTPUTS || !isFloatType(inputTypes[kXIndex])
        || inputTypes[kSizeIndex] != inputTypes[kXIndex])
    {
        return fail("expects x and size of one type, fp32 or fp16, and two outputs");
    }
    outputTypes[kXOutIndex] = inputTypes[kXIndex];
    outputTypes[kSizeOutIndex] = inputTypes[kXIndex];
    return 0;
}

int32_t TofuMergePlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != Spec::kNB_INPUTS || nbOutputs != Spec::kNB_OUTPUTS)
    {
        return fail("expects four inputs (x, size, order, dst_slot) and two outputs");
    }
    nvinfer1::Dims known[Spec::kNB_INPUTS]{};
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        known[i] = knownDims(inputs[i]);
    }
    if (checkInputDims(known, nbInputs) != 0)
    {
        return -1;
    }
    // Static token counts from the attributes; batch and channels pass through.
    nvinfer1::DimsExprs const& x = inputs[kXIndex];
    nvinfer1::IDimensionExpr const* kept = exprBuilder.constant(numTokens() - r());
    outputs[kXOutIndex].nbDims = 3;
    outputs[kXOutIndex].d[0] = x.d[0];
    outputs[kXOutIndex].d[1] = kept;
    outputs[kXOutIndex].d[2] = x.d[2];
    outputs[kSizeOutIndex].nbDims = 3;
    outputs[kSizeOutIndex].d[0] = x.d[0];
    outputs[kSizeOutIndex].d[1] = kept;
    outputs[kSizeOutIndex].d[2] = exprBuilder.constant(1);
    return 0;
}

bool TofuMergePlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != Spec::kNB_INPUTS || nbOutputs != Spec::kNB_OUTPUTS || pos < 0
        || pos >= nbInputs + nbOutputs)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    switch (pos)
    {
    case kXIndex: return desc.format == nvinfer1::TensorFormat::kLINEAR && isFloatType(desc.type);
    case kOrderIndex:
    case kDstSlotIndex: return isLinear(desc, DataType::kINT32);
    default: return isLinear(desc, inOut[kXIndex].desc.type); // size, x_out, size_out: the type of x
    }
}

int32_t TofuMergePlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != Spec::kNB_INPUTS || nbOutputs != Spec::kNB_OUTPUTS)
    {
        return fail("expects four inputs (x, size, order, dst_slot) and two outputs");
    }
    DataType const type = in[kXIndex].desc.type;
    if (!isFloatType(type) || in[kSizeIndex].desc.type != type || in[kOrderIndex].desc.type != DataType::kINT32
        || in[kDstSlotIndex].desc.type != DataType::kINT32 || out[kXOutIndex].desc.type != type
        || out[kSizeOutIndex].desc.type != type)
    {
        return fail("x, size, x_out and size_out must share one type (fp32 or fp16), indices int32");
    }
    nvinfer1::Dims dims[Spec::kNB_INPUTS];
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        dims[i] = in[i].desc.dims;
    }
    return checkInputDims(dims, nbInputs);
}

// IPluginV3OneRuntime

int32_t TofuMergePlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept
{
    if (in == nullptr || nbInputs != Spec::kNB_INPUTS)
    {
        return fail("expects four inputs (x, size, order, dst_slot)");
    }
    nvinfer1::Dims dims[Spec::kNB_INPUTS];
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        dims[i] = in[i].dims;
    }
    return checkInputDims(dims, nbInputs);
}

int32_t TofuMergePlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& x = inputDesc[kXIndex].dims;
    if (x.nbDims != 3 || x.d[0] > std::numeric_limits<int32_t>::max() || x.d[2] > std::numeric_limits<int32_t>::max())
    {
        return fail("x must be [B, num_tokens, C] with B and C below 2^31");
    }
    FloatType const type = inputDesc[kXIndex].type == DataType::kHALF ? FloatType::kHALF : FloatType::kFLOAT;
    return launchStatus(kernels::launchTofuMerge(inputs[kXIndex], inputs[kSizeIndex],
        static_cast<int32_t const*>(inputs[kOrderIndex]), static_cast<int32_t const*>(inputs[kDstSlotIndex]), type,
        static_cast<int32_t>(x.d[0]), numTokens(), static_cast<int32_t>(x.d[2]), r(), static_cast<MergeMode>(mode()),
        outputs[kXOutIndex], outputs[kSizeOutIndex], stream));
}

} // namespace plugin
} // namespace tofu_edge
