/*
 * Helpers both plugins use: logging through the logger TensorRT hands over with setLoggerFinder, reading
 * INT attributes from a PluginFieldCollection, the fields of getFieldNames / getFieldsToSerialize, a guard
 * that keeps exceptions from crossing noexcept methods, and small tensor-description tests. The shared
 * plugin and creator classes built on them are in tofuPluginBase.h.
 */
#pragma once

#include "tofuPluginSpecs.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <exception>
#include <vector>

static_assert(NV_TENSORRT_MAJOR >= 10, "IPluginV3 needs TensorRT >= 10 (JetPack 5/6.0: use the portable ONNX)");

namespace tofu_edge
{
namespace plugin
{

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Logs through TensorRT's logger when one is known, else errors and warnings go to stderr.
void log(nvinfer1::ILogger::Severity severity, char const* plugin, char const* message) noexcept;

inline void logError(char const* plugin, char const* message) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, plugin, message);
}

//! Runs body() and returns its result; an exception is logged as an error and turns into onError.
template <typename R, typename F>
R guarded(char const* plugin, R onError, F&& body) noexcept
{
    try
    {
        return body();
    }
    catch (std::exception const& e)
    {
        logError(plugin, e.what());
    }
    catch (...)
    {
        logError(plugin, "unknown exception");
    }
    return onError;
}

//! Reads the named INT attributes (int32, as TensorRT's ONNX parser passes them; int64 and int8/16 within
//! range are accepted too). Unknown fields are ignored. A missing, repeated or non-integer attribute is
//! logged and gives false.
bool readIntAttributes(nvinfer1::PluginFieldCollection const* fc, char const* plugin, char const* const* names,
    int32_t count, int32_t* values) noexcept;

//! A PluginFieldCollection of INT32 attributes: data null (getFieldNames) or pointing at `values`, which must
//! outlive the collection (getFieldsToSerialize).
class IntFields
{
public:
    IntFields(char const* const* names, int32_t count);
    IntFields(IntFields const& other);
    IntFields& operator=(IntFields const&) = delete;
    nvinfer1::PluginFieldCollection const* collection(int32_t const* values) noexcept;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

//! The extents of a DimsExprs that are build-time constants, -1 for the others (rank kept, at most MAX_DIMS).
nvinfer1::Dims knownDims(nvinfer1::DimsExprs const& exprs) noexcept;

//! Formats a message into a fixed buffer (no allocation) for the logger.
void formatMessage(char* buffer, size_t capacity, char const* format, ...) noexcept
    __attribute__((format(printf, 3, 4)));

//! True for linear tensors of the given type.
inline bool isLinear(nvinfer1::PluginTensorDesc const& desc, nvinfer1::DataType type) noexcept
{
    return desc.format == nvinfer1::TensorFormat::kLINEAR && desc.type == type;
}

inline bool isFloatType(nvinfer1::DataType type) noexcept
{
    return type == nvinfer1::DataType::kFLOAT || type == nvinfer1::DataType::kHALF;
}

} // namespace plugin
} // namespace tofu_edge
