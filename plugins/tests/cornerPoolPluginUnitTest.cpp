/*
 * Unit test of the CornerPool plugin's TensorRT-facing logic, without a TensorRT library or a GPU.
 *
 * Every TensorRT interface the plugin implements is defined inline in the TensorRT headers, so this
 * program links the plugin sources directly and drives them the way TensorRT would: the creator through
 * the library's exported getCreators(), build-time queries with hand-made tensor descriptions and a fake
 * IDimensionExpr, serialization through getFieldsToSerialize() + createPlugin(kRUNTIME), clone and
 * attachToContext with a fake error recorder, and enqueue. The kernel is the real kernel source compiled
 * in host emulation (cornerPoolKernelEmulated.cpp), so enqueue runs on host memory here; on a machine
 * with a GPU the same checks can be compiled against the CUDA build.
 *
 * Expected values come from the op contract (plugins/cornerPoolPlugin/README.md) and a naive O(H*W*(H+W))
 * reference (pluginTestSupport.h), never from the plugin's own output. Exit status = number of failed checks.
 */
#include "pluginTestSupport.h"

#include <atomic>
#include <cstdlib>
#include <new>
#include <random>

// GCC pairs the malloc/free inside the replacement operators below with new/delete at inlined call sites
// and warns; they are the program's only allocation functions, so the pairs do match.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

// Allocation-failure injection for the whole program: when armed with n >= 0, the allocation after the next
// n succeeds throws std::bad_alloc (once). Replacing the global operator new is standard C++, not a mock.
namespace
{
std::atomic<long> gAllocationsBeforeFailure{-1};
std::atomic<int> gInjectedFailures{0};
} // namespace

void* operator new(std::size_t size)
{
    long remaining = gAllocationsBeforeFailure.load();
    while (remaining >= 0 && !gAllocationsBeforeFailure.compare_exchange_weak(remaining, remaining - 1))
    {
    }
    if (remaining == 0)
    {
        ++gInjectedFailures;
        throw std::bad_alloc();
    }
    if (void* p = std::malloc(size != 0 ? size : 1))
    {
        return p;
    }
    throw std::bad_alloc();
}

void operator delete(void* p) noexcept
{
    std::free(p);
}

void operator delete(void* p, std::size_t) noexcept
{
    std::free(p);
}

