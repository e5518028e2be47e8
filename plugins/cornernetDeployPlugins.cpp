/*
 * Entry points of libcornernet_deploy_plugins.so.
 *
 * Dynamic registration (default, recommended): TensorRT's IPluginRegistry::loadLibrary(path) - also
 * `trtexec --dynamicPlugins=path` and Python `trt.get_plugin_registry().load_library(path)` - dlopens the
 * library, calls setLoggerFinder() and getCreators(), and registers every creator under its own namespace
 * ("cornernet_deploy"). Nothing here calls into libnvinfer, so the library does not link it.
 *
 * One library per TensorRT major version: ILogger/ILoggerFinder derive from IVersionedInterface in 11.x
 * but not in 10.x, and IPluginRegistry lost virtuals in 11.x, so the vtables differ. A library built with
 * 11.x headers crashes a 10.x process at its first log call, one built with 10.x headers loses its
 * messages in an 11.x process. So the library (a) carries the version of its headers, readable from the
 * file without loading it (kHeadersTag, read by cornernet_deploy.tensorrt.plugin_build) and through
 * cornernetDeployTensorRTVersion(), and (b) checks the TensorRT library of the process it is loaded into:
 * on a major mismatch it ignores the logger finder, registers no creator and says why on stderr, instead
 * of crashing (this also protects trtexec and C++ users).
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
#include <NvInferVersion.h>

#include <dlfcn.h>
#include <link.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#define CORNERNET_DEPLOY_EXPORT extern "C" __attribute__((visibility("default")))
#define CORNERNET_DEPLOY_STRINGIFY_(x) #x
#define CORNERNET_DEPLOY_STRINGIFY(x) CORNERNET_DEPLOY_STRINGIFY_(x)

namespace
{

// Read from the file by plugin_library_tensorrt_version() in cornernet_deploy/runtime/plugin_library.py
// (docs/CONTRACTS.md); keep the form.
__attribute__((used)) char const kHeadersTag[] = "cornernet_deploy_tensorrt_headers="
    CORNERNET_DEPLOY_STRINGIFY(NV_TENSORRT_MAJOR) "." CORNERNET_DEPLOY_STRINGIFY(NV_TENSORRT_MINOR) "."
        CORNERNET_DEPLOY_STRINGIFY(NV_TENSORRT_PATCH);

struct HostTensorRT
{
    int32_t version{-1}; // getInferLibVersion() of the process's TensorRT library, -1 if none is loaded
    std::string library;
};

int collectLoadedObject(dl_phdr_info* info, size_t /*size*/, void* data)
{
    if (info->dlpi_name != nullptr && info->dlpi_name[0] != '\0')
    {
        static_cast<std::vector<std::string>*>(data)->emplace_back(info->dlpi_name);
    }
    return 0;
}

//! The TensorRT core library already loaded in this process (libnvinfer, libnvinfer_lean or
//! libnvinfer_dispatch; never loads one), found through the loader's list of objects.
HostTensorRT findHostTensorRT()
{
    std::vector<std::string> loaded;
    dl_iterate_phdr(collectLoadedObject, &loaded); // dlopen only after the loader's lock is released
    for (std::string const& path : loaded)
    {
        std::string const base = path.substr(path.find_last_of('/') + 1);
        bool const core = base.rfind("libnvinfer.so", 0) == 0 || base.rfind("libnvinfer_lean.so", 0) == 0
            || base.rfind("libnvinfer_dispatch.so", 0) == 0;
        if (!core)
        {
            continue;
        }
        void* handle = dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD);
        if (handle == nullptr)
        {
            continue;
        }
        auto* const getVersion = reinterpret_cast<int32_t (*)()>(dlsym(handle, "getInferLibVersion"));
        HostTensorRT host;
        if (getVersion != nullptr)
        {
            host.version = getVersion();
            host.library = base;
        }
        dlclose(handle);
        if (host.version >= 0)
        {
            return host;
        }
    }
    return {};
}

//! False (once reported) when the process runs a TensorRT of another major version than our headers.
bool hostTensorRTMatches()
{
    static bool const matches = [] {
        HostTensorRT const host = findHostTensorRT();
        if (host.version < 0 || host.version / 10000 == NV_TENSORRT_MAJOR)
        {
            return true; // same major, or no TensorRT loaded (a test program, ctypes use of the kernels)
        }
        std::fprintf(stderr,
            "[cornernet_deploy plugin] ERROR: libcornernet_deploy_plugins.so was built with TensorRT %s headers "
            "but this process runs TensorRT %d.%d.%d (%s); the plugin interfaces differ between major versions, "
            "so it registers nothing. Rebuild it with TensorRT %d headers (cornernet-deploy plugin build "
            "--tensorrt-root DIR).\n",
            kHeadersTag + std::strlen("cornernet_deploy_tensorrt_headers="), host.version / 10000,
            host.version / 100 % 100, host.version % 100, host.library.c_str(), host.version / 10000);
        return false;
    }();
    return matches;
}

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
        if (!hostTensorRTMatches())
        {
            return;
        }
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
    nbCreators = hostTensorRTMatches() ? static_cast<int32_t>(sizeof(creators) / sizeof(creators[0])) : 0;
    return creators;
}

CORNERNET_DEPLOY_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    if (hostTensorRTMatches()) // a finder of another major has another vtable: never call it
    {
        cornernet_deploy::plugin::setLoggerFinder(finder);
    }
}

//! NV_TENSORRT_VERSION of the headers this library was compiled with (major * 10000 + minor * 100 + patch).
CORNERNET_DEPLOY_EXPORT int32_t cornernetDeployTensorRTVersion()
{
    return NV_TENSORRT_VERSION;
}
