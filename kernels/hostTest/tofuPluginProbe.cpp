/*
 * libtofu_edge_host, part 2: drives the plugin objects of libtofu_edge_plugins.so without a GPU and without
 * TensorRT, through the same entry points TensorRT uses: dlopen, setLoggerFinder, getCreators, createPlugin,
 * the build/runtime capability interfaces (getOutputShapes through FakeExprBuilder), getFieldsToSerialize.
 * Results are written as JSON into the caller's buffer; functions return 0 on success.
 *
 * Attributes are passed as parallel arrays: names, values (int64) and PluginFieldType codes; each becomes one
 * field of that type with length 1 (so tests can also send wrong types).
 */
#include "fakeExprBuilder.h"

#include <NvInferRuntime.h>

#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <mutex>
#include <string>
#include <vector>

#define TOFU_HOST_API extern "C" __attribute__((visibility("default")))

namespace tofu_edge
{
namespace testing
{
namespace
{
using GetCreators = nvinfer1::IPluginCreatorInterface* const* (*) (int32_t&);
using SetLoggerFinder = void (*)(nvinfer1::ILoggerFinder*);

class CapturingLogger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override
    {
        std::lock_guard<std::mutex> lock(mMutex);
        mEntries.emplace_back(static_cast<int32_t>(severity), msg == nullptr ? "" : msg);
    }
    std::vector<std::pair<int32_t, std::string>> take()
    {
        std::lock_guard<std::mutex> lock(mMutex);
        std::vector<std::pair<int32_t, std::string>> entries;
        entries.swap(mEntries);
        return entries;
    }

private:
    std::mutex mMutex;
    std::vector<std::pair<int32_t, std::string>> mEntries;
};

class CapturingLoggerFinder : public nvinfer1::ILoggerFinder
{
public:
    nvinfer1::ILogger* findLogger() override
    {
        return &mLogger;
    }
    CapturingLogger& logger()
    {
        return mLogger;
    }
    ~CapturingLoggerFinder() override = default;

private:
    CapturingLogger mLogger;
};

CapturingLoggerFinder gLoggerFinder;
GetCreators gGetCreators = nullptr;

//! Minimal JSON writer.
class Json
{
public:
    Json& raw(std::string const& text)
    {
        mText += text;
        return *this;
    }
    Json& str(char const* text)
    {
        if (text == nullptr)
        {
            return raw("null");
        }
        mText += '"';
        for (char const* p = text; *p != '\0'; ++p)
        {
            unsigned char const c = static_cast<unsigned char>(*p);
            if (c == '"' || c == '\\')
            {
                mText += '\\';
                mText += static_cast<char>(c);
            }
            else if (c < 0x20)
            {
                char escaped[8];
                std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
                mText += escaped;
            }
            else
            {
                mText += static_cast<char>(c);
            }
        }
        mText += '"';
        return *this;
    }
    Json& key(char const* name)
    {
        separate();
        str(name).raw(":");
        mFresh = true;
        return *this;
    }
    Json& num(int64_t value)
    {
        separate();
        return raw(std::to_string(value));
    }
    Json& boolean(bool value)
    {
        separate();
        return raw(value ? "true" : "false");
    }
    Json& null()
    {
        separate();
        return raw("null");
    }
    Json& text(char const* value)
    {
        separate();
        return str(value);
    }
    Json& open(char bracket)
    {
        separate();
        mText += bracket;
        mFresh = true;
        return *this;
    }
    Json& close(char bracket)
    {
        mText += bracket;
        mFresh = false;
        return *this;
    }
    //! Copies into the caller's buffer; 0, or -2 if it does not fit.
    int32_t write(char* buffer, int32_t capacity) const
    {
        if (buffer == nullptr || capacity <= 0 || mText.size() + 1 > static_cast<size_t>(capacity))
        {
            return -2;
        }
        std::memcpy(buffer, mText.c_str(), mText.size() + 1);
        return 0;
    }

private:
    void separate()
    {
        if (!mFresh && !mText.empty())
        {
            mText += ',';
        }
        mFresh = false;
    }
    std::string mText;
    bool mFresh{true};
};

//! Fields built from the caller's arrays, with typed storage.
class Fields
{
public:
    Fields(char const* const* names, int64_t const* values, int32_t const* types, int32_t count)
        : mStorage(static_cast<size_t>(count))
    {
        for (int32_t i = 0; i < count; ++i)
        {
            auto const type = static_cast<nvinfer1::PluginFieldType>(types[i]);
            void* data = &mStorage[i];
            switch (type)
            {
            case nvinfer1::PluginFieldType::kINT64: mStorage[i].i64 = values[i]; break;
            case nvinfer1::PluginFieldType::kINT16: mStorage[i].i16 = static_cast<int16_t>(values[i]); break;
            case nvinfer1::PluginFieldType::kINT8: mStorage[i].i8 = static_cast<int8_t>(values[i]); break;
            case nvinfer1::PluginFieldType::kFLOAT32: mStorage[i].f32 = static_cast<float>(values[i]); break;
            case nvinfer1::PluginFieldType::kFLOAT64: mStorage[i].f64 = static_cast<double>(values[i]); break;
            default: mStorage[i].i32 = static_cast<int32_t>(values[i]); break;
            }
            mFields.emplace_back(names[i], data, type, 1);
        }
        mCollection.nbFields = count;
        mCollection.fields = mFields.data();
    }
    nvinfer1::PluginFieldCollection const* collection() const
    {
        return &mCollection;
    }

private:
    union Value
    {
        int64_t i64;
        int32_t i32;
        int16_t i16;
        int8_t i8;
        float f32;
        double f64;
    };
    std::vector<Value> mStorage;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

nvinfer1::IPluginCreatorV3One* findCreator(char const* name)
{
    if (gGetCreators == nullptr || name == nullptr)
    {
        return nullptr;
    }
    int32_t count = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = gGetCreators(count);
    for (int32_t i = 0; creators != nullptr && i < count; ++i)
    {
        nvinfer1::InterfaceInfo const info = creators[i]->getInterfaceInfo();
        if (std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") != 0)
        {
            continue;
        }
        auto* creator = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(creator->getPluginName(), name) == 0)
        {
            return creator;
        }
    }
    return nullptr;
}

//! A plugin made by its creator from the caller's attributes, deleted on scope exit.
struct Plugin
{
    Plugin(char const* name, char const* const* names, int64_t const* values, int32_t const* types, int32_t count,
        nvinfer1::TensorRTPhase phase = nvinfer1::TensorRTPhase::kBUILD)
    {
        creator = findCreator(name);
        if (creator != nullptr)
        {
            Fields const fields(names, values, types, count);
            plugin = creator->createPlugin(name, fields.collection(), phase);
        }
    }
    ~Plugin()
    {
        delete plugin;
    }
    Plugin(Plugin const&) = delete;
    Plugin& operator=(Plugin const&) = delete;

