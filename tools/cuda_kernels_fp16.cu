// The CUDA launchers and kernels of every op for lvt::fp16 storage, compiled once for lvt's own build
// (library lvt_cuda_kernels; see include/lvt/ops/cuda_instances.hpp).
#define LVT_CUDA_INSTANTIATE lvt::fp16
#include "lvt/ops/cuda_instances.hpp"
