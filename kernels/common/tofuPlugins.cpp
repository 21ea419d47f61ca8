/*
 * The library's entry points for TensorRT's dynamic plugin loading (IPluginRegistry::loadLibrary,
 * trt.get_plugin_registry().load_library, trtexec --dynamicPlugins, plugins_to_serialize). Nothing else is
 * exported (cmake/exports.map) and nothing needs libnvinfer: the plugins log through the ILogger that
 * TensorRT hands over with setLoggerFinder.
 */
#include "tofuMatchPlugin.h"
#include "tofuMergePlugin.h"

#define TOFU_EXPORT extern "C" __attribute__((visibility("default")))

TOFU_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    tofu_edge::plugin::setLoggerFinder(finder);
}

TOFU_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    nbCreators = 0;
    try
    {
        static tofu_edge::plugin::TofuMatchPluginCreator matchCreator;
        static tofu_edge::plugin::TofuMergePluginCreator mergeCreator;
        static nvinfer1::IPluginCreatorInterface* const creators[] = {&matchCreator, &mergeCreator};
        nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
        return creators;
    }
    catch (...)
    {
        tofu_edge::plugin::logError("tofu_edge", "cannot create the plugin creators");
        return nullptr;
    }
}