    nvinfer1::IPluginV3OneBuild* build() const
    {
        return static_cast<nvinfer1::IPluginV3OneBuild*>(
            plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
    }
    nvinfer1::IPluginV3OneRuntime* runtime() const
    {
        return static_cast<nvinfer1::IPluginV3OneRuntime*>(
            plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
    }
    nvinfer1::IPluginV3OneCore* core() const
    {
        return static_cast<nvinfer1::IPluginV3OneCore*>(
            plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kCORE));
    }

    nvinfer1::IPluginCreatorV3One* creator{};
    nvinfer1::IPluginV3* plugin{};
};

void writeInfo(Json& json, nvinfer1::InterfaceInfo const& info)
{
    json.open('{').key("kind").text(info.kind).key("major").num(info.major).key("minor").num(info.minor).close('}');
}

void writeFields(Json& json, nvinfer1::PluginFieldCollection const* fc)
{
    json.open('[');
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        nvinfer1::PluginField const& field = fc->fields[i];
        json.open('{').key("name").text(field.name).key("type").num(static_cast<int32_t>(field.type));
        json.key("length").num(field.length).key("value");
        if (field.data != nullptr && field.type == nvinfer1::PluginFieldType::kINT32 && field.length == 1)
        {
            json.num(*static_cast<int32_t const*>(field.data));
        }
        else
        {
            json.null(); // not one int32
        }
        json.close('}');
    }
    json.close(']');
}

//! Serialized fields of a plugin (an owned deep copy of the collection).
struct FieldCopy
{
    explicit FieldCopy(nvinfer1::PluginFieldCollection const* fc)
    {
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            names.emplace_back(fc->fields[i].name);
            values.push_back(fc->fields[i].data != nullptr ? *static_cast<int32_t const*>(fc->fields[i].data) : 0);
            types.push_back(fc->fields[i].type);
        }
        for (size_t i = 0; i < names.size(); ++i)
        {
            fields.emplace_back(names[i].c_str(), &values[i], types[i], 1);
        }
        collection.nbFields = static_cast<int32_t>(fields.size());
        collection.fields = fields.data();
    }
    std::vector<std::string> names;
    std::vector<int32_t> values;
    std::vector<nvinfer1::PluginFieldType> types;
    std::vector<nvinfer1::PluginField> fields;
    nvinfer1::PluginFieldCollection collection{};
};

void writeCore(Json& json, nvinfer1::IPluginV3OneCore* core)
{
    json.open('{').key("name").text(core->getPluginName()).key("version").text(core->getPluginVersion());
    json.key("namespace").text(core->getPluginNamespace()).close('}');
}

nvinfer1::Dims readDims(int64_t const*& dims, int32_t rank)
{
    nvinfer1::Dims result{};
    result.nbDims = rank;
    for (int32_t d = 0; d < rank && d < nvinfer1::Dims::MAX_DIMS; ++d)
    {
        result.d[d] = *dims++;
    }
    return result;
}
} // namespace
} // namespace testing
} // namespace tofu_edge

