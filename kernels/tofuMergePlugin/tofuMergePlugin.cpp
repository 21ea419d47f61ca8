#include "tofuMergePlugin.h"
#include "tofuMergeKernel.h"
#include "tofuMergeMath.h"

#include <algorithm>
#include <limits>

namespace tofu_edge
{
namespace plugin
{
namespace
{
namespace merge = spec::TofuMerge;
using nvinfer1::DataType;

constexpr int32_t kXIndex = 0;
constexpr int32_t kSizeIndex = 1;
constexpr int32_t kOrderIndex = 2;
constexpr int32_t kDstSlotIndex = 3;
constexpr int32_t kXOutIndex = 0;
constexpr int32_t kSizeOutIndex = 1;
static_assert(merge::kNB_INPUTS == 4 && merge::kNB_OUTPUTS == 2, "plugin_specs.json: TofuMerge's tensors changed");

void logInvalid(char const* what, int32_t const* attributes, char const* detail) noexcept
{
    char message[512];
    formatMessage(message, sizeof(message), "%s (num_tokens = %d, r = %d, mode = %d): %s", what,
        attributes[merge::kATTR_INDEX_NUM_TOKENS], attributes[merge::kATTR_INDEX_R],
        attributes[merge::kATTR_INDEX_MODE], detail);
    logError(merge::kNAME, message);
}

//! dims[axis] is unknown (-1) or equal to value.
bool fits(nvinfer1::Dims const& dims, int32_t axis, int64_t value) noexcept
{
    return dims.d[axis] < 0 || dims.d[axis] == value;
}
} // namespace

TofuMergePlugin::TofuMergePlugin(int32_t const* attributes)
    : mFields(merge::kATTRIBUTE_NAMES, merge::kNB_ATTRIBUTES)
{
    std::copy(attributes, attributes + merge::kNB_ATTRIBUTES, mAttributes);
}

int32_t TofuMergePlugin::numTokens() const noexcept
{
    return mAttributes[merge::kATTR_INDEX_NUM_TOKENS];
}

int32_t TofuMergePlugin::r() const noexcept
{
    return mAttributes[merge::kATTR_INDEX_R];
}

int32_t TofuMergePlugin::mode() const noexcept
{
    return mAttributes[merge::kATTR_INDEX_MODE];
}

int32_t TofuMergePlugin::checkInputDims(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept
{
    if (nbInputs != merge::kNB_INPUTS)
    {
        logError(merge::kNAME, "expects four inputs (x, size, order, dst_slot)");
        return -1;
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
        logInvalid("inputs do not fit the attributes", mAttributes,
            "expects x [B, num_tokens, C], size [B, num_tokens, 1], order [B, num_tokens], dst_slot [B, r]");
        return -1;
    }
    return 0;
}

// IPluginV3

nvinfer1::IPluginCapability* TofuMergePlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* TofuMergePlugin::clone() noexcept
{
    return guarded<nvinfer1::IPluginV3*>(merge::kNAME, nullptr, [&] { return new TofuMergePlugin(*this); });
}

// IPluginV3OneCore

char const* TofuMergePlugin::getPluginName() const noexcept
{
    return merge::kNAME;
}

char const* TofuMergePlugin::getPluginVersion() const noexcept
{
    return merge::kVERSION;
}

char const* TofuMergePlugin::getPluginNamespace() const noexcept
{
    return spec::kNAMESPACE;
}

// IPluginV3OneBuild

int32_t TofuMergePlugin::getNbOutputs() const noexcept
{
    return merge::kNB_OUTPUTS;
}

int32_t TofuMergePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != merge::kNB_INPUTS || nbOutputs != merge::kNB_OUTPUTS || !isFloatType(inputTypes[kXIndex])
        || inputTypes[kSizeIndex] != inputTypes[kXIndex])
    {
        logError(merge::kNAME, "expects x and size of one type, fp32 or fp16, and two outputs");
        return -1;
    }
    outputTypes[kXOutIndex] = inputTypes[kXIndex];
    outputTypes[kSizeOutIndex] = inputTypes[kXIndex];
    return 0;
}

int32_t TofuMergePlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != merge::kNB_INPUTS || nbOutputs != merge::kNB_OUTPUTS)
    {
        logError(merge::kNAME, "expects four inputs (x, size, order, dst_slot) and two outputs");
        return -1;
    }
    nvinfer1::Dims known[merge::kNB_INPUTS]{};
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        known[i].nbDims = inputs[i].nbDims;
        for (int32_t d = 0; d < std::min(inputs[i].nbDims, nvinfer1::Dims::MAX_DIMS); ++d)
        {
            known[i].d[d] = inputs[i].d[d]->isConstant() ? inputs[i].d[d]->getConstantValue() : -1;
        }
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
    if (inOut == nullptr || nbInputs != merge::kNB_INPUTS || nbOutputs != merge::kNB_OUTPUTS || pos < 0
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
    if (in == nullptr || out == nullptr || nbInputs != merge::kNB_INPUTS || nbOutputs != merge::kNB_OUTPUTS)
    {
        logError(merge::kNAME, "expects four inputs (x, size, order, dst_slot) and two outputs");
        return -1;
    }
    DataType const type = in[kXIndex].desc.type;
    if (!isFloatType(type) || in[kSizeIndex].desc.type != type || in[kOrderIndex].desc.type != DataType::kINT32
        || in[kDstSlotIndex].desc.type != DataType::kINT32 || out[kXOutIndex].desc.type != type
        || out[kSizeOutIndex].desc.type != type)
    {
        logError(merge::kNAME, "x, size, x_out and size_out must share one type (fp32 or fp16), indices int32");
        return -1;
    }
    nvinfer1::Dims dims[merge::kNB_INPUTS];
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        dims[i] = in[i].desc.dims;
    }
    return checkInputDims(dims, nbInputs);
}

