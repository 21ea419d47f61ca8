#include "tofuMatchPlugin.h"
#include "tofuMatchKernel.h"
#include "tofuMatchMath.h"

#include <algorithm>
#include <limits>

namespace tofu_edge
{
namespace plugin
{
namespace
{
namespace match = spec::TofuMatch;
using nvinfer1::DataType;

constexpr int32_t kScoresIndex = 0;
constexpr int32_t kOrderIndex = 0;
constexpr int32_t kDstSlotIndex = 1;
static_assert(match::kNB_INPUTS == 1 && match::kNB_OUTPUTS == 2, "plugin_specs.json: TofuMatch's tensors changed");

//! The attributes as a message, for errors.
void logInvalid(char const* what, int32_t const* attributes, char const* detail) noexcept
{
    int32_t const numTokens = attributes[match::kATTR_INDEX_NUM_TOKENS];
    int32_t const numPrefix = attributes[match::kATTR_INDEX_NUM_PREFIX];
    int32_t const r = attributes[match::kATTR_INDEX_R];
    MatchLayout const layout = makeMatchLayout(numTokens, numPrefix, r);
    char message[512];
    formatMessage(message, sizeof(message), "%s (num_tokens = %d, num_prefix = %d, r = %d; |A| = %d, |B| = %d): %s",
        what, numTokens, numPrefix, r, layout.numA, layout.numB, detail);
    logError(match::kNAME, message);
}
} // namespace

TofuMatchPlugin::TofuMatchPlugin(int32_t const* attributes)
    : mFields(match::kATTRIBUTE_NAMES, match::kNB_ATTRIBUTES)
{
    std::copy(attributes, attributes + match::kNB_ATTRIBUTES, mAttributes);
}

int32_t TofuMatchPlugin::numTokens() const noexcept
{
    return mAttributes[match::kATTR_INDEX_NUM_TOKENS];
}

int32_t TofuMatchPlugin::numPrefix() const noexcept
{
    return mAttributes[match::kATTR_INDEX_NUM_PREFIX];
}

int32_t TofuMatchPlugin::r() const noexcept
{
    return mAttributes[match::kATTR_INDEX_R];
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
        logInvalid("input does not fit the attributes", mAttributes, detail);
        return -1;
    }
    return 0;
}

// IPluginV3

nvinfer1::IPluginCapability* TofuMatchPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* TofuMatchPlugin::clone() noexcept
{
    return guarded<nvinfer1::IPluginV3*>(match::kNAME, nullptr, [&] { return new TofuMatchPlugin(*this); });
}

// IPluginV3OneCore

char const* TofuMatchPlugin::getPluginName() const noexcept
{
    return match::kNAME;
}

char const* TofuMatchPlugin::getPluginVersion() const noexcept
{
    return match::kVERSION;
}

char const* TofuMatchPlugin::getPluginNamespace() const noexcept
{
    return spec::kNAMESPACE;
}

// IPluginV3OneBuild

int32_t TofuMatchPlugin::getNbOutputs() const noexcept
{
    return match::kNB_OUTPUTS;
}

int32_t TofuMatchPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != match::kNB_INPUTS || nbOutputs != match::kNB_OUTPUTS || !isFloatType(inputTypes[kScoresIndex]))
    {
        logError(match::kNAME, "expects one fp32 or fp16 input (scores) and two outputs");
        return -1;
    }
    outputTypes[kOrderIndex] = DataType::kINT32;
    outputTypes[kDstSlotIndex] = DataType::kINT32;
    return 0;
}