using namespace tofu_edge::testing;

//! dlopens the plugin library and installs a logger that captures its messages.
TOFU_HOST_API int32_t tofu_probe_load(char const* path, char* message, int32_t capacity)
{
    void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr)
    {
        std::snprintf(message, static_cast<size_t>(capacity), "dlopen: %s", dlerror());
        return 1;
    }
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(handle, "getCreators"));
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(handle, "setLoggerFinder"));
    if (getCreators == nullptr || setLoggerFinder == nullptr)
    {
        std::snprintf(message, static_cast<size_t>(capacity), "getCreators or setLoggerFinder not exported");
        return 1;
    }
    setLoggerFinder(&gLoggerFinder);
    gGetCreators = getCreators;
    std::snprintf(message, static_cast<size_t>(capacity), "ok");
    return 0;
}

//! [{"interface", "name", "version", "namespace", "fields": [{"name", "type", "length", "value"}]}]
TOFU_HOST_API int32_t tofu_probe_creators(char* buffer, int32_t capacity)
{
    if (gGetCreators == nullptr)
    {
        return 1;
    }
    int32_t count = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = gGetCreators(count);
    Json json;
    json.open('[');
    for (int32_t i = 0; creators != nullptr && i < count; ++i)
    {
        json.open('{').key("interface");
        nvinfer1::InterfaceInfo const info = creators[i]->getInterfaceInfo();
        writeInfo(json, info);
        if (std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0)
        {
            auto* creator = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[i]);
            json.key("name").text(creator->getPluginName()).key("version").text(creator->getPluginVersion());
            json.key("namespace").text(creator->getPluginNamespace()).key("fields");
            writeFields(json, creator->getFieldNames());
        }
        json.close('}');
    }
    json.close(']');
    return json.write(buffer, capacity);
}

