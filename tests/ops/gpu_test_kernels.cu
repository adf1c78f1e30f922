// Every op's CUDA kernel against its host reference on fresh random inputs: fp32 storage to
// 1e-5 relative, bf16 storage to 1e-2 (fp32 math in both). Without a GPU: exit 77 (skipped).
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <vector>

#include "lvt/ops/adamw.hpp"
#include "lvt/ops/attention.hpp"
#include "lvt/ops/embedding.hpp"
#include "lvt/ops/residual.hpp"
#include "lvt/ops/rmsnorm.hpp"
#include "lvt/ops/rope.hpp"
#include "lvt/ops/swiglu.hpp"

using namespace lvt;
using lvt::bf16;

namespace {

std::vector<float> random_floats(std::size_t n, std::uint64_t seed, float lo = -1, float hi = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// A device copy of host values in storage S, and back to float.
template <class S>
struct Dev {
  S* p = nullptr;
  std::size_t n = 0;
  explicit Dev(const std::vector<float>& v) : n(v.size()) {
    std::vector<S> s(n);
    for (std::size_t i = 0; i < n; ++i) s[i] = lvt::from_float<S>(v[i]);
    LVT_CUDA_CHECK(cudaMalloc(&p, n * sizeof(S)));
    LVT_CUDA_CHECK(cudaMemcpy(p, s.data(), n * sizeof(S), cudaMemcpyHostToDevice));
  }
  ~Dev() { cudaFree(p); }
  std::vector<float> get() const {
    std::vector<S> s(n);
    LVT_CUDA_CHECK(cudaDeviceSynchronize());
    LVT_CUDA_CHECK(cudaMemcpy(s.data(), p, n * sizeof(S), cudaMemcpyDeviceToHost));
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = lvt::to_float(s[i]);
    return v;
  }
};

// The host reference sees the same storage-rounded inputs the kernel sees.
template <class S>
std::vector<float> rounded(std::vector<float> v) {
  for (float& x : v) x = lvt::to_float(lvt::from_float<S>(x));
  return v;
}

template <class S>
constexpr double tolerance = sizeof(S) == 4 ? 1e-5 : 1e-2;

void check_close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                 const char* what) {
  REQUIRE(got.size() == want.size());
  double max_err = 0, max_ref = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    max_err = std::fmax(max_err, std::fabs(double(got[i]) - want[i]));
    max_ref = std::fmax(max_ref, std::fabs(double(want[i])));
  }
  INFO(what << ": max abs error " << max_err << ", max |reference| " << max_ref);
  CHECK(max_ref > 0);
  CHECK(max_err <= tol * max_ref);
}

template <class S>
void rmsnorm_case() {
  const int rows = 37, dim = 1000;
  const auto x = rounded<S>(random_floats(rows * dim, 1)), w = rounded<S>(random_floats(dim, 2, 0.5f, 1.5f));
  const auto dy = rounded<S>(random_floats(rows * dim, 3)), dx0 = rounded<S>(random_floats(rows * dim, 4));
  std::vector<float> out(x.size()), rstd(rows), dx = dx0;
  ops::rmsnorm::forward(out.data(), rstd.data(), x.data(), w.data(), rows, dim, 1e-5);
  ops::rmsnorm::backward(dx.data(), static_cast<float*>(nullptr), dy.data(), x.data(), w.data(), rstd.data(), rows, dim);
  Dev<S> dx_d(x), dw(w), dout{std::vector<float>(x.size())}, ddy(dy), ddx(dx0);
  Dev<float> drstd{std::vector<float>(rows)};
  ops::rmsnorm::cuda::forward(dout.p, drstd.p, dx_d.p, dw.p, rows, dim, 1e-5, nullptr);
  ops::rmsnorm::cuda::backward(ddx.p, ddy.p, dx_d.p, dw.p, drstd.p, rows, dim, nullptr);
  check_close(dout.get(), out, tolerance<S>, "rmsnorm forward");
  check_close(drstd.get(), rstd, 1e-5, "rmsnorm rstd");
  check_close(ddx.get(), dx, tolerance<S>, "rmsnorm backward");
}

