/*
 * simtHostEmulation.h: run a CUDA kernel's own source on the CPU, for tests on machines without a GPU.
 *
 * Included by cornerPoolKernel.cu only when CORNERPOOL_HOST_EMULATION is defined (never in the real
 * build). It stands in for exactly the CUDA built-ins that kernel uses: threadIdx/blockIdx/blockDim/
 * gridDim, __syncthreads, __shfl_up_sync and __shfl_sync (full mask, any power-of-two width), dynamic
 * shared memory, naturally aligned vector loads/stores, PTX max.NaN.f32, the two device attributes the
 * launch reads, cudaFuncSetAttribute(MaxDynamicSharedMemorySize) and the launch.
 *
 * Every CUDA thread of a block is a user-space fiber (ucontext) on one OS thread. A fiber runs until it
 * blocks at a barrier (__syncthreads, or the two warp barriers inside each shuffle); the scheduler then
 * resumes the next runnable fiber. Why this catches bugs a plain CPU port would not:
 *  - the kernel's real barrier structure is executed: a __syncthreads or shuffle that not all threads
 *    (or not all 32 lanes of a warp) reach is reported as a deadlock instead of silently passing;
 *  - lanes of a warp calling different shuffle kinds at the same time (divergent shuffles) abort;
 *  - the order in which fibers run between barriers is a policy (forward, reverse, seeded random:
 *    env CORNERPOOL_EMULATION_SCHEDULE=forward|reverse|random:<seed>), so a missing barrier shows up as
 *    an order-dependent result when a test runs several schedules;
 *  - shared memory starts filled with 0xFF bytes (a NaN for float), so reading it before writing it
 *    poisons the output;
 *  - a vector access at an address that is not a multiple of its size aborts (the GPU faults there);
 *  - a launch asking for more dynamic shared memory than the kernel's limit (48 KiB, or what
 *    setMaxDynamicSharedBytes raised it to, at most the device's opt-in maximum) fails like CUDA's, so a
 *    host-side cache that forgets to raise the limit shows up; device-attribute queries and attribute
 *    sets are counted (stats()) so tests can check they are not repeated at every launch.
 * Device attributes: CORNERPOOL_EMULATION_SM_COUNT (default 132, an H100) and
 * CORNERPOOL_EMULATION_SHARED_OPTIN (bytes, default 49152: no opt-in beyond the default).
 * What it does not model: memory-model subtleties beyond barrier ordering, warp-synchronous code
 * without *_sync intrinsics, performance. Blocks run one after another (they are independent in CUDA).
 */
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace simt
{

struct Dim3
{
    unsigned x{1}, y{1}, z{1};
};

[[noreturn]] inline void fail(char const* what)
{
    std::fprintf(stderr, "simt emulation: %s\n", what);
    std::fflush(stderr);
    std::abort();
}

struct Barrier
{
    uint64_t generation{0};
    unsigned arrived{0};
};

struct Fiber
{
    ucontext_t context{};
    std::unique_ptr<char[]> stack; // uninitialised on purpose: zero-filling 256 stacks per launch is slow
    size_t stackSize{0};
    Dim3 threadIdx;
    bool finished{false};
    Barrier const* waitingOn{nullptr};
    uint64_t waitingForGenerationAfter{0};
};

// Exchange slots are double-buffered by the parity of each lane's exchange count: a lane can only
// reach exchange k+2 (same buffer as k) after exchange k+1's barrier, which every lane enters only after
// reading exchange k. So one barrier per shuffle suffices.
struct Warp
{
    Barrier barrier;
    uint64_t slots[2][32]{};
    int opcode[2][32]{};
    unsigned exchanges[32]{};
};

struct Emulator
{
    Dim3 gridDim, blockDim, blockIdx;
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    Barrier blockBarrier;
    std::vector<unsigned char> sharedMemory;
    std::function<void()> body;
    ucontext_t schedulerContext{};
    int current{-1};
    std::string schedule{"forward"};
    std::mt19937 rng{0};
    std::map<void const*, int> maxDynamicShared; // per kernel, as cudaFuncSetAttribute left it
};

struct Stats
{
    int deviceQueries{0};
    int attributeSets{0};
    int launches{0};
};

inline Stats& stats()
{
    static Stats instance;
    return instance;
}

constexpr int kDefaultDynamicSharedBytes = 48 * 1024;
constexpr int kErrorInvalidValue = 1; // cudaErrorInvalidValue

inline Emulator& emulator()
{
    static Emulator instance;
    return instance;
}

inline Fiber& currentFiber()
{
    Emulator& e = emulator();
    if (e.current < 0)
    {
        fail("CUDA built-in used outside a kernel launch");
    }
    return e.fibers[static_cast<size_t>(e.current)];
}

inline void yieldToScheduler()
{
    Emulator& e = emulator();
    swapcontext(&e.fibers[static_cast<size_t>(e.current)].context, &e.schedulerContext);
}

//! Arrive at a barrier of `participants` fibers; return once all of them have arrived.
inline void arriveAndWait(Barrier& barrier, unsigned participants)
{
    uint64_t const generation = barrier.generation;
    if (++barrier.arrived == participants)
    {
        barrier.arrived = 0;
        ++barrier.generation;
        return;
    }
    Fiber& self = currentFiber();
    self.waitingOn = &barrier;
    self.waitingForGenerationAfter = generation;
    yieldToScheduler();
}

inline void fiberEntry()
{
    Emulator& e = emulator();
    e.body();
    e.fibers[static_cast<size_t>(e.current)].finished = true;
    // returning resumes uc_link = the scheduler
}

inline void setScheduleFromEnvironment()
{
    Emulator& e = emulator();
    char const* env = std::getenv("CORNERPOOL_EMULATION_SCHEDULE");
    e.schedule = env != nullptr ? env : "forward";
    if (e.schedule.rfind("random:", 0) == 0)
    {
        e.rng.seed(static_cast<unsigned>(std::strtoul(e.schedule.c_str() + 7, nullptr, 10)));
    }
    else if (e.schedule != "forward" && e.schedule != "reverse")
    {
        fail("CORNERPOOL_EMULATION_SCHEDULE must be forward, reverse or random:<seed>");
    }
}

inline std::vector<int> scheduleOrder(int nbFibers)
{
    Emulator& e = emulator();
    std::vector<int> order(static_cast<size_t>(nbFibers));
    for (int i = 0; i < nbFibers; ++i)
    {
        order[static_cast<size_t>(i)] = i;
    }
    if (e.schedule == "reverse")
    {
        std::reverse(order.begin(), order.end());
    }
    else if (e.schedule != "forward")
    {
        std::shuffle(order.begin(), order.end(), e.rng);
    }
    return order;
}

inline void runBlock()
{
    Emulator& e = emulator();
    int const nbThreads = static_cast<int>(e.blockDim.x * e.blockDim.y * e.blockDim.z);
    std::fill(e.sharedMemory.begin(), e.sharedMemory.end(), static_cast<unsigned char>(0xFF));
    e.blockBarrier = Barrier{};
    for (Warp& w : e.warps)
    {
        w = Warp{};
    }
    for (int t = 0; t < nbThreads; ++t)
    {
        Fiber& f = e.fibers[static_cast<size_t>(t)];
        f.finished = false;
        f.waitingOn = nullptr;
        f.threadIdx.x = static_cast<unsigned>(t) % e.blockDim.x;
        f.threadIdx.y = (static_cast<unsigned>(t) / e.blockDim.x) % e.blockDim.y;
        f.threadIdx.z = static_cast<unsigned>(t) / (e.blockDim.x * e.blockDim.y);
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack.get();
        f.context.uc_stack.ss_size = f.stackSize;
        f.context.uc_link = &e.schedulerContext;
        makecontext(&f.context, &fiberEntry, 0);
    }
    int finished = 0;
    while (finished < nbThreads)
    {
        bool progressed = false;
        for (int t : scheduleOrder(nbThreads))
        {
            Fiber& f = e.fibers[static_cast<size_t>(t)];
            if (f.finished)
            {
                continue;
            }
            if (f.waitingOn != nullptr)
            {
                if (f.waitingOn->generation == f.waitingForGenerationAfter)
                {
                    continue; // its barrier has not completed yet
                }
                f.waitingOn = nullptr;
            }
            e.current = t;
            swapcontext(&e.schedulerContext, &f.context);
            e.current = -1;
            progressed = true;
            if (f.finished)
            {
                ++finished;
            }
        }
        if (!progressed)
        {
            fail("deadlock: some threads wait at a barrier (__syncthreads or a warp shuffle) that other "
                 "threads of the block/warp never reach (divergent barrier)");
        }
    }
}

//! Emulated kernel launch: runs every block of the grid, one after another. Returns 0, or
//! cudaErrorInvalidValue (nothing run) when the dynamic shared memory exceeds the kernel's limit.
template <typename... KernelArgs, typename... Args>
int launch(Dim3 grid, Dim3 block, size_t sharedBytes, void (*kernel)(KernelArgs...), Args... args)
{
    Emulator& e = emulator();
    unsigned const nbThreads = block.x * block.y * block.z;
    if (nbThreads == 0 || nbThreads % 32 != 0 || nbThreads > 1024)
    {
        fail("block size must be a non-zero multiple of 32 and at most 1024 in this emulation");
    }
    auto const limit = e.maxDynamicShared.find(reinterpret_cast<void const*>(kernel));
    int const allowed = limit == e.maxDynamicShared.end() ? kDefaultDynamicSharedBytes : limit->second;
    if (sharedBytes > static_cast<size_t>(allowed))
    {
        return kErrorInvalidValue;
    }
    ++stats().launches;
    setScheduleFromEnvironment();
    e.gridDim = grid;
    e.blockDim = block;
    e.fibers.clear();
    e.fibers.resize(nbThreads);
    for (Fiber& f : e.fibers)
    {
        f.stackSize = 128 * 1024;
        f.stack.reset(new char[f.stackSize]);
    }
    e.warps.assign(nbThreads / 32, Warp{});
    e.sharedMemory.assign(sharedBytes, 0);
    e.body = [kernel, args...]() { kernel(args...); };
    for (unsigned z = 0; z < grid.z; ++z)
    {
        for (unsigned y = 0; y < grid.y; ++y)
        {
            for (unsigned x = 0; x < grid.x; ++x)
            {
                e.blockIdx = Dim3{x, y, z};
                runBlock();
            }
        }
    }
    e.body = nullptr;
    return 0;
}

inline unsigned linearThreadIndex()
{
    Emulator& e = emulator();
    Dim3 const t = currentFiber().threadIdx;
    return t.x + e.blockDim.x * (t.y + e.blockDim.y * t.z);
}

inline void syncthreads()
{
    Emulator& e = emulator();
    arriveAndWait(e.blockBarrier, e.blockDim.x * e.blockDim.y * e.blockDim.z);
}

enum Opcode : int
{
    kShuffleUp = 1,
    kShuffleIndexed = 2,
};

//! One warp-wide exchange: every lane deposits `value`, then reads lane `sourceLane(lane)`'s value
//! (or keeps its own when the source is out of range, as CUDA does for __shfl_up_sync).
template <typename T, typename SourceLane>
T warpExchange(unsigned mask, T value, int opcode, SourceLane sourceLane)
{
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a type wider than 64 bits");
    if (mask != 0xffffffffu)
    {
        fail("only full-warp shuffles (mask 0xffffffff) are emulated");
    }
    Emulator& e = emulator();
    unsigned const thread = linearThreadIndex();
    Warp& w = e.warps[thread / 32];
    int const lane = static_cast<int>(thread % 32);
    unsigned const buffer = w.exchanges[lane]++ & 1u;
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    w.slots[buffer][lane] = bits;
    w.opcode[buffer][lane] = opcode;
    arriveAndWait(w.barrier, 32);
    for (int other = 0; other < 32; ++other)
    {
        if (w.opcode[buffer][other] != opcode)
        {
            fail("divergent warp shuffle: lanes of one warp called different shuffles at the same time");
        }
    }
    int const source = sourceLane(lane);
    T result = value;
    if (source >= 0 && source < 32)
    {
        std::memcpy(&result, &w.slots[buffer][source], sizeof(T));
    }
    return result;
}

inline void checkWidth(int width)
{
    if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    {
        fail("shuffle width must be a power of two from 1 to 32");
    }
}

//! CUDA: the warp is split into segments of `width` lanes; a lane reads lane - delta of its segment, or
//! keeps its own value when that is before the segment's first lane. delta and width are part of the
//! opcode: lanes calling with different ones at once are a divergent shuffle.
template <typename T>
T shuffleUp(unsigned mask, T value, unsigned delta, int width)
{
    checkWidth(width);
    return warpExchange(mask, value, kShuffleUp + 16 * static_cast<int>(delta) + 4096 * width,
        [delta, width](int lane) {
            int const source = lane - static_cast<int>(delta);
            return source >= (lane & ~(width - 1)) ? source : lane;
        });
}

//! CUDA: a lane reads lane (sourceLane mod width) of its own segment of `width` lanes.
template <typename T>
T shuffleIndexed(unsigned mask, T value, int sourceLane, int width)
{
    checkWidth(width);
    return warpExchange(mask, value, kShuffleIndexed + 4096 * width,
        [sourceLane, width](int lane) { return (lane & ~(width - 1)) + (sourceLane & (width - 1)); });
}

template <typename T>
T* dynamicShared()
{
    return reinterpret_cast<T*>(emulator().sharedMemory.data());
}

//! A naturally aligned vector access (float4, uint2, ...): on the GPU a misaligned one faults.
inline void checkAligned(void const* p, size_t bytes)
{
    if (reinterpret_cast<uintptr_t>(p) % bytes != 0)
    {
        fail("misaligned vector access (the address is not a multiple of the access size)");
    }
}

template <typename V>
V loadAligned(void const* p)
{
    checkAligned(p, sizeof(V));
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
}

template <typename V>
void storeAligned(void* p, V const& v)
{
    checkAligned(p, sizeof(V));
    std::memcpy(p, &v, sizeof(V));
}

//! PTX max.NaN.f32 (FMNMX.NAN, sm_80+): the canonical NaN 0x7fffffff when either input is NaN, else the
//! larger value, -0 ordered below +0.
inline float maxNaN(float a, float b)
{
    if (std::isnan(a) || std::isnan(b))
    {
        uint32_t const canonical = 0x7fffffffu;
        float nan;
        std::memcpy(&nan, &canonical, sizeof(nan));
        return nan;
    }
    if (a == b)
    {
        return std::signbit(a) ? b : a;
    }
    return a > b ? a : b;
}

enum DeviceAttribute
{
    kMultiProcessorCount,
    kMaxSharedMemoryPerBlockOptin,
};

inline int environmentInt(char const* name, int fallback)
{
    char const* value = std::getenv(name);
    return value != nullptr ? std::atoi(value) : fallback;
}

inline int deviceAttributeValue(DeviceAttribute attribute)
{
    return attribute == kMultiProcessorCount ? environmentInt("CORNERPOOL_EMULATION_SM_COUNT", 132)
                                             : environmentInt("CORNERPOOL_EMULATION_SHARED_OPTIN", kDefaultDynamicSharedBytes);
}

//! cudaDeviceGetAttribute of the emulated device (counted in stats()).
inline int deviceAttribute(DeviceAttribute attribute)
{
    ++stats().deviceQueries;
    return deviceAttributeValue(attribute);
}

//! cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) (counted in stats()).
inline int setMaxDynamicSharedBytes(void const* kernel, int bytes)
{
    ++stats().attributeSets;
    if (bytes < 0 || bytes > deviceAttributeValue(kMaxSharedMemoryPerBlockOptin))
    {
        return kErrorInvalidValue;
    }
    emulator().maxDynamicShared[kernel] = bytes;
    return 0;
}

} // namespace simt

// The CUDA spellings the kernel source uses.
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#define threadIdx (::simt::currentFiber().threadIdx)
#define blockIdx (::simt::emulator().blockIdx)
#define blockDim (::simt::emulator().blockDim)
#define gridDim (::simt::emulator().gridDim)
#define __syncthreads() ::simt::syncthreads()

template <typename T>
T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = 32)
{
    return ::simt::shuffleUp(mask, value, delta, width);
}

template <typename T>
T __shfl_sync(unsigned mask, T value, int sourceLane, int width = 32)
{
    return ::simt::shuffleIndexed(mask, value, sourceLane, width);
}