//! Creates a plugin; reports its interfaces, core strings, serialized fields, and the fields of the plugins
//! re-created from them (runtime phase), cloned and attached to a context. 1 if createPlugin gave nullptr.
TOFU_HOST_API int32_t tofu_probe_create(char const* name, char const* const* names, int64_t const* values,
    int32_t const* types, int32_t count, int32_t phase, char* buffer, int32_t capacity)
{
    Plugin const made(name, names, values, types, count, static_cast<nvinfer1::TensorRTPhase>(phase));
    Json json;
    json.open('{').key("created").boolean(made.plugin != nullptr);
    if (made.plugin == nullptr)
    {
        json.close('}');
        int32_t const status = json.write(buffer, capacity);
        return status != 0 ? status : 1;
    }
    json.key("interface");
    writeInfo(json, made.plugin->getInterfaceInfo());
    json.key("capabilities").open('{');
    json.key("core");
    writeInfo(json, made.core()->getInterfaceInfo());
    json.key("build");
    writeInfo(json, made.build()->getInterfaceInfo());
    json.key("runtime");
    writeInfo(json, made.runtime()->getInterfaceInfo());
    json.close('}');
    json.key("core");
    writeCore(json, made.core());
    json.key("nb_outputs").num(made.build()->getNbOutputs());
    json.key("workspace").num(static_cast<int64_t>(made.build()->getWorkspaceSize(nullptr, 0, nullptr, 0)));

    FieldCopy const serialized(made.runtime()->getFieldsToSerialize());
    json.key("fields");
    writeFields(json, &serialized.collection);

    nvinfer1::IPluginV3* again
        = made.creator->createPlugin(name, &serialized.collection, nvinfer1::TensorRTPhase::kRUNTIME);
    json.key("roundtrip");
    if (again != nullptr)
    {
        auto* runtime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
            again->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
        writeFields(json, runtime->getFieldsToSerialize());
        delete again;
    }
    else
    {
        json.null();
    }

    nvinfer1::IPluginV3* clone = made.plugin->clone();
    nvinfer1::IPluginV3* attached = made.runtime()->attachToContext(nullptr);
    json.key("clone");
    if (clone != nullptr)
    {
        auto* runtime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
            clone->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
        writeFields(json, runtime->getFieldsToSerialize());
        json.key("clone_core");
        writeCore(json, static_cast<nvinfer1::IPluginV3OneCore*>(
                            clone->getCapabilityInterface(nvinfer1::PluginCapabilityType::kCORE)));
        delete clone;
    }
    else
    {
        json.null();
    }
    json.key("attached");
    if (attached != nullptr)
    {
        auto* runtime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
            attached->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
        writeFields(json, runtime->getFieldsToSerialize());
        delete attached;
    }
    else
    {
        json.null();
    }
    json.close('}');
    return json.write(buffer, capacity);
}

//! getOutputShapes with constant-folded dimensions. Input dims are flattened (ranks give the split); -1 is a
//! symbolic extent. Outputs: {"status", "outputs": [[n | "s<k>"]], "misuse"} where "s<k>" is the k-th symbol
//! (inputs' symbols are numbered first, in order).
TOFU_HOST_API int32_t tofu_probe_output_shapes(char const* name, char const* const* names, int64_t const* values,
    int32_t const* types, int32_t count, int64_t const* dims, int32_t const* ranks, int32_t nbInputs, char* buffer,
    int32_t capacity)
{
    Plugin const made(name, names, values, types, count);
    if (made.plugin == nullptr)
    {
        return 1;
    }
    FakeExprBuilder builder;
    std::vector<nvinfer1::DimsExprs> inputs(static_cast<size_t>(nbInputs));
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        inputs[i].nbDims = ranks[i];
        for (int32_t d = 0; d < ranks[i]; ++d)
        {
            int64_t const extent = *dims++;
            inputs[i].d[d] = builder.make(extent >= 0, extent);
        }
    }
    int32_t const nbOutputs = made.build()->getNbOutputs();
    std::vector<nvinfer1::DimsExprs> outputs(static_cast<size_t>(nbOutputs));
    int32_t const status
        = made.build()->getOutputShapes(inputs.data(), nbInputs, nullptr, 0, outputs.data(), nbOutputs, builder);
    Json json;
    json.open('{').key("status").num(status).key("misuse").boolean(builder.misused()).key("outputs").open('[');
    for (int32_t o = 0; status == 0 && o < nbOutputs; ++o)
    {
        json.open('[');
        for (int32_t d = 0; d < outputs[o].nbDims; ++d)
        {
            auto const* expr = static_cast<FakeDimExpr const*>(outputs[o].d[d]);
            if (expr == nullptr)
            {
                json.null();
            }
            else if (expr->isConstant())
            {
                json.num(expr->getConstantValue());
            }
            else
            {
                json.text(("s" + std::to_string(expr->symbol())).c_str());
            }
        }
        json.close(']');
    }
    json.close(']').close('}');
    return json.write(buffer, capacity);
}

