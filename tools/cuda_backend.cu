// The CUDA backend's one instantiation for lvt's own executables (see the end of
// lvt/backend/cuda.hpp): every member of CudaBackend<bf16> and CudaBackend<fp16>, with the
// kernels they launch, compiled here once per target architecture.
#include "lvt/backend/cuda.hpp"

namespace lvt::backend {
template class CudaBackend<bf16>;
template class CudaBackend<fp16>;
}  // namespace lvt::backend
