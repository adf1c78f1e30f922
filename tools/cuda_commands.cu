// `lvt train` / `lvt eval` / `lvt generate` on the CUDA backend: the bodies of train_job.hpp and
// generate_job.hpp instantiated for bf16 and fp16 storage (nvcc compiles this file only; the rest
// of the command, the tokenizer included, is g++).
#include "lvt/backend/cuda.hpp"
#include "generate_job.hpp"
#include "train_job.hpp"

int lvt_train_cuda(lvt::cli::TrainJob& job) {
  using namespace lvt;
  if (job.options.precision == DType::fp16) return cli::train_job<BasicRun<backend::CudaBackend<fp16>>>(job);
  return cli::train_job<BasicRun<backend::CudaBackend<bf16>>>(job);
}

int lvt_eval_cuda(lvt::cli::EvalJob& job) {
  using namespace lvt;
  if (job.options.precision == DType::fp16) return cli::eval_job<BasicRun<backend::CudaBackend<fp16>>>(job);
  return cli::eval_job<BasicRun<backend::CudaBackend<bf16>>>(job);
}

lvt::GenerateResult lvt_generate_cuda(lvt::cli::GenerateJob& job) {
  using namespace lvt;
  if (job.options.precision == DType::fp16)
    return cli::generate_job<BasicRun<backend::CudaBackend<fp16>>>(job);
  return cli::generate_job<BasicRun<backend::CudaBackend<bf16>>>(job);
}