namespace
{

class FakeDimensionImpl : public apiv::VDimensionExpr
{
public:
    FakeDimensionImpl(bool constant, int64_t value)
        : mConstant(constant)
        , mValue(value)
    {
    }
    bool isConstant() const override
    {
        return mConstant;
    }
    int64_t getConstantValue() const override
    {
        return mConstant ? mValue : -1;
    }
    bool isSizeTensor() const override
    {
        return false;
    }

private:
    bool mConstant;
    int64_t mValue;
};

//! A build-time dimension: a known constant, or symbolic (value < 0).
class FakeDimension : public IDimensionExpr
{
public:
    explicit FakeDimension(int64_t value)
        : mImplStorage(value >= 0, value)
    {
        mImpl = &mImplStorage;
    }
    ~FakeDimension() noexcept override = default;

private:
    FakeDimensionImpl mImplStorage;
};

class UnusedExprBuilder : public IExprBuilder
{
public:
    UnusedExprBuilder()
    {
        mImpl = nullptr; // the plugin must not need to build expressions: output shape = input shape
    }
    ~UnusedExprBuilder() noexcept override = default;
};

// ----- tests --------------------------------------------------------------------------------------------

void testCreatorIdentityAndFields()
{
    IPluginCreatorV3One* c = creator();
    CHECK(std::string(c->getPluginName()) == "CornerPool");
    CHECK(std::string(c->getPluginVersion()) == "1");
    CHECK(std::string(c->getPluginNamespace()) == "cornernet_deploy");
    PluginFieldCollection const* fields = c->getFieldNames();
    CHECK(fields != nullptr && fields->nbFields == 1);
    CHECK(fields != nullptr && std::string(fields->fields[0].name) == "mode");
}

void testModeParsing()
{
    CHECK(impl(*createWithMode("top_left")).mode() == CornerPoolMode::kTopLeft);
    CHECK(impl(*createWithMode("bottom_right")).mode() == CornerPoolMode::kBottomRight);

    // A string field whose length does not count a terminating NUL (set programmatically).
    PluginField noNul("mode", "bottom_right", PluginFieldType::kCHAR, 12);
    auto p = create(&noNul, 1);
    CHECK(p != nullptr && impl(*p).mode() == CornerPoolMode::kBottomRight);

    for (int32_t value : {0, 1})
    {
        PluginField field("mode", &value, PluginFieldType::kINT32, 1);
        auto q = create(&field, 1);
        CHECK(q != nullptr && static_cast<int32_t>(impl(*q).mode()) == value);
    }

    gLogger.messages.clear();
    CHECK(createWithMode("topleft") == nullptr);
    CHECK(gLogger.sawError("\"topleft\"") && gLogger.sawError("expected \"top_left\" or \"bottom_right\""));
    CHECK(gLogger.sawError("CornerPool[corner_node]"));

    int32_t two = 2;
    PluginField badInt("mode", &two, PluginFieldType::kINT32, 1);
    CHECK(create(&badInt, 1) == nullptr);
    CHECK(gLogger.sawError("is 2; expected 0 (top_left) or 1 (bottom_right)"));

    float oneF = 1.0F;
    PluginField badType("mode", &oneF, PluginFieldType::kFLOAT32, 1);
    CHECK(create(&badType, 1) == nullptr);
    CHECK(gLogger.sawError("type kFLOAT32"));

    int32_t pair[2] = {0, 1};
    PluginField twoValues("mode", pair, PluginFieldType::kINT32, 2);
    CHECK(create(&twoValues, 1) == nullptr);

    PluginField empty("mode", nullptr, PluginFieldType::kCHAR, 0);
    CHECK(create(&empty, 1) == nullptr);

    CHECK(create(nullptr, 0) == nullptr);
    CHECK(gLogger.sawError("required field 'mode' is missing"));
    CHECK(std::unique_ptr<IPluginV3>(creator()->createPlugin("n", nullptr, TensorRTPhase::kBUILD)) == nullptr);

    // Unknown fields are ignored with a warning; `mode` still decides.
    PluginField two_fields[2] = {PluginField("Mode", "x", PluginFieldType::kCHAR, 2),
        PluginField("mode", "bottom_right", PluginFieldType::kCHAR, 13)};
    gLogger.messages.clear();
    auto r = create(two_fields, 2);
    CHECK(r != nullptr && impl(*r).mode() == CornerPoolMode::kBottomRight);
    CHECK(gLogger.sawWarning("unknown field 'Mode'"));
}

void testIdentityAndCapabilities()
{
    auto p = createWithMode("top_left");
    auto* core = static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE));
    CHECK(core != nullptr);
    CHECK(std::string(core->getPluginName()) == "CornerPool");
    CHECK(std::string(core->getPluginVersion()) == "1");
    CHECK(std::string(core->getPluginNamespace()) == "cornernet_deploy");
    CHECK(p->getCapabilityInterface(PluginCapabilityType::kBUILD) != nullptr);
    CHECK(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME) != nullptr);
    CHECK(build(*p).getNbOutputs() == 1);
    DynamicPluginTensorDesc io[3] = {dynamicDesc(DataType::kFLOAT, dims4(1, 2, 3, 4)),
        dynamicDesc(DataType::kFLOAT, dims4(1, 2, 3, 4)), dynamicDesc(DataType::kFLOAT, dims4(1, 2, 3, 4))};
    CHECK(build(*p).getWorkspaceSize(io, 2, io + 2, 1) == 0);
}

void testSupportsFormatCombination()
{
    auto p = createWithMode("top_left");
    IPluginV3OneBuild& b = build(*p);
    Dims const d = dims4(-1, 8, -1, -1);
    auto io = [&](DataType t0, DataType t1, DataType t2, TensorFormat f = TensorFormat::kLINEAR) {
        return std::vector<DynamicPluginTensorDesc>{dynamicDesc(t0, d, f), dynamicDesc(t1, d), dynamicDesc(t2, d)};
    };
    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        auto v = io(t, t, t);
        CHECK(b.supportsFormatCombination(0, v.data(), 2, 1));
        CHECK(b.supportsFormatCombination(1, v.data(), 2, 1));
        CHECK(b.supportsFormatCombination(2, v.data(), 2, 1));
    }
    for (DataType t : {DataType::kINT32, DataType::kINT8, DataType::kBF16, DataType::kBOOL, DataType::kINT64})
    {
        auto v = io(t, t, t);
        CHECK(!b.supportsFormatCombination(0, v.data(), 2, 1));
    }
    auto mixed = io(DataType::kFLOAT, DataType::kHALF, DataType::kFLOAT);
    CHECK(!mixed.empty() && !b.supportsFormatCombination(1, mixed.data(), 2, 1));
    auto mixedOut = io(DataType::kHALF, DataType::kHALF, DataType::kFLOAT);
    CHECK(!b.supportsFormatCombination(2, mixedOut.data(), 2, 1));
    auto vectorized = io(DataType::kHALF, DataType::kHALF, DataType::kHALF, TensorFormat::kHWC8);
    CHECK(!b.supportsFormatCombination(0, vectorized.data(), 2, 1));
    auto ok = io(DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT);
    CHECK(!b.supportsFormatCombination(3, ok.data(), 2, 1));
    CHECK(!b.supportsFormatCombination(0, ok.data(), 1, 1));
}

