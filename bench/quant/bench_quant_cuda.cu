// The quantization benchmarks built by nvcc (with the CUDA kernels and GPU benchmarks).
#include "bench_quant.cpp"
