/*
 * The CornerPool plugin on a real GPU, driven through its IPluginV3 methods exactly as TensorRT calls
 * them, with no TensorRT library (every interface involved is defined inline in the headers):
 *
 *   getCreators() -> createPlugin(kBUILD, field `mode` as the ONNX parser passes it)
 *   -> supportsFormatCombination / getOutputDataTypes / configurePlugin (dynamic batch, profile range)
 *   -> getFieldsToSerialize -> createPlugin(kRUNTIME) (what deserializing an engine does)
 *   -> attachToContext (an error recorder) -> onShapeChange -> enqueue on cudaMalloc buffers and a stream
 *
 * and compares every output bit for bit with the naive reference of pluginTestSupport.h (straight from
 * the op contract). Covers both modes, FP32 and FP16, odd and CornerNet-like shapes, a row wide enough
 * to need the shared-memory opt-in, 64- and 32-wide maps, more planes than resident blocks, misaligned
 * tensors, W = 2^30 refused without a launch, the GPU's width limit at configure time, and a shape error
 * reported to the error recorder at enqueue time.
 *
 * Exit status: 0 all checks passed, 1 some failed, 77 no usable CUDA device (nothing was run).
 * Built by CMake with -DCORNERNET_DEPLOY_BUILD_TESTS=ON (target cornerPoolPluginGpuHarness) or by
 * scripts/gpu_check.sh with nvcc.
 */
#include "pluginTestSupport.h"

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <random>

extern "C" int cornerPoolMaxWidth(void); // cornerPoolKernel.h (its C enums clash with the C++ ones)

