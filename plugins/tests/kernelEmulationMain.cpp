/*
 * Command-line driver for the corner-pool kernels built in host emulation (-DCORNERPOOL_HOST_EMULATION,
 * see simtHostEmulation.h). The Python test writes inputs as raw little-endian float32/float16 files,
 * runs this program, and compares the output file with an independent NumPy/PyTorch reference.
 *
 *   kernelEmulation OP DTYPE N C H W OUT IN [IN2]
 *     OP    top_left | bottom_right (fused: IN = a, IN2 = b) | top | bottom | left | right (IN only)
 *     DTYPE float32 | float16
 * Exit status: 0 on success, 3 if the kernel entry point returned a non-zero status (printed), 2 on
 * usage errors.
 */
#include "cornerPoolKernel.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace
{

bool readFile(char const* path, std::vector<unsigned char>& data)
{
    FILE* f = std::fopen(path, "rb");
    if (f == nullptr)
    {
        return false;
    }
    size_t const got = std::fread(data.data(), 1, data.size(), f);
    bool const atEnd = std::fgetc(f) == EOF;
    std::fclose(f);
    return got == data.size() && atEnd;
}

bool writeFile(char const* path, std::vector<unsigned char> const& data)
{
    FILE* f = std::fopen(path, "wb");
    if (f == nullptr)
    {
        return false;
    }
    size_t const put = std::fwrite(data.data(), 1, data.size(), f);
    return std::fclose(f) == 0 && put == data.size();
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 9)
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
    size_t const bytes
        = validShape ? static_cast<size_t>(N) * C * H * W * (dtype == CORNER_POOL_FLOAT16 ? 2 : 4) : 0;
    bool const fused = op == "top_left" || op == "bottom_right";
    if (fused && argc != 10)
    {
        std::fprintf(stderr, "fused modes take two inputs\n");
        return 2;
    }
    std::vector<unsigned char> first(bytes), second(fused ? bytes : 0), out(bytes, 0xAB);
    if (validShape && (!readFile(argv[8], first) || (fused && !readFile(argv[9], second))))
    {
        std::fprintf(stderr, "cannot read inputs of %zu bytes each\n", bytes);
        return 2;
    }
    int status = 0;
    if (fused)
    {
        int const mode = op == "top_left" ? CORNER_POOL_TOP_LEFT : CORNER_POOL_BOTTOM_RIGHT;
        status = cornerPoolForward(mode, dtype, first.data(), second.data(), out.data(), N, C, H, W, nullptr);
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
        status = cornerPoolDirectional(direction, dtype, first.data(), out.data(), N, C, H, W, nullptr);
    }
    if (status != 0)
    {
        std::printf("status %d: %s\n", status, cornerPoolStatusString(status));
        return 3;
    }
    if (!writeFile(argv[7], out))
    {
        std::fprintf(stderr, "cannot write %s\n", argv[7]);
        return 2;
    }
    return 0;
}