//! supportsFormatCombination for position pos: 1 yes, 0 no, -1 no plugin. dataTypes/formats: DataType and
//! TensorFormat codes of all nbInputs + nbOutputs tensors.
TOFU_HOST_API int32_t tofu_probe_supports_format(char const* name, char const* const* names, int64_t const* values,
    int32_t const* types, int32_t count, int32_t pos, int32_t const* dataTypes, int32_t const* formats,
    int32_t nbInputs, int32_t nbOutputs)
{
    Plugin const made(name, names, values, types, count);
    if (made.plugin == nullptr)
    {
        return -1;
    }
    std::vector<nvinfer1::DynamicPluginTensorDesc> inOut(static_cast<size_t>(nbInputs + nbOutputs));
    for (int32_t i = 0; i < nbInputs + nbOutputs; ++i)
    {
        inOut[i].desc.type = static_cast<nvinfer1::DataType>(dataTypes[i]);
        inOut[i].desc.format = static_cast<nvinfer1::TensorFormat>(formats[i]);
        inOut[i].desc.scale = -1.F;
    }
    return made.build()->supportsFormatCombination(pos, inOut.data(), nbInputs, nbOutputs) ? 1 : 0;
}

//! getOutputDataTypes: the plugin's status (0 ok), writing outTypes; -100 if no plugin.
TOFU_HOST_API int32_t tofu_probe_output_types(char const* name, char const* const* names, int64_t const* values,
    int32_t const* types, int32_t count, int32_t const* inTypes, int32_t nbInputs, int32_t* outTypes,
    int32_t nbOutputs)
{
    Plugin const made(name, names, values, types, count);
    if (made.plugin == nullptr)
    {
        return -100;
    }
    std::vector<nvinfer1::DataType> in(static_cast<size_t>(nbInputs));
    std::vector<nvinfer1::DataType> out(static_cast<size_t>(nbOutputs), nvinfer1::DataType::kBOOL);
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        in[i] = static_cast<nvinfer1::DataType>(inTypes[i]);
    }
    int32_t const status = made.build()->getOutputDataTypes(out.data(), nbOutputs, in.data(), nbInputs);
    for (int32_t o = 0; o < nbOutputs; ++o)
    {
        outTypes[o] = static_cast<int32_t>(out[o]);
    }
    return status;
}

//! configurePlugin (stage 0) or onShapeChange (stage 1) with the given dims (flattened, -1 unknown) and types of
//! all nbInputs + nbOutputs tensors (linear). The plugin's status; -100 if no plugin.
TOFU_HOST_API int32_t tofu_probe_configure(char const* name, char const* const* names, int64_t const* values,
    int32_t const* types, int32_t count, int32_t stage, int64_t const* dims, int32_t const* ranks,
    int32_t const* dataTypes, int32_t nbInputs, int32_t nbOutputs)
{
    Plugin const made(name, names, values, types, count);
    if (made.plugin == nullptr)
    {
        return -100;
    }
    std::vector<nvinfer1::DynamicPluginTensorDesc> desc(static_cast<size_t>(nbInputs + nbOutputs));
    std::vector<nvinfer1::PluginTensorDesc> plain(desc.size());
    for (int32_t i = 0; i < nbInputs + nbOutputs; ++i)
    {
        nvinfer1::Dims const d = readDims(dims, ranks[i]);
        desc[i].desc.dims = d;
        desc[i].desc.type = static_cast<nvinfer1::DataType>(dataTypes[i]);
        desc[i].desc.format = nvinfer1::TensorFormat::kLINEAR;
        desc[i].desc.scale = -1.F;
        desc[i].min = d;
        desc[i].max = d;
        desc[i].opt = d;
        plain[i] = desc[i].desc;
    }
    if (stage == 0)
    {
        return made.build()->configurePlugin(desc.data(), nbInputs, desc.data() + nbInputs, nbOutputs);
    }
    return made.runtime()->onShapeChange(plain.data(), nbInputs, plain.data() + nbInputs, nbOutputs);
}

//! Messages logged by the plugins since the last call: [{"severity", "message"}], then cleared.
TOFU_HOST_API int32_t tofu_probe_take_log(char* buffer, int32_t capacity)
{
    Json json;
    json.open('[');
    for (auto const& [severity, message] : gLoggerFinder.logger().take())
    {
        json.open('{').key("severity").num(severity).key("message").text(message.c_str()).close('}');
    }
    json.close(']');
    return json.write(buffer, capacity);
}