template <class S>
void rope_case() {
  ModelConfig c{.arch = Arch::llama, .layers = 1, .hidden = 256, .heads = 4, .kv_heads = 4,
                .head_dim = 64, .ffn = 512, .vocab = 10, .rope_theta = 500000.0,
                .rope_scaling = RopeScaling::llama3, .rope_factor = 8.0,
                .rope_original_max_position = 64, .partial_rotary_factor = 0.75,
                .max_position = 512};
  const int B = 2, T = 100, H = 4, D = 64, rot = c.rotary_dim(), half = rot / 2;
  std::vector<float> inv(static_cast<std::size_t>(half)), cs(T * half), sn(T * half);
  ops::rope::inv_freq(inv.data(), c);
  ops::rope::tables(cs.data(), sn.data(), inv.data(), T, half);
  const auto x = rounded<S>(random_floats(B * T * H * D, 5)), dy = rounded<S>(random_floats(x.size(), 6));
  const auto dx0 = rounded<S>(random_floats(x.size(), 7));
  std::vector<float> out(x.size()), dx = dx0;
  ops::rope::forward(out.data(), x.data(), cs.data(), sn.data(), B, T, H, D, rot);
  ops::rope::backward(dx.data(), dy.data(), cs.data(), sn.data(), B, T, H, D, rot);
  Dev<S> dxin(x), dout{std::vector<float>(x.size())}, ddy(dy), ddx(dx0), inplace(x);
  Dev<float> dcos(cs), dsin(sn);
  ops::rope::cuda::forward(dout.p, dxin.p, dcos.p, dsin.p, B, T, H, D, rot, nullptr);
  ops::rope::cuda::forward(inplace.p, inplace.p, dcos.p, dsin.p, B, T, H, D, rot, nullptr);
  ops::rope::cuda::backward(ddx.p, ddy.p, dcos.p, dsin.p, B, T, H, D, rot, nullptr);
  check_close(dout.get(), out, tolerance<S>, "rope forward");
  check_close(inplace.get(), out, tolerance<S>, "rope forward in place");
  check_close(ddx.get(), dx, tolerance<S>, "rope backward");
}

template <class S>
void elementwise_case() {
  const int n = 100003;
  const auto g = rounded<S>(random_floats(n, 8, -4, 4)), u = rounded<S>(random_floats(n, 9));
  const auto dy = rounded<S>(random_floats(n, 10)), d0 = rounded<S>(random_floats(n, 11));
  std::vector<float> out(n), dg = d0, du = d0, sum(n);
  ops::swiglu::forward(out.data(), g.data(), u.data(), 1, n);
  ops::swiglu::backward(dg.data(), du.data(), dy.data(), g.data(), u.data(), 1, n);
  ops::residual::forward(sum.data(), g.data(), u.data(), n);
  Dev<S> dgate(g), dup(u), dout{std::vector<float>(n)}, ddy(dy), ddg(d0), ddu(d0),
      dsum{std::vector<float>(n)};
  ops::swiglu::cuda::forward(dout.p, dgate.p, dup.p, n, nullptr);
  ops::swiglu::cuda::backward(ddg.p, ddu.p, ddy.p, dgate.p, dup.p, n, nullptr);
  ops::residual::cuda::forward(dsum.p, dgate.p, dup.p, n, nullptr);
  check_close(dout.get(), out, tolerance<S>, "swiglu forward");
  check_close(ddg.get(), dg, tolerance<S>, "swiglu backward (gate)");
  check_close(ddu.get(), du, tolerance<S>, "swiglu backward (up)");
  check_close(dsum.get(), sum, tolerance<S>, "residual add");
}

template <class S>
void embedding_case() {
  const int vocab = 500, dim = 96, n = 333;
  const auto table = rounded<S>(random_floats(vocab * dim, 12));
  std::vector<std::int32_t> tok(n);
  std::mt19937_64 rng(13);
  for (auto& t : tok) t = std::int32_t(rng() % vocab);
  std::vector<float> out(n * dim);
  ops::embedding::forward(out.data(), tok.data(), table.data(), n, vocab, dim);
  Dev<S> dt(table), dout{std::vector<float>(out.size())};
  std::int32_t* dtok = nullptr;
  LVT_CUDA_CHECK(cudaMalloc(&dtok, n * 4));
  LVT_CUDA_CHECK(cudaMemcpy(dtok, tok.data(), n * 4, cudaMemcpyHostToDevice));
  ops::embedding::cuda::forward(dout.p, dtok, dt.p, n, dim, nullptr);
  CHECK(dout.get() == out);  // a gather is exact
  cudaFree(dtok);
}