void testOutputDataTypes()
{
    auto p = createWithMode("bottom_right");
    IPluginV3OneBuild& b = build(*p);
    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        DataType in[2] = {t, t};
        DataType out[1] = {DataType::kINT8};
        CHECK(b.getOutputDataTypes(out, 1, in, 2) == 0 && out[0] == t);
    }
    gLogger.messages.clear();
    DataType mixed[2] = {DataType::kFLOAT, DataType::kHALF};
    DataType out[1];
    CHECK(b.getOutputDataTypes(out, 1, mixed, 2) != 0);
    CHECK(gLogger.sawError("same type") && gLogger.sawError("FLOAT16"));
    DataType ints[2] = {DataType::kINT32, DataType::kINT32};
    CHECK(b.getOutputDataTypes(out, 1, ints, 2) != 0);
    CHECK(gLogger.sawError("INT32; supported: FLOAT32, FLOAT16"));
    CHECK(b.getOutputDataTypes(out, 1, ints, 1) != 0);
    CHECK(gLogger.sawError("expects 2 inputs (a, b) and 1 output, got 1 inputs"));
}

void testOutputShapes()
{
    auto p = createWithMode("top_left");
    IPluginV3OneBuild& b = build(*p);
    UnusedExprBuilder exprBuilder;
    FakeDimension batch(-1), channels(128), height(-1), width(-1), otherChannels(64), height2(-1), width2(-1);
    DimsExprs inputs[2]{};
    inputs[0].nbDims = 4;
    inputs[0].d[0] = &batch;
    inputs[0].d[1] = &channels;
    inputs[0].d[2] = &height;
    inputs[0].d[3] = &width;
    inputs[1] = inputs[0];
    inputs[1].d[2] = &height2; // symbolic and different objects: only runtime can tell, so accepted
    inputs[1].d[3] = &width2;
    DimsExprs outputs[1]{};
    CHECK(b.getOutputShapes(inputs, 2, nullptr, 0, outputs, 1, exprBuilder) == 0);
    CHECK(outputs[0].nbDims == 4);
    for (int32_t i = 0; i < 4; ++i)
    {
        CHECK(outputs[0].d[i] == inputs[0].d[i]);
    }

    gLogger.messages.clear();
    inputs[1].d[1] = &otherChannels; // 128 vs 64, both known
    CHECK(b.getOutputShapes(inputs, 2, nullptr, 0, outputs, 1, exprBuilder) != 0);
    CHECK(gLogger.sawError("dimension 1 is 128 vs 64"));
    inputs[1].d[1] = &channels;

    inputs[1].nbDims = 3;
    CHECK(b.getOutputShapes(inputs, 2, nullptr, 0, outputs, 1, exprBuilder) != 0);
    CHECK(gLogger.sawError("input 1 (b) has rank 3; expected a rank-4 NCHW tensor"));
    inputs[1].nbDims = 4;

    CHECK(b.getOutputShapes(inputs, 2, inputs, 1, outputs, 1, exprBuilder) != 0);
    CHECK(gLogger.sawError("takes no shape inputs"));
}

void testConfigurePlugin()
{
    auto p = createWithMode("top_left");
    IPluginV3OneBuild& b = build(*p);
    DynamicPluginTensorDesc in[2] = {dynamicDesc(DataType::kHALF, dims4(-1, 128, -1, -1)),
        dynamicDesc(DataType::kHALF, dims4(-1, 128, -1, -1))};
    DynamicPluginTensorDesc out[1] = {dynamicDesc(DataType::kHALF, dims4(-1, 128, -1, -1))};
    CHECK(b.configurePlugin(in, 2, out, 1) == 0);

    gLogger.messages.clear();
    in[1].desc.dims.d[1] = 64;
    CHECK(b.configurePlugin(in, 2, out, 1) != 0);
    CHECK(gLogger.sawError("same shape"));
    in[1].desc.dims.d[1] = 128;

    in[1].desc.type = DataType::kFLOAT;
    CHECK(b.configurePlugin(in, 2, out, 1) != 0);
    CHECK(gLogger.sawError("input 1 (b) has type FLOAT32"));
    in[1].desc.type = DataType::kHALF;

    out[0].desc.dims.nbDims = 3;
    CHECK(b.configurePlugin(in, 2, out, 1) != 0);
    CHECK(gLogger.sawError("output 0 has rank 3"));
}