size_t TofuMergePlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

// IPluginV3OneRuntime

int32_t TofuMergePlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept
{
    if (in == nullptr || nbInputs != merge::kNB_INPUTS)
    {
        logError(merge::kNAME, "expects four inputs (x, size, order, dst_slot)");
        return -1;
    }
    nvinfer1::Dims dims[merge::kNB_INPUTS];
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
        logError(merge::kNAME, "x must be [B, num_tokens, C] with B and C below 2^31");
        return -1;
    }
    FloatType const type
        = inputDesc[kXIndex].type == DataType::kHALF ? FloatType::kHALF : FloatType::kFLOAT;
    cudaError_t const status = kernels::launchTofuMerge(inputs[kXIndex], inputs[kSizeIndex],
        static_cast<int32_t const*>(inputs[kOrderIndex]), static_cast<int32_t const*>(inputs[kDstSlotIndex]), type,
        static_cast<int32_t>(x.d[0]), numTokens(), static_cast<int32_t>(x.d[2]), r(), static_cast<MergeMode>(mode()),
        outputs[kXOutIndex], outputs[kSizeOutIndex], stream);
    if (status != cudaSuccess)
    {
        logError(merge::kNAME, cudaGetErrorString(status));
        return -1;
    }
    return 0;
}

nvinfer1::IPluginV3* TofuMergePlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

nvinfer1::PluginFieldCollection const* TofuMergePlugin::getFieldsToSerialize() noexcept
{
    return mFields.collection(mAttributes);
}

// Creator

TofuMergePluginCreator::TofuMergePluginCreator()
    : mFieldNames(merge::kATTRIBUTE_NAMES, merge::kNB_ATTRIBUTES)
{
}

nvinfer1::IPluginV3* TofuMergePluginCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    return guarded<nvinfer1::IPluginV3*>(merge::kNAME, nullptr, [&]() -> nvinfer1::IPluginV3* {
        int32_t attributes[merge::kNB_ATTRIBUTES] = {};
        if (!readIntAttributes(fc, merge::kNAME, merge::kATTRIBUTE_NAMES, merge::kNB_ATTRIBUTES, attributes))
        {
            return nullptr;
        }
        char const* problem = checkMergeAttributes(attributes[merge::kATTR_INDEX_NUM_TOKENS],
            attributes[merge::kATTR_INDEX_R], attributes[merge::kATTR_INDEX_MODE]);
        if (problem != nullptr)
        {
            logInvalid("invalid attributes", attributes, problem);
            return nullptr;
        }
        return new TofuMergePlugin(attributes);
    });
}

nvinfer1::PluginFieldCollection const* TofuMergePluginCreator::getFieldNames() noexcept
{
    return mFieldNames.collection(nullptr);
}

char const* TofuMergePluginCreator::getPluginName() const noexcept
{
    return merge::kNAME;
}

char const* TofuMergePluginCreator::getPluginVersion() const noexcept
{
    return merge::kVERSION;
}

char const* TofuMergePluginCreator::getPluginNamespace() const noexcept
{
    return spec::kNAMESPACE;
}

} // namespace plugin
} // namespace tofu_edge
