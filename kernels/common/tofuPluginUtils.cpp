#include "tofuPluginUtils.h"

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <limits>

namespace tofu_edge
{
namespace plugin
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

char const* severityName(nvinfer1::ILogger::Severity severity) noexcept
{
    switch (severity)
    {
    case nvinfer1::ILogger::Severity::kINTERNAL_ERROR: return "INTERNAL_ERROR";
    case nvinfer1::ILogger::Severity::kERROR: return "ERROR";
    case nvinfer1::ILogger::Severity::kWARNING: return "WARNING";
    case nvinfer1::ILogger::Severity::kINFO: return "INFO";
    case nvinfer1::ILogger::Severity::kVERBOSE: return "VERBOSE";
    }
    return "?";
}

//! The field's value as int64 if it is one integer, else false.
bool integerValue(nvinfer1::PluginField const& field, int64_t& value) noexcept
{
    if (field.data == nullptr || field.length != 1)
    {
        return false;
    }
    switch (field.type)
    {
    case nvinfer1::PluginFieldType::kINT32: value = *static_cast<int32_t const*>(field.data); return true;
    case nvinfer1::PluginFieldType::kINT64: value = *static_cast<int64_t const*>(field.data); return true;
    case nvinfer1::PluginFieldType::kINT16: value = *static_cast<int16_t const*>(field.data); return true;
    case nvinfer1::PluginFieldType::kINT8: value = *static_cast<int8_t const*>(field.data); return true;
    default: return false;
    }
}
} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void log(nvinfer1::ILogger::Severity severity, char const* plugin, char const* message) noexcept
{
    char line[1024];
    formatMessage(line, sizeof(line), "%s: %s", plugin, message);
    nvinfer1::ILogger* logger = nullptr;
    if (nvinfer1::ILoggerFinder* finder = gLoggerFinder.load())
    {
        try
        {
            logger = finder->findLogger();
        }
        catch (...)
        {
            logger = nullptr;
        }
    }
    if (logger != nullptr)
    {
        logger->log(severity, line);
    }
    else if (severity <= nvinfer1::ILogger::Severity::kWARNING)
    {
        std::fprintf(stderr, "[tofu_edge] %s: %s\n", severityName(severity), line);
    }
}

bool readIntAttributes(nvinfer1::PluginFieldCollection const* fc, char const* plugin, char const* const* names,
    int32_t count, int32_t* values) noexcept
{
    char message[512];
    if (fc == nullptr || (fc->nbFields > 0 && fc->fields == nullptr))
    {
        logError(plugin, "no PluginFieldCollection");
        return false;
    }
    bool ok = true;
    for (int32_t a = 0; a < count; ++a)
    {
        int32_t seen = 0;
        for (int32_t f = 0; f < fc->nbFields; ++f)
        {
            nvinfer1::PluginField const& field = fc->fields[f];
            if (field.name == nullptr || std::strcmp(field.name, names[a]) != 0)
            {
                continue; // unknown fields are ignored
            }
            ++seen;
            int64_t value = 0;
            if (!integerValue(field, value) || value < std::numeric_limits<int32_t>::min()
                || value > std::numeric_limits<int32_t>::max())
            {
                formatMessage(message, sizeof(message),
                    "attribute '%s' must be one int32 (got type %d, length %d)", names[a],
                    static_cast<int32_t>(field.type), field.length);
                logError(plugin, message);
                ok = false;
                continue;
            }
            values[a] = static_cast<int32_t>(value);
        }
        if (seen != 1)
        {
            formatMessage(message, sizeof(message), seen == 0 ? "attribute '%s' is missing" : "attribute '%s' is repeated",
                names[a]);
            logError(plugin, message);
            ok = false;
        }
    }
    return ok;
}

IntFields::IntFields(char const* const* names, int32_t count)
{
    mFields.reserve(static_cast<size_t>(count));
    for (int32_t a = 0; a < count; ++a)
    {
        mFields.emplace_back(names[a], nullptr, nvinfer1::PluginFieldType::kINT32, 1);
    }
    mCollection.nbFields = count;
    mCollection.fields = mFields.data();
}

IntFields::IntFields(IntFields const& other)
    : mFields(other.mFields)
{
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data(); // our own copy, not the other object's
}

nvinfer1::PluginFieldCollection const* IntFields::collection(int32_t const* values) noexcept
{
    for (size_t a = 0; a < mFields.size(); ++a)
    {
        mFields[a].data = values == nullptr ? nullptr : values + a;
    }
    return &mCollection;
}

nvinfer1::Dims knownDims(nvinfer1::DimsExprs const& exprs) noexcept
{
    nvinfer1::Dims known{};
    known.nbDims = exprs.nbDims;
    for (int32_t d = 0; d < std::min(exprs.nbDims, nvinfer1::Dims::MAX_DIMS); ++d)
    {
        known.d[d] = exprs.d[d]->isConstant() ? exprs.d[d]->getConstantValue() : -1;
    }
    return known;
}

void formatMessage(char* buffer, size_t capacity, char const* format, ...) noexcept
{
    va_list args;
    va_start(args, format);
    std::vsnprintf(buffer, capacity, format, args);
    va_end(args);
}

} // namespace plugin
} // namespace tofu_edge