void testSerializationRoundTripAndClone()
{
    for (char const* mode : {"top_left", "bottom_right"})
    {
        auto original = createWithMode(mode);
        PluginFieldCollection const* fc = runtime(*original).getFieldsToSerialize();
        CHECK(fc != nullptr && fc->nbFields == 1);
        CHECK(std::string(fc->fields[0].name) == "mode");
        CHECK(fc->fields[0].type == PluginFieldType::kCHAR);
        CHECK(std::string(static_cast<char const*>(fc->fields[0].data)) == mode);
        CHECK(fc->fields[0].length == static_cast<int32_t>(std::strlen(mode) + 1));
        std::unique_ptr<IPluginV3> restored(creator()->createPlugin("restored", fc, TensorRTPhase::kRUNTIME));
        CHECK(restored != nullptr && std::string(modeName(impl(*restored).mode())) == mode);

        std::unique_ptr<IPluginV3> cloned(original->clone());
        original.reset(); // the clone must not depend on the original's storage
        CHECK(cloned != nullptr && std::string(modeName(impl(*cloned).mode())) == mode);
        PluginFieldCollection const* clonedFc = runtime(*cloned).getFieldsToSerialize();
        CHECK(clonedFc != nullptr && std::string(static_cast<char const*>(clonedFc->fields[0].data)) == mode);
    }
}

template <typename T>
void testEnqueue(DataType type, CornerPoolMode mode, int N, int C, int H, int W)
{
    std::mt19937 rng(1234 + H * 7 + W);
    std::uniform_int_distribution<int> small(-8, 8); // many ties
    std::normal_distribution<float> normal(0.0F, 3.0F);
    size_t const count = static_cast<size_t>(N) * C * H * W;
    std::vector<T> a(count), b(count), out(count, fromFloat<T>(12345.0F));
    for (size_t i = 0; i < count; ++i)
    {
        a[i] = fromFloat<T>(static_cast<float>(small(rng)));
        b[i] = fromFloat<T>(normal(rng));
    }
    auto plugin = createWithMode(mode == CornerPoolMode::kTopLeft ? "top_left" : "bottom_right");
    RecordingErrorRecorder recorder;
    FakeResourceContext context(&recorder);
    std::unique_ptr<IPluginV3> attached(runtime(*plugin).attachToContext(&context));
    CHECK(attached != nullptr);
    IPluginV3OneRuntime& rt = runtime(*attached);
    PluginTensorDesc inDesc[2] = {tensorDesc(type, dims4(N, C, H, W)), tensorDesc(type, dims4(N, C, H, W))};
    PluginTensorDesc outDesc[1] = {tensorDesc(type, dims4(N, C, H, W))};
    CHECK(rt.onShapeChange(inDesc, 2, outDesc, 1) == 0);
    void const* inputs[2] = {a.data(), b.data()};
    void* outputs[1] = {out.data()};
    CHECK(rt.enqueue(inDesc, outDesc, inputs, outputs, nullptr, nullptr) == 0);
    std::vector<T> const expected = naiveCornerPool(mode, a, b, N, C, H, W);
    CHECK(std::memcmp(out.data(), expected.data(), count * sizeof(T)) == 0);
    CHECK(recorder.errors.empty());
}

