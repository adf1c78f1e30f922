// The CUDA launchers and kernels of every op for lvt::bf16 storage, compiled once for lvt's own build
// (library lvt_cuda_kernels; see include/lvt/ops/cuda_instances.hpp).
#define LVT_CUDA_INSTANTIATE lvt::bf16
#include "lvt/ops/cuda_instances.hpp"