template <class S>
void attention_case(int D) {
  const int B = 2, T = 37, H = 4, KV = 2;
  const std::size_t nq = std::size_t(B) * T * H * D, nk = std::size_t(B) * T * KV * D;
  const auto q = rounded<S>(random_floats(nq, 20)), k = rounded<S>(random_floats(nk, 21));
  const auto v = rounded<S>(random_floats(nk, 22)), dy = rounded<S>(random_floats(nq, 23));
  std::vector<float> out(nq), lse(std::size_t(B) * H * T), row(T), dq(nq, 0.0f), dk(nk, 0.0f), dv(nk, 0.0f);
  ops::attention::forward(out.data(), lse.data(), row.data(), q.data(), k.data(), v.data(), B, T, H, KV, D);
  const auto out_s = rounded<S>(out);  // the device backward reads its own S-rounded output
  ops::attention::backward(dq.data(), dk.data(), dv.data(), row.data(), dy.data(), q.data(), k.data(),
                           v.data(), out_s.data(), lse.data(), B, T, H, KV, D);
  Dev<S> dq_in(q), dk_in(k), dv_in(v), ddy(dy), dout{std::vector<float>(nq)};
  Dev<S> ddq{std::vector<float>(nq)}, ddk{std::vector<float>(nk)}, ddv{std::vector<float>(nk)};
  Dev<float> dlse{std::vector<float>(lse.size())};
  ops::attention::cuda::forward(dout.p, dlse.p, dq_in.p, dk_in.p, dv_in.p, B, T, H, KV, D, nullptr);
  ops::attention::cuda::backward(ddq.p, ddk.p, ddv.p, ddy.p, dq_in.p, dk_in.p, dv_in.p, dout.p,
                                 dlse.p, B, T, H, KV, D, nullptr);
  CAPTURE(D);
  check_close(dout.get(), out, tolerance<S>, "attention forward");
  check_close(dlse.get(), lse, 1e-5, "attention lse");
  check_close(ddq.get(), dq, tolerance<S>, "attention dq");
  check_close(ddk.get(), dk, tolerance<S>, "attention dk");
  check_close(ddv.get(), dv, tolerance<S>, "attention dv");
}

}  // namespace

TEST_CASE("flash-style attention kernels (causal, grouped-query) vs host, head_dim 64/80/96/128") {
  for (int D : {64, 80, 96, 128}) {
    attention_case<float>(D);
    attention_case<bf16>(D);
  }
}

TEST_CASE("rmsnorm kernels vs host, fp32 and bf16") {
  rmsnorm_case<float>();
  rmsnorm_case<bf16>();
}
TEST_CASE("rope kernels (llama3 scaling, partial rotary, in place) vs host") {
  rope_case<float>();
  rope_case<bf16>();
}
TEST_CASE("swiglu and residual kernels vs host") {
  elementwise_case<float>();
  elementwise_case<bf16>();
}
TEST_CASE("embedding gather vs host") {
  embedding_case<float>();
  embedding_case<bf16>();
}
TEST_CASE("fused AdamW over the flat LoRA buffer vs host, three steps") {
  const int n = 50001;
  auto p = random_floats(n, 14), m = random_floats(n, 15, 0, 0.1f), v = random_floats(n, 16, 0, 0.01f);
  const auto g = random_floats(n, 17);
  Dev<float> dp(p), dm(m), dv(v), dg(g);
  ops::adamw::Hyper h{1e-3, 0.9, 0.999, 1e-8, 0.01};
  for (int s = 1; s <= 3; ++s) {
    ops::adamw::step(p.data(), m.data(), v.data(), g.data(), n, h, s);
    ops::adamw::cuda::step(dp.p, dm.p, dv.p, dg.p, n, h, s, nullptr);
  }
  check_close(dp.get(), p, 1e-6, "adamw params");
  check_close(dm.get(), m, 1e-6, "adamw m");
  check_close(dv.get(), v, 1e-6, "adamw v");
}

#include "../gpu_main.hpp"