namespace
{

struct DeviceBuffer
{
    explicit DeviceBuffer(size_t bytes)
    {
        CHECK(cudaMalloc(&ptr, bytes == 0 ? 1 : bytes) == cudaSuccess);
    }
    ~DeviceBuffer()
    {
        cudaFree(ptr);
    }
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
    void* ptr{nullptr};
};

//! A runtime plugin as an engine would have it: built, configured, serialized, recreated, attached.
std::unique_ptr<IPluginV3> runtimePlugin(char const* mode, DataType type, Dims const& dims, FakeResourceContext& context)
{
    auto built = createWithMode(mode);
    CHECK(built != nullptr);
    if (built == nullptr)
    {
        return nullptr;
    }
    IPluginV3OneBuild& b = build(*built);
    Dims dynamicBatch = dims;
    dynamicBatch.d[0] = -1; // as in an engine built with a batch range
    DynamicPluginTensorDesc io[3] = {dynamicDesc(type, dynamicBatch), dynamicDesc(type, dynamicBatch),
        dynamicDesc(type, dynamicBatch)};
    for (int32_t pos = 0; pos < 3; ++pos)
    {
        CHECK(b.supportsFormatCombination(pos, io, 2, 1));
    }
    DataType inTypes[2] = {type, type};
    DataType outType[1] = {DataType::kINT8};
    CHECK(b.getOutputDataTypes(outType, 1, inTypes, 2) == 0 && outType[0] == type);
    CHECK(b.configurePlugin(io, 2, io + 2, 1) == 0);

    PluginFieldCollection const* fields = runtime(*built).getFieldsToSerialize();
    CHECK(fields != nullptr);
    std::unique_ptr<IPluginV3> restored(creator()->createPlugin("gpu_node", fields, TensorRTPhase::kRUNTIME));
    CHECK(restored != nullptr);
    if (restored == nullptr)
    {
        return nullptr;
    }
    std::unique_ptr<IPluginV3> attached(runtime(*restored).attachToContext(&context));
    CHECK(attached != nullptr);
    return attached;
}

//! offsetElements > 0 moves every tensor that many elements past cudaMalloc's alignment (the kernel must
//! then take its element-wise path instead of vector loads, which would fault).
template <typename T>
void runCase(DataType type, char const* mode, int N, int C, int H, int W, cudaStream_t stream, int offsetElements = 0)
{
    int const failuresBefore = gFailures;
    size_t const count = static_cast<size_t>(N) * C * H * W;
    std::mt19937 rng(static_cast<unsigned>(977 * H + 31 * W + C));
    std::uniform_int_distribution<int> small(-8, 8); // many ties in a
    std::normal_distribution<float> normal(0.0F, 30.0F);
    std::vector<T> a(count), b(count), out(count);
    for (size_t i = 0; i < count; ++i)
    {
        a[i] = fromFloat<T>(static_cast<float>(small(rng)));
        b[i] = fromFloat<T>(normal(rng));
    }
    if (count > 8)
    {
        a[count / 3] = fromFloat<T>(-INFINITY);
        b[count / 2] = fromFloat<T>(INFINITY);
    }
    RecordingErrorRecorder recorder;
    FakeResourceContext context(&recorder);
    Dims const dims = dims4(N, C, H, W);
    auto plugin = runtimePlugin(mode, type, dims, context);
    if (plugin == nullptr)
    {
        return;
    }
    IPluginV3OneRuntime& rt = runtime(*plugin);
    PluginTensorDesc inDesc[2] = {tensorDesc(type, dims), tensorDesc(type, dims)};
    PluginTensorDesc outDesc[1] = {tensorDesc(type, dims)};
    CHECK(rt.onShapeChange(inDesc, 2, outDesc, 1) == 0);

    size_t const bytes = count * sizeof(T);
    size_t const offset = static_cast<size_t>(offsetElements) * sizeof(T);
    DeviceBuffer bufA(bytes + offset), bufB(bytes + offset), bufOut(bytes + offset);
    void* const dA = static_cast<char*>(bufA.ptr) + offset;
    void* const dB = static_cast<char*>(bufB.ptr) + offset;
    void* const dOut = static_cast<char*>(bufOut.ptr) + offset;
    CHECK(cudaMemcpy(dA, a.data(), bytes, cudaMemcpyHostToDevice) == cudaSuccess);
    CHECK(cudaMemcpy(dB, b.data(), bytes, cudaMemcpyHostToDevice) == cudaSuccess);
    CHECK(cudaMemset(dOut, 0xFF, bytes) == cudaSuccess); // NaN everywhere: every element must be written
    void const* inputs[2] = {dA, dB};
    void* outputs[1] = {dOut};
    CHECK(rt.enqueue(inDesc, outDesc, inputs, outputs, nullptr, stream) == 0);
    CHECK(cudaStreamSynchronize(stream) == cudaSuccess);
    CHECK(cudaMemcpy(out.data(), dOut, bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
    std::vector<T> const expected = naiveCornerPool(
        std::string(mode) == "top_left" ? CornerPoolMode::kTopLeft : CornerPoolMode::kBottomRight, a, b, N, C, H, W);
    CHECK(std::memcmp(out.data(), expected.data(), bytes) == 0);
    CHECK(recorder.errors.empty());
    std::printf("%s %s %s [%d, %d, %d, %d]%s\n", gFailures == failuresBefore ? "PASS" : "FAIL", mode,
        type == DataType::kHALF ? "float16" : "float32", N, C, H, W, offsetElements != 0 ? " misaligned" : "");
}

void checkWidthLimitAtConfigure()
{
    int const limit = cornerPoolMaxWidth();
    CHECK(limit >= (64 * 1024 - 4096) / 4); // every sm_75+ GPU grants at least 64 KiB per block
    auto plugin = createWithMode("top_left");
    IPluginV3OneBuild& b = build(*plugin);
    DynamicPluginTensorDesc io[3] = {dynamicDesc(DataType::kFLOAT, dims4(1, 1, 4, limit)),
        dynamicDesc(DataType::kFLOAT, dims4(1, 1, 4, limit)), dynamicDesc(DataType::kFLOAT, dims4(1, 1, 4, limit))};
    CHECK(b.configurePlugin(io, 2, io + 2, 1) == 0);
    for (auto& desc : io)
    {
        desc.max.d[3] = limit + 1;
    }
    gLogger.messages.clear();
    CHECK(b.configurePlugin(io, 2, io + 2, 1) != 0);
    CHECK(gLogger.sawError("supports at most " + std::to_string(limit)));
    std::printf("%s width limit %d checked at configurePlugin\n", gLogger.sawError("supports at most") ? "PASS" : "FAIL",
        limit);
}

//! W = 2^30 needs 4 GiB + 4 KiB of shared memory; the size once wrapped in an int and the kernel ran out of
//! bounds. It must be refused (status -5 through enqueue, reported), nothing launched: the 16-byte buffers
//! below are far too small for such a tensor and are never touched.
void checkHugeWidthIsRefused(cudaStream_t stream)
{
    RecordingErrorRecorder recorder;
    FakeResourceContext context(&recorder);
    Dims const dims = dims4(1, 1, 1, 1 << 30);
    auto plugin = runtimePlugin("top_left", DataType::kFLOAT, dims4(1, 1, 1, 4), context);
    if (plugin == nullptr)
    {
        return;
    }
    PluginTensorDesc inDesc[2] = {tensorDesc(DataType::kFLOAT, dims), tensorDesc(DataType::kFLOAT, dims)};
    PluginTensorDesc outDesc[1] = {tensorDesc(DataType::kFLOAT, dims)};
    DeviceBuffer buffer(16);
    void const* inputs[2] = {buffer.ptr, buffer.ptr};
    void* outputs[1] = {buffer.ptr};
    int32_t const status = runtime(*plugin).enqueue(inDesc, outDesc, inputs, outputs, nullptr, stream);
    CHECK(status == -5); // CORNER_POOL_WIDTH_TOO_LARGE
    CHECK(cudaStreamSynchronize(stream) == cudaSuccess);
    CHECK(recorder.errors.size() == 1 && recorder.errors[0].second.find("width too large") != std::string::npos);
    std::printf("%s W = 2^30 refused with status %d\n", status == -5 ? "PASS" : "FAIL", status);
}

void checkShapeErrorGoesToTheRecorder(cudaStream_t stream)
{
    RecordingErrorRecorder recorder;
    FakeResourceContext context(&recorder);
    auto plugin = runtimePlugin("bottom_right", DataType::kFLOAT, dims4(1, 2, 8, 8), context);
    if (plugin == nullptr)
    {
        return;
    }
    PluginTensorDesc inDesc[2] = {tensorDesc(DataType::kFLOAT, dims4(1, 2, 8, 8)), tensorDesc(DataType::kFLOAT, dims4(1, 2, 8, 9))};
    PluginTensorDesc outDesc[1] = {tensorDesc(DataType::kFLOAT, dims4(1, 2, 8, 8))};
    DeviceBuffer buffer(2 * 8 * 9 * sizeof(float));
    void const* inputs[2] = {buffer.ptr, buffer.ptr};
    void* outputs[1] = {buffer.ptr};
    CHECK(runtime(*plugin).enqueue(inDesc, outDesc, inputs, outputs, nullptr, stream) != 0);
    CHECK(recorder.errors.size() == 1 && recorder.errors[0].first == ErrorCode::kINVALID_ARGUMENT);
    std::printf("%s shape mismatch reported to the error recorder\n", recorder.errors.size() == 1 ? "PASS" : "FAIL");
}

} // namespace

int main()
{
    int devices = 0;
    cudaError_t const status = cudaGetDeviceCount(&devices);
    if (status != cudaSuccess || devices == 0)
    {
        std::printf("no usable CUDA device (cudaGetDeviceCount: %s, %d devices): nothing run\n",
            status == cudaSuccess ? "success" : cudaGetErrorString(status), devices);
        return 77;
    }
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, 0);
    std::printf("device: %s (sm_%d%d), TensorRT headers %d\n", prop.name, prop.major, prop.minor,
        cornernetDeployTensorRTVersion());
    TestLoggerFinder finder;
    setLoggerFinder(&finder);
    cudaStream_t stream = nullptr;
    CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);