//! createPlugin is noexcept: an allocation failure anywhere inside it (layer name, message prefix, field
//! names, the plugin itself) must give nullptr, not std::terminate. Fails the 1st, 2nd, ... allocation of
//! the call until a call completes without reaching the armed one.
void testCreatePluginSurvivesAllocationFailures()
{
    // Longer than any small-string buffer, so building the layer name and the prefix allocates.
    std::string const longName(200, 'n');
    PluginField fields[2] = {PluginField("an_unknown_field_with_a_long_name_to_warn_about", "x", PluginFieldType::kCHAR, 2),
        PluginField("mode", "top_left", PluginFieldType::kCHAR, 9)};
    PluginFieldCollection fc{};
    fc.nbFields = 2;
    fc.fields = fields;
    IPluginCreatorV3One* c = creator();
    int failedCalls = 0;
    bool completed = false;
    for (long n = 0; n < 1000 && !completed; ++n)
    {
        int const injectedBefore = gInjectedFailures.load();
        gAllocationsBeforeFailure = n;
        IPluginV3* plugin = c->createPlugin(longName.c_str(), &fc, TensorRTPhase::kBUILD);
        gAllocationsBeforeFailure = -1;
        bool const injected = gInjectedFailures.load() != injectedBefore;
        if (injected)
        {
            failedCalls += plugin == nullptr ? 1 : 0;
        }
        else
        {
            completed = true;
            CHECK(plugin != nullptr && impl(*plugin).mode() == CornerPoolMode::kTopLeft);
        }
        delete plugin;
    }
    CHECK(completed);
    CHECK(failedCalls >= 3); // at least the layer name, the prefix and the plugin itself allocate
    std::printf("createPlugin: %d allocation failures survived\n", failedCalls);
}

void testEnqueueErrorsGoToTheErrorRecorder()
{
    auto plugin = createWithMode("top_left");
    RecordingErrorRecorder recorder;
    FakeResourceContext context(&recorder);
    std::unique_ptr<IPluginV3> attached(runtime(*plugin).attachToContext(&context));
    IPluginV3OneRuntime& rt = runtime(*attached);
    PluginTensorDesc inDesc[2] = {tensorDesc(DataType::kFLOAT, dims4(1, 2, 3, 4)), tensorDesc(DataType::kFLOAT, dims4(1, 2, 3, 5))};
    PluginTensorDesc outDesc[1] = {tensorDesc(DataType::kFLOAT, dims4(1, 2, 3, 4))};
    CHECK(rt.onShapeChange(inDesc, 2, outDesc, 1) != 0);
    CHECK(recorder.errors.size() == 1 && recorder.errors[0].first == ErrorCode::kINVALID_ARGUMENT);
    CHECK(!recorder.errors.empty() && recorder.errors[0].second.find("[1, 2, 3, 5]") != std::string::npos);
    float dummy[40] = {};
    void const* inputs[2] = {dummy, dummy};
    void* outputs[1] = {dummy};
    CHECK(rt.enqueue(inDesc, outDesc, inputs, outputs, nullptr, nullptr) != 0);
    CHECK(recorder.errors.size() == 2);
    inDesc[1] = tensorDesc(DataType::kHALF, dims4(1, 2, 3, 4));
    CHECK(rt.enqueue(inDesc, outDesc, inputs, outputs, nullptr, nullptr) != 0);
    CHECK(recorder.errors.size() == 3 && recorder.errors[2].second.find("FLOAT16") != std::string::npos);
    // An empty tensor is valid and launches nothing.
    PluginTensorDesc emptyIn[2] = {tensorDesc(DataType::kFLOAT, dims4(0, 2, 3, 4)), tensorDesc(DataType::kFLOAT, dims4(0, 2, 3, 4))};
    PluginTensorDesc emptyOut[1] = {tensorDesc(DataType::kFLOAT, dims4(0, 2, 3, 4))};
    CHECK(rt.enqueue(emptyIn, emptyOut, inputs, outputs, nullptr, nullptr) == 0);
}

} // namespace

int main()
{
    TestLoggerFinder finder;
    setLoggerFinder(&finder);
    // No TensorRT library is loaded here, so the library's host-version guard lets everything through.
    CHECK(cornernetDeployTensorRTVersion() == NV_TENSORRT_VERSION);

    testCreatorIdentityAndFields();
    testModeParsing();
    testIdentityAndCapabilities();
    testSupportsFormatCombination();
    testOutputDataTypes();
    testOutputShapes();
    testConfigurePlugin();
    testSerializationRoundTripAndClone();
    for (CornerPoolMode mode : {CornerPoolMode::kTopLeft, CornerPoolMode::kBottomRight})
    {
        testEnqueue<float>(DataType::kFLOAT, mode, 2, 3, 37, 45);
        testEnqueue<__half>(DataType::kHALF, mode, 1, 2, 40, 131);
        testEnqueue<float>(DataType::kFLOAT, mode, 1, 1, 1, 1);
    }
    testEnqueueErrorsGoToTheErrorRecorder();
    testCreatePluginSurvivesAllocationFailures();

    std::printf("%d checks, %d failed\n", gChecks, gFailures);
    return gFailures == 0 ? 0 : 1;
}
