#include "pluginLogging.h"

#include <cstdio>
#include <mutex>

namespace cornernet_deploy
{
namespace plugin
{
namespace
{

std::mutex gLoggerMutex;
nvinfer1::ILoggerFinder* gLoggerFinder{nullptr};

void emit(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    nvinfer1::ILogger* logger = pluginLogger();
    if (logger != nullptr)
    {
        logger->log(severity, message.c_str());
        return;
    }
    std::fprintf(stderr, "[cornernet_deploy plugin] %s: %s\n",
        severity == nvinfer1::ILogger::Severity::kWARNING ? "WARNING" : "ERROR", message.c_str());
}

} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    if (gLoggerFinder == nullptr && finder != nullptr)
    {
        gLoggerFinder = finder;
    }
}

nvinfer1::ILogger* pluginLogger() noexcept
{
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    return gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
}

void reportError(nvinfer1::IErrorRecorder* recorder, nvinfer1::ErrorCode code, std::string const& message) noexcept
{
    try
    {
        if (recorder != nullptr)
        {
            recorder->reportError(code, message.c_str());
        }
        emit(nvinfer1::ILogger::Severity::kERROR, message);
    }
    catch (...)
    {
        // Reporting must never throw through a noexcept TensorRT interface.
    }
}

void logWarning(std::string const& message) noexcept
{
    try
    {
        emit(nvinfer1::ILogger::Severity::kWARNING, message);
    }
    catch (...)
    {
    }
}

} // namespace plugin
} // namespace cornernet_deploy
