/*
 * What the plugin's C++ tests share (the host-emulation unit test and the GPU harness): a CHECK counter,
 * fakes of the few TensorRT objects a plugin talks to (logger, logger finder, error recorder, resource
 * context: all pure interfaces from the headers), helpers that drive the creator as TensorRT does, and a
 * naive corner-pool reference written straight from the op contract. Include it from one file per program.
 */
#pragma once

#include "cornerPoolPlugin/cornerPoolPlugin.h"

#include <NvInferRuntime.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);
extern "C" int32_t cornernetDeployTensorRTVersion();

using namespace nvinfer1;
using cornernet_deploy::plugin::CornerPoolMode;
using cornernet_deploy::plugin::CornerPoolPlugin;
using cornernet_deploy::plugin::modeName;

namespace
{

int gFailures = 0;
int gChecks = 0;

#define CHECK(condition)                                                                                              \
    do                                                                                                                 \
    {                                                                                                                  \
        ++gChecks;                                                                                                     \
        if (!(condition))                                                                                              \
        {                                                                                                              \
            ++gFailures;                                                                                               \
            std::printf("FAILED %s:%d: %s\n", __FILE__, __LINE__, #condition);                                       \
        }                                                                                                              \
    } while (0)

// ----- fakes for the parts of TensorRT the plugin talks to ------------------------------------------------

class CapturingLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        try
        {
            messages.push_back({severity, msg});
        }
        catch (...)
        {
            // the allocation-failure test makes allocations fail; a logger must not throw either
        }
    }
    bool sawError(std::string const& needle) const
    {
        return std::any_of(messages.begin(), messages.end(), [&](auto const& m) {
            return m.first == Severity::kERROR && m.second.find(needle) != std::string::npos;
        });
    }
    bool sawWarning(std::string const& needle) const
    {
        return std::any_of(messages.begin(), messages.end(), [&](auto const& m) {
            return m.first == Severity::kWARNING && m.second.find(needle) != std::string::npos;
        });
    }
    std::vector<std::pair<Severity, std::string>> messages;
};

CapturingLogger gLogger;

class TestLoggerFinder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        return &gLogger;
    }
};

class RecordingErrorRecorder : public IErrorRecorder
{
public:
    int32_t getNbErrors() const noexcept override
    {
        return static_cast<int32_t>(errors.size());
    }
    ErrorCode getErrorCode(int32_t i) const noexcept override
    {
        return errors[static_cast<size_t>(i)].first;
    }
    ErrorDesc getErrorDesc(int32_t i) const noexcept override
    {
        return errors[static_cast<size_t>(i)].second.c_str();
    }
    bool hasOverflowed() const noexcept override
    {
        return false;
    }
    void clear() noexcept override
    {
        errors.clear();
    }
    bool reportError(ErrorCode code, ErrorDesc desc) noexcept override
    {
        errors.push_back({code, desc});
        return true;
    }
    RefCount incRefCount() noexcept override
    {
        return ++refs;
    }
    RefCount decRefCount() noexcept override
    {
        return --refs;
    }
    std::vector<std::pair<ErrorCode, std::string>> errors;
    RefCount refs{0};
};

class FakeResourceContext : public IPluginResourceContext
{
public:
    explicit FakeResourceContext(IErrorRecorder* recorder)
        : mRecorder(recorder)
    {
    }
    ~FakeResourceContext() noexcept override = default;
    IGpuAllocator* getGpuAllocator() const noexcept override
    {
        return nullptr;
    }
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return mRecorder;
    }

private:
    IErrorRecorder* mRecorder;
};

// ----- helpers ------------------------------------------------------------------------------------------

[[maybe_unused]] IPluginCreatorV3One* creator()
{
    int32_t nb = 0;
    IPluginCreatorInterface* const* creators = getCreators(nb);
    CHECK(nb == 1);
    return static_cast<IPluginCreatorV3One*>(creators[0]);
}

[[maybe_unused]] std::unique_ptr<IPluginV3> create(PluginField const* fields, int32_t nbFields, TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    PluginFieldCollection fc{};
    fc.nbFields = nbFields;
    fc.fields = fields;
    return std::unique_ptr<IPluginV3>(creator()->createPlugin("corner_node", &fc, phase));
}

