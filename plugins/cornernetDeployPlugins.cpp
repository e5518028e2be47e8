/*
 * Entry points of libcornernet_deploy_plugins.so.
 *
 * Dynamic registration (default, recommended): TensorRT's IPluginRegistry::loadLibrary(path) - also
 * `trtexec --dynamicPlugins=path` and Python `trt.get_plugin_registry().load_library(path)` - dlopens the
 * library, calls setLoggerFinder() and getCreators(), and registers every creator under its own namespace
 * ("cornernet_deploy"). Nothing here calls into libnvinfer, so the library does not link it.
 *
 * Static registration (CMake option CORNERNET_DEPLOY_STATIC_REGISTRATION, for `trtexec --staticPlugins`,
 * polygraphy's LoadPlugins or a plain dlopen): registers the creator when the library is loaded, through
 * getPluginRegistry() - which needs libnvinfer at link time. It registers under "cornernet_deploy"
 * explicitly: TensorRT's REGISTER_TENSORRT_PLUGIN registers under "" and a V3 creator with a non-empty
 * namespace is then not found at all. Do not also loadLibrary() a statically registering build.
 */
#include "common/pluginLogging.h"
#include "cornerPoolPlugin/cornerPoolPlugin.h"

#include <NvInferRuntime.h>

#define CORNERNET_DEPLOY_EXPORT extern "C" __attribute__((visibility("default")))

namespace
{

cornernet_deploy::plugin::CornerPoolPluginCreator& cornerPoolCreator()
{
    static cornernet_deploy::plugin::CornerPoolPluginCreator creator;
    return creator;
}

#if defined(CORNERNET_DEPLOY_STATIC_REGISTRATION)
struct StaticRegistration
{
    StaticRegistration()
    {
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry == nullptr || !registry->registerCreator(cornerPoolCreator(), cornernet_deploy::plugin::kCornerPoolNamespace))
        {
            cornernet_deploy::plugin::reportError(nullptr, nvinfer1::ErrorCode::kINTERNAL_ERROR,
                "CornerPool: static registration with the TensorRT plugin registry failed");
        }
    }
};
StaticRegistration const gStaticRegistration;
#endif

} // namespace

CORNERNET_DEPLOY_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&cornerPoolCreator()};
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

CORNERNET_DEPLOY_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    cornernet_deploy::plugin::setLoggerFinder(finder);
}
