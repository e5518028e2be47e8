// The real kernel source, compiled by the host C++ compiler in emulation (see simtHostEmulation.h), so the
// plugin unit test can run enqueue on host memory without a GPU. Test builds only.
#define CORNERPOOL_HOST_EMULATION 1
#include "cornerPoolPlugin/cornerPoolKernel.cu"