[[maybe_unused]] std::unique_ptr<IPluginV3> createWithMode(char const* mode)
{
    PluginField field("mode", mode, PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(mode) + 1));
    return create(&field, 1);
}

[[maybe_unused]] CornerPoolPlugin& impl(IPluginV3& plugin)
{
    return static_cast<CornerPoolPlugin&>(*static_cast<IPluginV3OneCore*>(
        plugin.getCapabilityInterface(PluginCapabilityType::kCORE)));
}

[[maybe_unused]] IPluginV3OneBuild& build(IPluginV3& plugin)
{
    return *static_cast<IPluginV3OneBuild*>(plugin.getCapabilityInterface(PluginCapabilityType::kBUILD));
}

[[maybe_unused]] IPluginV3OneRuntime& runtime(IPluginV3& plugin)
{
    return *static_cast<IPluginV3OneRuntime*>(plugin.getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

[[maybe_unused]] Dims dims4(int64_t n, int64_t c, int64_t h, int64_t w)
{
    Dims d{};
    d.nbDims = 4;
    d.d[0] = n;
    d.d[1] = c;
    d.d[2] = h;
    d.d[3] = w;
    return d;
}

[[maybe_unused]] PluginTensorDesc tensorDesc(DataType type, Dims dims, TensorFormat format = TensorFormat::kLINEAR)
{
    PluginTensorDesc desc{};
    desc.dims = dims;
    desc.type = type;
    desc.format = format;
    desc.scale = 1.0F;
    return desc;
}

[[maybe_unused]] DynamicPluginTensorDesc dynamicDesc(DataType type, Dims dims, TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc desc{};
    desc.desc = tensorDesc(type, dims, format);
    desc.min = dims;
    desc.max = dims;
    desc.opt = dims;
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        if (dims.d[i] < 0) // dynamic dimension: give it a profile range
        {
            desc.min.d[i] = 1;
            desc.opt.d[i] = 64;
            desc.max.d[i] = 128;
        }
    }
    return desc;
}

// ----- enqueue against a naive reference ----------------------------------------------------------------

template <typename T>
float toFloat(T v);
template <>
float toFloat<float>(float v)
{
    return v;
}
template <>
float toFloat<__half>(__half v)
{
    return __half2float(v);
}

template <typename T>
T fromFloat(float v);
template <>
float fromFloat<float>(float v)
{
    return v;
}
template <>
__half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

//! Straight from the definition: top_left[y][x] = max(a[y..H-1][x]) + max(b[y][x..W-1]), etc.
template <typename T>
std::vector<T> naiveCornerPool(CornerPoolMode mode, std::vector<T> const& a, std::vector<T> const& b, int N, int C,
    int H, int W)
{
    std::vector<T> out(a.size());
    for (int plane = 0; plane < N * C; ++plane)
    {
        size_t const base = static_cast<size_t>(plane) * H * W;
        for (int y = 0; y < H; ++y)
        {
            for (int x = 0; x < W; ++x)
            {
                float vertical = -INFINITY;
                float horizontal = -INFINITY;
                int const y0 = mode == CornerPoolMode::kTopLeft ? y : 0;
                int const y1 = mode == CornerPoolMode::kTopLeft ? H - 1 : y;
                int const x0 = mode == CornerPoolMode::kTopLeft ? x : 0;
                int const x1 = mode == CornerPoolMode::kTopLeft ? W - 1 : x;
                for (int yy = y0; yy <= y1; ++yy)
                {
                    vertical = std::max(vertical, toFloat(a[base + static_cast<size_t>(yy) * W + x]));
                }
                for (int xx = x0; xx <= x1; ++xx)
                {
                    horizontal = std::max(horizontal, toFloat(b[base + static_cast<size_t>(y) * W + xx]));
                }
                out[base + static_cast<size_t>(y) * W + x] = fromFloat<T>(vertical + horizontal);
            }
        }
    }
    return out;
}

} // namespace
