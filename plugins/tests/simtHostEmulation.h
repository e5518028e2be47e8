/*
 * simtHostEmulation.h: run a CUDA kernel's own source on the CPU, for tests on machines without a GPU.
 *
 * Included by cornerPoolKernel.cu only when CORNERPOOL_HOST_EMULATION is defined (never in the real
 * build). It stands in for exactly the CUDA built-ins that kernel uses: threadIdx/blockIdx/blockDim/
 * gridDim, __syncthreads, __shfl_up_sync, __shfl_sync, dynamic shared memory and the launch.
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
 *    poisons the output.
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
#include <functional>
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
};

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

//! Emulated kernel launch: runs every block of the grid, one after another.
template <typename... KernelArgs, typename... Args>
void launch(Dim3 grid, Dim3 block, size_t sharedBytes, void (*kernel)(KernelArgs...), Args... args)
{
    Emulator& e = emulator();
    unsigned const nbThreads = block.x * block.y * block.z;
    if (nbThreads == 0 || nbThreads % 32 != 0 || nbThreads > 1024)
    {
        fail("block size must be a non-zero multiple of 32 and at most 1024 in this emulation");
    }
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

template <typename T>
T shuffleUp(unsigned mask, T value, unsigned delta, int width)
{
    if (width != 32)
    {
        fail("only width 32 shuffles are emulated");
    }
    return warpExchange(mask, value, kShuffleUp + 16 * static_cast<int>(delta),
        [delta](int lane) { return lane - static_cast<int>(delta); });
}

template <typename T>
T shuffleIndexed(unsigned mask, T value, int sourceLane, int width)
{
    if (width != 32)
    {
        fail("only width 32 shuffles are emulated");
    }
    return warpExchange(mask, value, kShuffleIndexed, [sourceLane](int) { return sourceLane & 31; });
}

template <typename T>
T* dynamicShared()
{
    return reinterpret_cast<T*>(emulator().sharedMemory.data());
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
