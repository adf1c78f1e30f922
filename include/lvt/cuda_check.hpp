#pragma once
// LVT_CUDA_CHECK(call): a failed CUDA runtime call throws lvt::Error naming the file, the line
// and the call. Host code; needs the CUDA toolkit's headers.
#include <cuda_runtime.h>

#include <string>

#include "lvt/error.hpp"

namespace lvt::cuda {

inline std::string cuda_error_text(cudaError_t e, const char* op, const char* file, int line) {
  return std::string(file) + ":" + std::to_string(line) + ": " + op + " failed: " +
         cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

}  // namespace lvt::cuda

#define LVT_CUDA_CHECK(call)                                                                   \
  do {                                                                                         \
    const cudaError_t lvt_cuda_err_ = (call);                                                  \
    if (lvt_cuda_err_ != cudaSuccess)                                                          \
      throw ::lvt::Error(::lvt::cuda::cuda_error_text(lvt_cuda_err_, #call, __FILE__, __LINE__)); \
  } while (0)

namespace lvt::cuda {
// After a kernel launch: the launch's own error (a bad configuration), named by the kernel.
inline void check_launch(const char* kernel, const char* file, int line) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw Error(cuda_error_text(e, kernel, file, line));
}
}  // namespace lvt::cuda

#define LVT_CUDA_LAUNCHED(kernel) ::lvt::cuda::check_launch(kernel, __FILE__, __LINE__)