int32_t TofuMatchPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != match::kNB_INPUTS || nbOutputs != match::kNB_OUTPUTS)
    {
        logError(match::kNAME, "expects one input (scores) and two outputs");
        return -1;
    }
    nvinfer1::DimsExprs const& scores = inputs[kScoresIndex];
    nvinfer1::Dims known{};
    known.nbDims = scores.nbDims;
    for (int32_t d = 0; d < std::min(scores.nbDims, nvinfer1::Dims::MAX_DIMS); ++d)
    {
        known.d[d] = scores.d[d]->isConstant() ? scores.d[d]->getConstantValue() : -1;
    }
    if (checkScoreDims(known) != 0)
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
    if (inOut == nullptr || nbInputs != match::kNB_INPUTS || nbOutputs != match::kNB_OUTPUTS || pos < 0
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
    if (in == nullptr || out == nullptr || nbInputs != match::kNB_INPUTS || nbOutputs != match::kNB_OUTPUTS)
    {
        logError(match::kNAME, "expects one input (scores) and two outputs");
        return -1;
    }
    if (!isFloatType(in[kScoresIndex].desc.type) || out[kOrderIndex].desc.type != DataType::kINT32
        || out[kDstSlotIndex].desc.type != DataType::kINT32)
    {
        logError(match::kNAME, "scores must be fp32 or fp16, order and dst_slot int32");
        return -1;
    }
    return checkScoreDims(in[kScoresIndex].desc.dims);
}

size_t TofuMatchPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

// IPluginV3OneRuntime

int32_t TofuMatchPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept
{
    if (in == nullptr || nbInputs != match::kNB_INPUTS)
    {
        logError(match::kNAME, "expects one input (scores)");
        return -1;
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
        logError(match::kNAME, "batch too large");
        return -1;
    }
    FloatType const type
        = inputDesc[kScoresIndex].type == DataType::kHALF ? FloatType::kHALF : FloatType::kFLOAT;
    cudaError_t const status = kernels::launchTofuMatch(inputs[kScoresIndex], type, static_cast<int32_t>(dims.d[0]),
        numTokens(), numPrefix(), r(), static_cast<int32_t*>(outputs[kOrderIndex]),
        static_cast<int32_t*>(outputs[kDstSlotIndex]), stream);
    if (status != cudaSuccess)
    {
        logError(match::kNAME, cudaGetErrorString(status));
        return -1;
    }
    return 0;
}

nvinfer1::IPluginV3* TofuMatchPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

nvinfer1::PluginFieldCollection const* TofuMatchPlugin::getFieldsToSerialize() noexcept
{
    return mFields.collection(mAttributes);
}

// Creator

TofuMatchPluginCreator::TofuMatchPluginCreator()
    : mFieldNames(match::kATTRIBUTE_NAMES, match::kNB_ATTRIBUTES)
{
}

nvinfer1::IPluginV3* TofuMatchPluginCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    return guarded<nvinfer1::IPluginV3*>(match::kNAME, nullptr, [&]() -> nvinfer1::IPluginV3* {
        int32_t attributes[match::kNB_ATTRIBUTES] = {};
        if (!readIntAttributes(fc, match::kNAME, match::kATTRIBUTE_NAMES, match::kNB_ATTRIBUTES, attributes))
        {
            return nullptr;
        }
        char const* problem = checkMatchAttributes(attributes[match::kATTR_INDEX_NUM_TOKENS],
            attributes[match::kATTR_INDEX_NUM_PREFIX], attributes[match::kATTR_INDEX_R]);
        if (problem != nullptr)
        {
            logInvalid("invalid attributes", attributes, problem);
            return nullptr;
        }
        return new TofuMatchPlugin(attributes);
    });
}

nvinfer1::PluginFieldCollection const* TofuMatchPluginCreator::getFieldNames() noexcept
{
    return mFieldNames.collection(nullptr);
}

char const* TofuMatchPluginCreator::getPluginName() const noexcept
{
    return match::kNAME;
}

char const* TofuMatchPluginCreator::getPluginVersion() const noexcept
{
    return match::kVERSION;
}

char const* TofuMatchPluginCreator::getPluginNamespace() const noexcept
{
    return spec::kNAMESPACE;
}

} // namespace plugin
} // namespace tofu_edge
