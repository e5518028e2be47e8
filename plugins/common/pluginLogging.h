/*
 * Diagnostics for the cornernet_deploy plugin library: TensorRT hands the library its logger through the
 * exported setLoggerFinder() (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins); runtime plugin
 * clones also get the execution context's error recorder (attachToContext).
 */
#pragma once

#include <NvInferRuntime.h>

#include <string>

namespace cornernet_deploy
{
namespace plugin
{

//! Remember the finder (first non-null one wins, as in NVIDIA's plugin libraries). Thread-safe.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! The logger TensorRT gave the library, or nullptr (library used without TensorRT's loader).
nvinfer1::ILogger* pluginLogger() noexcept;

//! Error: to `recorder` when non-null, and to the TensorRT logger (stderr when there is none).
void reportError(nvinfer1::IErrorRecorder* recorder, nvinfer1::ErrorCode code, std::string const& message) noexcept;

//! Warning: to the TensorRT logger (stderr when there is none).
void logWarning(std::string const& message) noexcept;

} // namespace plugin
} // namespace cornernet_deploy
