/*
 * Command-line driver for the corner-pool kernels built in host emulation (-DCORNERPOOL_HOST_EMULATION,
 * see simtHostEmulation.h). The Python test writes inputs as raw little-endian float32/float16 files,
 * runs this program, and compares the output file with an independent NumPy/PyTorch reference.
 *
 *   kernelEmulation OP DTYPE N C H W OUT IN [IN2]
 *     OP    top_left | bottom_right (fused: IN = a, IN2 = b) | top | bottom | left | right (IN only)
 *     DTYPE float32 | float16
 *     OUT   "-": no buffers at all (a 64-byte dummy for every tensor), for calls that must be refused
 *           before any element is touched, e.g. W = 2^30
 * Environment: CORNERPOOL_TEST_OFFSET_BYTES=k moves every tensor k bytes past an aligned address (to
 * reach the kernel's unaligned path); CORNERPOOL_TEST_REPEAT=n calls the entry point n times.
 * Prints "stats: device_queries=D attribute_sets=S launches=L" (simtHostEmulation.h's counters).
 * Exit status: 0 on success, 3 if the kernel entry point returned a non-zero status (printed), 2 on
 * usage errors.
 */
#include "cornerPoolKernel.h"
#include "simtHostEmulation.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace
{

bool readFile(char const* path, unsigned char* data, size_t size)
{
    FILE* f = std::fopen(path, "rb");
    if (f == nullptr)
    {
        return false;
    }
    size_t const got = std::fread(data, 1, size, f);
    bool const atEnd = std::fgetc(f) == EOF;
    std::fclose(f);
    return got == size && atEnd;
}

bool writeFile(char const* path, unsigned char const* data, size_t size)
{
    FILE* f = std::fopen(path, "wb");
    if (f == nullptr)
    {
        return false;
    }
    size_t const put = std::fwrite(data, 1, size, f);
    return std::fclose(f) == 0 && put == size;
}

int environmentInt(char const* name, int fallback)
{
    char const* value = std::getenv(name);
    return value != nullptr ? std::atoi(value) : fallback;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 9 && !(argc == 8 && std::string(argv[7]) == "-"))
    {
        std::fprintf(stderr, "usage: %s OP DTYPE N C H W OUT IN [IN2]\n", argv[0]);
        return 2;
    }
    std::string const op = argv[1];
    std::string const dtypeName = argv[2];
    int const N = std::atoi(argv[3]);
    int const C = std::atoi(argv[4]);
    int const H = std::atoi(argv[5]);
    int const W = std::atoi(argv[6]);
    int const dtype = dtypeName == "float16" ? CORNER_POOL_FLOAT16 : CORNER_POOL_FLOAT32;
    if (dtypeName != "float16" && dtypeName != "float32")
    {
        std::fprintf(stderr, "unknown dtype %s\n", dtypeName.c_str());
        return 2;
    }
    // Negative dimensions go to the kernel entry unchanged (it must reject them), with no buffers.
    bool const validShape = N >= 0 && C >= 0 && H >= 0 && W >= 0;
    bool const noBuffers = std::string(argv[7]) == "-";
    size_t const bytes = validShape && !noBuffers
        ? static_cast<size_t>(N) * C * H * W * (dtype == CORNER_POOL_FLOAT16 ? 2 : 4)
        : 0;
    bool const fused = op == "top_left" || op == "bottom_right";
    if (fused && argc != 10 && !noBuffers)
    {
        std::fprintf(stderr, "fused modes take two inputs\n");
        return 2;
    }
    // Each tensor at `offset` bytes past a 64-byte aligned address.
    size_t const offset = static_cast<size_t>(environmentInt("CORNERPOOL_TEST_OFFSET_BYTES", 0));
    auto alignedStorage = [&](size_t size) { return std::vector<unsigned char>(size + offset + 64); };
    auto at = [&](std::vector<unsigned char>& storage) {
        uintptr_t const base = (reinterpret_cast<uintptr_t>(storage.data()) + 63) / 64 * 64;
        return reinterpret_cast<unsigned char*>(base + offset);
    };
    std::vector<unsigned char> firstStorage = alignedStorage(bytes), secondStorage = alignedStorage(fused ? bytes : 0),
                               outStorage = alignedStorage(bytes);
    unsigned char* const first = at(firstStorage);
    unsigned char* const second = at(secondStorage);
    unsigned char* const out = at(outStorage);
    std::memset(out, 0xAB, bytes);
    if (validShape && !noBuffers && (!readFile(argv[8], first, bytes) || (fused && !readFile(argv[9], second, bytes))))
    {
        std::fprintf(stderr, "cannot read inputs of %zu bytes each\n", bytes);
        return 2;
    }
    int status = 0;
    int const repeat = environmentInt("CORNERPOOL_TEST_REPEAT", 1);
    for (int i = 0; i < repeat && status == 0; ++i)
    {
        if (fused)
        {
            int const mode = op == "top_left" ? CORNER_POOL_TOP_LEFT : CORNER_POOL_BOTTOM_RIGHT;
            status = cornerPoolForward(mode, dtype, first, second, out, N, C, H, W, nullptr);
        }
        else
        {
            int direction = -1;
            if (op == "top")
                direction = CORNER_POOL_TOP;
            else if (op == "bottom")
                direction = CORNER_POOL_BOTTOM;
            else if (op == "left")
                direction = CORNER_POOL_LEFT;
            else if (op == "right")
                direction = CORNER_POOL_RIGHT;
            else if (op != "invalid")
            {
                std::fprintf(stderr, "unknown op %s\n", op.c_str());
                return 2;
            }
            status = cornerPoolDirectional(direction, dtype, first, out, N, C, H, W, nullptr);
        }
    }
    simt::Stats const& stats = simt::stats();
    std::printf("stats: device_queries=%d attribute_sets=%d launches=%d\n", stats.deviceQueries, stats.attributeSets,
        stats.launches);
    if (status != 0)
    {
        std::printf("status %d: %s\n", status, cornerPoolStatusString(status));
        return 3;
    }
    if (noBuffers)
    {
        return 0;
    }
    if (!writeFile(argv[7], out, bytes))
    {
        std::fprintf(stderr, "cannot write %s\n", argv[7]);
        return 2;
    }
    return 0;
}