    // CORNERPOOL_HARNESS_QUICK=1: one case per kernel path, for slow runs (compute-sanitizer).
    bool const quick = std::getenv("CORNERPOOL_HARNESS_QUICK") != nullptr;
    if (quick)
    {
        runCase<float>(DataType::kFLOAT, "top_left", 1, 2, 40, 131, stream);        // element-wise path
        runCase<__half>(DataType::kHALF, "bottom_right", 1, 32, 128, 128, stream);  // vector path, 16 warps
        runCase<float>(DataType::kFLOAT, "bottom_right", 2, 8, 64, 64, stream);     // 2 rows per warp
        runCase<__half>(DataType::kHALF, "top_left", 1, 3, 70, 32, stream);         // 4 rows per warp
        runCase<__half>(DataType::kHALF, "top_left", 2, 600, 40, 64, stream);       // blocks walk several planes
        runCase<float>(DataType::kFLOAT, "top_left", 1, 2, 3, 12000, stream);       // shared-memory opt-in
        runCase<float>(DataType::kFLOAT, "bottom_right", 1, 3, 37, 72, stream, 1);  // misaligned
    }
    int const shapes[][4] = {{1, 1, 1, 1}, {2, 3, 37, 45}, {1, 2, 40, 131}, {1, 1, 517, 3}, {1, 1, 3, 517},
        {3, 5, 33, 129}, {1, 32, 128, 128}};
    for (char const* mode : {"top_left", "bottom_right"})
    {
        for (auto const& s : shapes)
        {
            if (quick)
            {
                break;
            }
            runCase<float>(DataType::kFLOAT, mode, s[0], s[1], s[2], s[3], stream);
            runCase<__half>(DataType::kHALF, mode, s[0], s[1], s[2], s[3], stream);
        }
    }
    if (!quick)
    {
        runCase<float>(DataType::kFLOAT, "top_left", 1, 2, 3, 12000, stream); // 52 KiB shared memory: opt-in
        runCase<__half>(DataType::kHALF, "bottom_right", 1, 2, 3, 12000, stream);
        // Saccade-like 64x64 and 32-wide maps (rows side by side in a warp), more planes than resident blocks
        // (each block walks several), and W % 4 == 0 with misaligned tensors (element-wise path).
        for (char const* mode : {"top_left", "bottom_right"})
        {
            runCase<float>(DataType::kFLOAT, mode, 2, 8, 64, 64, stream);
            runCase<__half>(DataType::kHALF, mode, 1, 3, 70, 32, stream);
            runCase<__half>(DataType::kHALF, mode, 2, 600, 40, 64, stream);
            runCase<float>(DataType::kFLOAT, mode, 1, 3, 37, 72, stream, 1);
            runCase<__half>(DataType::kHALF, mode, 1, 3, 37, 72, stream, 3);
        }
    }
    checkHugeWidthIsRefused(stream);
    checkWidthLimitAtConfigure();
    checkShapeErrorGoesToTheRecorder(stream);
    cudaStreamDestroy(stream);

    std::printf("%d checks, %d failed\n", gChecks, gFailures);
    return gFailures == 0 ? 0 : 1;
}
