#include "tofuMatchPlugin.h"
#include "tofuMatchKernel.h"
#include "tofuMatchMath.h"

#include <limits>

namespace tofu_edge
{
namespace plugin
{
namespace
{
using Spec = spec::TofuMatch;
using nvinfer1::DataType;

constexpr int32_t kScoresIndex = 0;
constexpr int32_t kOrderIndex = 0;
constexpr int32_t kDstSlotIndex = 1;
static_assert(Spec::kNB_INPUTS == 1 && Spec::kNB_OUTPUTS == 2, "plugin_specs.json: TofuMatch's tensors changed");
} // namespace

char const* TofuMatchPlugin::checkAttributes(int32_t const* attributes) noexcept
{
    return checkMatchAttributes(attributes[Spec::kATTR_INDEX_NUM_TOKENS], attributes[Spec::kATTR_INDEX_NUM_PREFIX],
        attributes[Spec::kATTR_INDEX_R]);
}

void TofuMatchPlugin::describeAttributes(int32_t const* attributes, char* buffer, size_t capacity) noexcept
{
    int32_t const numTokens = attributes[Spec::kATTR_INDEX_NUM_TOKENS];
    int32_t const numPrefix = attributes[Spec::kATTR_INDEX_NUM_PREFIX];
    int32_t const r = attributes[Spec::kATTR_INDEX_R];
    MatchLayout const layout = makeMatchLayout(numTokens, numPrefix, r);
    formatMessage(buffer, capacity, "num_tokens = %d, num_prefix = %d, r = %d; |A| = %d, |B| = %d", numTokens,
        numPrefix, r, layout.numA, layout.numB);
}

int32_t TofuMatchPlugin::checkScoreDims(nvinfer1::Dims const& dims) const noexcept
{
    MatchLayout const layout = makeMatchLayout(numTokens(), numPrefix(), r());
    if (dims.nbDims != 3 || (dims.d[1] >= 0 && dims.d[1] != layout.numA) || (dims.d[2] >= 0 && dims.d[2] != layout.numB))
    {
        char detail[256];
        formatMessage(detail, sizeof(detail), "scores must be [B, |A| = %d, |B| = %d], got rank %d [%lld, %lld, %lld]",
            layout.numA, layout.numB, dims.nbDims, static_cast<long long>(dims.nbDims > 0 ? dims.d[0] : 0),
            static_cast<long long>(dims.nbDims > 1 ? dims.d[1] : 0),
            static_cast<long long>(dims.nbDims > 2 ? dims.d[2] : 0));
        logInvalid("input does not fit the attributes", detail);
        return -1;
    }
    return 0;
}

// IPluginV3OneBuild

int32_t TofuMatchPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != Spec::kNB_INPUTS || nbOutputs != Spec::kNB_OUTPUTS || !isFloatType(inputTypes[kScoresIndex]))
    {
        return fail("expects one fp32 or fp16 input (scores) and two outputs");
    }
    outputTypes[kOrderIndex] = DataType::kINT32;
    outputTypes[kDstSlotIndex] = DataType::kINT32;
    return 0;
}

int32_t TofuMatchPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != Spec::kNB_INPUTS || nbOutputs != Spec::kNB_OUTPUTS)
    {
        return fail("expects one input (scores) and two outputs");
    }
    nvinfer1::DimsExprs const& scores = inputs[kScoresIndex];
    if (checkScoreDims(knownDims(scores)) != 0)
    {
        return -1;
    }
    // Static token counts from the attributes; the batch axis passes through (static or not).
    outputs[kOrderIndex].nbDims = 2;
    outputs[kOrderIndex].d[0] = scores.d[0];
    outputs[kOrderIndex].d[1] = exprBuilder.constant(numTokens());
    outputs[kDstSlotIndex].nbDims = 2;
    outputs[kDstSlotIndex].d[0] = scores.d[0];
    outputs[kDstSlotIndex].d[1] = exprBuilder.constant(r());
    return 0;
}

bool TofuMatchPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != Spec::kNB_INPUTS || nbOutputs != Spec::kNB_OUTPUTS || pos < 0
        || pos >= nbInputs + nbOutputs)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    if (pos == kScoresIndex)
    {
        return desc.format == nvinfer1::TensorFormat::kLINEAR && isFloatType(desc.type);
    }
    return isLinear(desc, DataType::kINT32); // order, dst_slot
}

int32_t TofuMatchPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != Spec::kNB_INPUTS || nbOutputs != Spec::kNB_OUTPUTS)
    {
        return fail("expects one input (scores) and two outputs");
    }
    if (!isFloatType(in[kScoresIndex].desc.type) || out[kOrderIndex].desc.type != DataType::kINT32
        || out[kDstSlotIndex].desc.type != DataType::kINT32)
    {
        return fail("scores must be fp32 or fp16, order and dst_slot int32");
    }
    return checkScoreDims(in[kScoresIndex].desc.dims);
}

// IPluginV3OneRuntime

int32_t TofuMatchPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept
{
    if (in == nullptr || nbInputs != Spec::kNB_INPUTS)
    {
        return fail("expects one input (scores)");
    }
    return checkScoreDims(in[kScoresIndex].dims);
}

int32_t TofuMatchPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& dims = inputDesc[kScoresIndex].dims;
    if (checkScoreDims(dims) != 0)
    {
        return -1;
    }
    if (dims.d[0] > std::numeric_limits<int32_t>::max())
    {
        return fail("batch too large");
    }
    FloatType const type = inputDesc[kScoresIndex].type == DataType::kHALF ? FloatType::kHALF : FloatType::kFLOAT;
    return launchStatus(kernels::launchTofuMatch(inputs[kScoresIndex], type, static_cast<int32_t>(dims.d[0]),
        numTokens(), numPrefix(), r(), static_cast<int32_t*>(outputs[kOrderIndex]),
        static_cast<int32_t*>(outputs[kDstSlotIndex]), stream));
}

} // namespace plugin
} // namespace tofu_edge
