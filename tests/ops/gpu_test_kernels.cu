// Every op's CUDA kernel against its host reference on fresh random inputs: fp32 storage to
// 1e-5 relative, bf16 / fp16 storage to 1e-2 (fp32 math in both); the tiled tensor-core attention
// also against the simple attention kernels; attention and RoPE over packed rows (random
// positions) too. Without a GPU: exit 77 (skipped).
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

#include "lvt/ops/adamw.hpp"
#include "lvt/ops/attention.hpp"
#include "lvt/ops/decode_attention.hpp"
#include "lvt/ops/embedding.hpp"
#include "lvt/ops/residual.hpp"
#include "lvt/ops/rmsnorm.hpp"
#include "lvt/ops/rope.hpp"
#include "lvt/ops/swiglu.hpp"
#include "../gpu_util.hpp"

using namespace lvt;
using namespace lvt::test;
using lvt::bf16;
using lvt::fp16;

namespace {

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

template <class S>
constexpr double tolerance = sizeof(S) == 4 ? 1e-5 : 1e-2;

// Positions of packed rows [B, T]: examples of random lengths in 1..max_len one after another
// (the last one cut at the row's end); row 1, when there is one, is a single example filling it.
std::vector<std::int32_t> random_positions(int B, int T, int max_len, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::int32_t> pos(std::size_t(B) * std::size_t(T));
  for (int b = 0; b < B; ++b) {
    int left = 0;
    for (int t = 0, p = 0; t < T; ++t, ++p) {
      if (left == 0 && b != 1) {
        left = 1 + int(rng() % std::uint64_t(max_len));
        p = 0;
      }
      if (b != 1) --left;
      pos[std::size_t(b) * std::size_t(T) + std::size_t(t)] = b == 1 ? t : p;
    }
  }
  return pos;
}

// Positions on the device.
struct DevPositions {
  std::int32_t* p = nullptr;
  explicit DevPositions(const std::vector<std::int32_t>& v) {
    if (v.empty()) return;
    LVT_CUDA_CHECK(cudaMalloc(&p, v.size() * 4));
    LVT_CUDA_CHECK(cudaMemcpy(p, v.data(), v.size() * 4, cudaMemcpyHostToDevice));
  }
  ~DevPositions() { cudaFree(p); }
};
const std::int32_t* host_ptr(const std::vector<std::int32_t>& v) { return v.empty() ? nullptr : v.data(); }

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
void rope_case(const std::vector<std::int32_t>& positions = {}) {
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
  REQUIRE((positions.empty() || positions.size() == std::size_t(B * T)));
  const std::int32_t* hp = host_ptr(positions);
  ops::rope::forward(out.data(), x.data(), cs.data(), sn.data(), B, T, H, D, rot, hp);
  ops::rope::backward(dx.data(), dy.data(), cs.data(), sn.data(), B, T, H, D, rot, hp);
  Dev<S> dxin(x), dout{std::vector<float>(x.size())}, ddy(dy), ddx(dx0), inplace(x);
  Dev<float> dcos(cs), dsin(sn);
  const DevPositions dpos(positions);
  INFO((positions.empty() ? "positions 0..T-1" : "packed positions"));
  ops::rope::cuda::forward(dout.p, dxin.p, dcos.p, dsin.p, B, T, H, D, rot, nullptr, dpos.p);
  ops::rope::cuda::forward(inplace.p, inplace.p, dcos.p, dsin.p, B, T, H, D, rot, nullptr, dpos.p);
  ops::rope::cuda::backward(ddx.p, ddy.p, dcos.p, dsin.p, B, T, H, D, rot, nullptr, dpos.p);
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
void attention_case(int D, const std::vector<std::int32_t>& positions = {}) {
  const int B = 2, T = 37, H = 4, KV = 2;
  REQUIRE((positions.empty() || positions.size() == std::size_t(B * T)));
  const std::int32_t* hp = host_ptr(positions);
  const DevPositions dpos(positions);
  const std::size_t nq = std::size_t(B) * T * H * D, nk = std::size_t(B) * T * KV * D;
  const auto q = rounded<S>(random_floats(nq, 20)), k = rounded<S>(random_floats(nk, 21));
  const auto v = rounded<S>(random_floats(nk, 22)), dy = rounded<S>(random_floats(nq, 23));
  std::vector<float> out(nq), lse(std::size_t(B) * H * T), row(std::size_t(ops::attention::scratch_elems(B, T, H, KV, D, 1))), dq(nq, 0.0f), dk(nk, 0.0f), dv(nk, 0.0f);
  ops::attention::forward(out.data(), lse.data(), row.data(), q.data(), k.data(), v.data(), B, T, H, KV, D, hp);
  const auto out_s = rounded<S>(out);  // the device backward reads its own S-rounded output
  ops::attention::backward(dq.data(), dk.data(), dv.data(), row.data(), dy.data(), q.data(), k.data(),
                           v.data(), out_s.data(), lse.data(), B, T, H, KV, D, hp);
  Dev<S> dq_in(q), dk_in(k), dv_in(v), ddy(dy), dout{std::vector<float>(nq)};
  Dev<S> ddq{std::vector<float>(nq)}, ddk{std::vector<float>(nk)}, ddv{std::vector<float>(nk)};
  Dev<float> dlse{std::vector<float>(lse.size())};
  ops::attention::cuda::forward(dout.p, dlse.p, dq_in.p, dk_in.p, dv_in.p, B, T, H, KV, D, nullptr, dpos.p);
  ops::attention::cuda::backward(ddq.p, ddk.p, ddv.p, ddy.p, dq_in.p, dk_in.p, dv_in.p, dout.p,
                                 dlse.p, B, T, H, KV, D, nullptr, dpos.p);
  CAPTURE(D);
  INFO((positions.empty() ? "causal" : "packed positions"));
  check_close(dout.get(), out, tolerance<S>, "attention forward");
  check_close(dlse.get(), lse, 1e-5, "attention lse");
  check_close(ddq.get(), dq, tolerance<S>, "attention dq");
  check_close(ddk.get(), dk, tolerance<S>, "attention dk");
  check_close(ddv.get(), dv, tolerance<S>, "attention dv");
}

// ---- decode attention over a KV cache ---------------------------------------------------------

// `rows` query rows at positions pos0.. against a cache of `context` rows whose positions after
// the last query are NaN (a kernel that reads past its keys fails); out starts NaN (every element
// must be written). Against the host reference on the same S-rounded inputs.
template <class S>
void decode_attention_case(int D, int H, int KV, int rows, int pos0, int context, std::uint64_t seed) {
  INFO(storage_name<S> << " head_dim " << D << ", heads " << H << ", kv_heads " << KV << ", rows "
                       << rows << " at position " << pos0);
  REQUIRE(pos0 + rows <= context);
  const std::size_t nq = std::size_t(rows) * H * D, row_kv = std::size_t(KV) * D;
  const auto q = rounded<S>(random_floats(nq, seed, -2.5f, 2.5f));
  auto k = rounded<S>(random_floats(std::size_t(context) * row_kv, seed + 1));
  auto v = rounded<S>(random_floats(std::size_t(context) * row_kv, seed + 2));
  for (std::size_t i = std::size_t(pos0 + rows) * row_kv; i < k.size(); ++i) k[i] = v[i] = NAN;
  std::vector<float> out(nq), row(std::size_t(ops::decode_attention::scratch_elems(context)));
  ops::decode_attention::forward(out.data(), row.data(), q.data(), k.data(), v.data(), rows, pos0, H,
                                 KV, D);
  Dev<S> dq(q), dk(k), dv(v), dout{std::vector<float>(nq, NAN)};
  ops::decode_attention::cuda::forward(dout.p, dq.p, dk.p, dv.p, rows, pos0, H, KV, D, nullptr);
  check_close(dout.get(), out, tolerance<S>, "decode attention");
}

template <class S>
void decode_attention_suite() {
  std::uint64_t seed = 3000;
  const int context = 1100;
  for (int D : {64, 128, 80, 40, 256})
    for (auto [H, KV] : {std::pair{8, 8}, std::pair{8, 2}, std::pair{6, 1}}) {
      for (int pos0 : {0, 1, 3, 4, 5, 130, 1099})  // one row (a decode step); fewer keys than warps
        decode_attention_case<S>(D, H, KV, 1, pos0, context, seed += 10);
      decode_attention_case<S>(D, H, KV, 64, 0, context, seed += 10);    // a whole prefill chunk
      decode_attention_case<S>(D, H, KV, 16, 64, context, seed += 10);   // the next, part chunk
      decode_attention_case<S>(D, H, KV, 37, 900, context, seed += 10);  // a chunk deep in the cache
    }
}

// ---- tiled (tensor-core) attention -------------------------------------------------------------

// The reference norm has a floor of 1e-3 RMS per element: at seq 1 there is one key,
// dS = p (dP - delta) is exactly 0 and so are the reference dq, dk.
void check_rel_floored(const std::vector<float>& got, const std::vector<float>& want, double tol,
                       const char* what) {
  check_rel(got, want, tol, what, 1e-3);
}
double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * double(x);
  return std::sqrt(s / double(v.size()));
}

// One shape through the launchers (which must pick the tiled kernels) against the host reference
// on the same S-rounded inputs, and against the simple kernels on the same device inputs:
//   forward: out (1e-2) and lse (1e-3);
//   backward: dq, dk, dv (1e-2) from zero; the host backward reads the device's out and lse,
//   the inputs the device backward had (the tiled forward rounds P to S before P V, so its out
//   differs from the host's by ~2e-3, and delta = dO . O would carry that into every dS);
//   accumulation: a second backward onto nonzero dq, dk, dv must give start + gradient.
template <class S>
void tiled_case(int D, int B, int T, int H, int KV, std::uint64_t seed,
                const std::vector<std::int32_t>& positions = {}) {
  namespace att = ops::attention;
  INFO(storage_name<S> << " head_dim " << D << ", batch " << B << ", seq " << T << ", heads " << H
                       << ", kv_heads " << KV << (positions.empty() ? ", causal" : ", packed positions"));
  REQUIRE((positions.empty() || positions.size() == std::size_t(B) * std::size_t(T)));
  const std::int32_t* hp = host_ptr(positions);
  const DevPositions dpos(positions);
  REQUIRE(att::cuda::uses_tiled<S>(D));
  const std::size_t nq = std::size_t(B) * T * H * D, nk = std::size_t(B) * T * KV * D;
  const std::size_t nl = std::size_t(B) * H * T;
  // q in [-2.5, 2.5]: scores with a standard deviation near 0.8, so the softmax is neither flat
  // nor one-hot and the online rescaling matters.
  const auto q = rounded<S>(random_floats(nq, seed, -2.5f, 2.5f)), k = rounded<S>(random_floats(nk, seed + 1));
  const auto v = rounded<S>(random_floats(nk, seed + 2)), dy = rounded<S>(random_floats(nq, seed + 3));
  std::vector<float> out(nq), lse(nl), row(static_cast<std::size_t>(T));
  att::forward(out.data(), lse.data(), row.data(), q.data(), k.data(), v.data(), B, T, H, KV, D, hp);

  const std::vector<float> nan_q(nq, NAN), nan_l(nl, NAN), zero_q(nq, 0.0f), zero_k(nk, 0.0f);
  Dev<S> d_q(q), d_k(k), d_v(v), ddy(dy), dout(nan_q), ddq(zero_q), ddk(zero_k), ddv(zero_k);
  Dev<float> dlse(nan_l);  // NaN start: every element must be written
  att::cuda::forward(dout.p, dlse.p, d_q.p, d_k.p, d_v.p, B, T, H, KV, D, nullptr, dpos.p);
  att::cuda::backward(ddq.p, ddk.p, ddv.p, ddy.p, d_q.p, d_k.p, d_v.p, dout.p, dlse.p, B, T,
                      H, KV, D, nullptr, dpos.p);
  const auto out_d = dout.get(), lse_d = dlse.get(), dq_d = ddq.get(), dk_d = ddk.get(), dv_d = ddv.get();
  check_rel_floored(out_d, out, 1e-2, "tiled forward out vs host");
  check_rel_floored(lse_d, lse, 1e-3, "tiled forward lse vs host");

  std::vector<float> dq(nq, 0.0f), dk(nk, 0.0f), dv(nk, 0.0f);
  att::backward(dq.data(), dk.data(), dv.data(), row.data(), dy.data(), q.data(), k.data(),
                v.data(), out_d.data(), lse_d.data(), B, T, H, KV, D, hp);
  check_rel_floored(dq_d, dq, 1e-2, "tiled backward dq vs host");
  check_rel_floored(dk_d, dk, 1e-2, "tiled backward dk vs host");
  check_rel_floored(dv_d, dv, 1e-2, "tiled backward dv vs host");

  // The simple (one warp per row, fp32 math) kernels on the same device inputs.
  Dev<S> sout(nan_q), sdq(zero_q), sdk(zero_k), sdv(zero_k);
  Dev<float> slse(nan_l);
  att::cuda::simple::forward(sout.p, slse.p, d_q.p, d_k.p, d_v.p, B, T, H, KV, D, nullptr, dpos.p);
  att::cuda::simple::backward(sdq.p, sdk.p, sdv.p, ddy.p, d_q.p, d_k.p, d_v.p, dout.p, dlse.p,
                              B, T, H, KV, D, nullptr, dpos.p);
  check_rel_floored(out_d, sout.get(), 1e-2, "tiled vs simple out");
  check_rel_floored(lse_d, slse.get(), 1e-3, "tiled vs simple lse");
  check_rel_floored(dq_d, sdq.get(), 1e-2, "tiled vs simple dq");
  check_rel_floored(dk_d, sdk.get(), 1e-2, "tiled vs simple dk");
  check_rel_floored(dv_d, sdv.get(), 1e-2, "tiled vs simple dv");

  // +=: starts of the gradients' own size, so overwriting instead of adding is an O(1) error.
  auto start = [&](std::size_t n, const std::vector<float>& ref, std::uint64_t s) {
    const float a = float(std::fmax(rms(ref) * std::sqrt(3.0), 1e-2));
    return rounded<S>(random_floats(n, s, -a, a));
  };
  const auto dq0 = start(nq, dq, seed + 4), dk0 = start(nk, dk, seed + 5), dv0 = start(nk, dv, seed + 6);
  Dev<S> adq(dq0), adk(dk0), adv(dv0);
  att::cuda::backward(adq.p, adk.p, adv.p, ddy.p, d_q.p, d_k.p, d_v.p, dout.p, dlse.p, B, T, H,
                      KV, D, nullptr, dpos.p);
  auto plus = [](std::vector<float> a, const std::vector<float>& b) {
    for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
    return a;
  };
  check_rel_floored(adq.get(), plus(dq0, dq), 1e-2, "tiled backward accumulates dq (+=)");
  check_rel_floored(adk.get(), plus(dk0, dk), 1e-2, "tiled backward accumulates dk (+=)");
  check_rel_floored(adv.get(), plus(dv0, dv), 1e-2, "tiled backward accumulates dv (+=)");
}

// Every head_dim the tiled kernels take, sequences around the 64-row tiles (1, a part tile, one
// tile, several with a part tile), and GQA groups 1, 4 (and 2, 8 at two lengths); with `packed`,
// random packed positions with examples shorter than a tile (16), around it (100) and longer
// (300: the skipped key tiles, the query tiles dk/dv stops before).
template <class S>
void tiled_suite(bool packed = false) {
  const int dev_sm = [] {
    int d = 0, major = 0, minor = 0;
    LVT_CUDA_CHECK(cudaGetDevice(&d));
    LVT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d));
    LVT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, d));
    return major * 10 + minor;
  }();
  if (!ops::attention::cuda::uses_tiled<S>(64)) {
    MESSAGE("SKIPPED: tiled " << storage_name<S> << " attention does not run on this sm_" << dev_sm
                              << " device (bf16 needs sm_80, fp16 sm_75); the simple kernels serve it");
    CHECK(dev_sm < (std::is_same_v<S, bf16> ? 80 : 75));  // skipping is right only below that
    return;
  }
  std::uint64_t seed = packed ? 5000 : 100;
  if (packed) {
    for (int D : {64, 80, 96, 128})
      for (int T : {17, 200, 513})
        for (int max_len : {16, 100, 300}) {
          const auto pos = random_positions(3, T, max_len, seed += 10);
          tiled_case<S>(D, 3, T, 8, 2, seed += 10, pos);
          if (D == 64 || D == 128) tiled_case<S>(D, 3, T, 4, 1, seed += 10, pos);
        }
    return;
  }
  for (int D : {64, 80, 96, 128})
    for (int T : {1, 17, 64, 200, 513}) {
      for (auto [H, KV] : {std::pair{8, 8}, std::pair{8, 2}, std::pair{4, 1}})
        tiled_case<S>(D, 2, T, H, KV, seed += 10);
      if (T == 17 || T == 200)
        for (auto [H, KV] : {std::pair{8, 4}, std::pair{8, 1}}) tiled_case<S>(D, 2, T, H, KV, seed += 10);
    }
}

}  // namespace

TEST_CASE("attention launchers: which storage and head_dim take the tiled kernels") {
  namespace cuda = ops::attention::cuda;
  CHECK_FALSE(cuda::uses_tiled<float>(64));  // fp32 storage: the simple kernels
  CHECK_FALSE(cuda::uses_tiled<bf16>(72));   // a head_dim without a tiled kernel
  CHECK_FALSE(cuda::uses_tiled<fp16>(32));
  CHECK(cuda::uses_tiled<fp16>(128) == cuda::uses_tiled<fp16>(64));
  CHECK(cuda::uses_tiled<bf16>(80) == cuda::uses_tiled<bf16>(96));
  MESSAGE("tiled attention on this device: bf16 " << (cuda::uses_tiled<bf16>(64) ? "yes" : "no")
                                                  << ", fp16 " << (cuda::uses_tiled<fp16>(64) ? "yes" : "no"));
}

TEST_CASE("tiled attention (tensor cores), bf16: out, lse, dq, dk, dv vs host and vs the simple kernels") {
  tiled_suite<bf16>();
}
TEST_CASE("tiled attention (tensor cores), fp16: out, lse, dq, dk, dv vs host and vs the simple kernels") {
  tiled_suite<fp16>();
}

TEST_CASE("tiled attention (tensor cores) over packed rows (random positions) vs host and simple, bf16 and fp16") {
  tiled_suite<bf16>(true);
  tiled_suite<fp16>(true);
}

TEST_CASE("attention kernels (causal, grouped-query) vs host, head_dim 64/80/96/128, fp32, bf16, fp16") {
  for (int D : {64, 80, 96, 128}) {
    attention_case<float>(D);
    attention_case<bf16>(D);
    attention_case<fp16>(D);
  }
}

TEST_CASE("attention kernels over packed rows (random positions) vs host, fp32 (simple kernels), bf16, fp16") {
  std::uint64_t seed = 900;
  for (int D : {64, 72, 128})
    for (int max_len : {3, 12, 40}) {
      const auto pos = random_positions(2, 37, max_len, seed += 1);
      attention_case<float>(D, pos);
      attention_case<bf16>(D, pos);
      attention_case<fp16>(D, pos);
    }
}

TEST_CASE("decode attention over a KV cache vs host: fp32, bf16, fp16; GQA; decode rows and prefill chunks") {
  decode_attention_suite<float>();
  decode_attention_suite<bf16>();
  decode_attention_suite<fp16>();
}

TEST_CASE("decode attention refuses what the host refuses, and head_dim above 256") {
  float* p = nullptr;
  CHECK_THROWS_WITH(ops::decode_attention::cuda::forward(p, p, p, p, 0, 0, 8, 2, 64, nullptr),
                    doctest::Contains("rows must be positive"));
  CHECK_THROWS_WITH(ops::decode_attention::cuda::forward(p, p, p, p, 1, 0, 8, 3, 64, nullptr),
                    doctest::Contains("multiple of kv_heads"));
  CHECK_THROWS_WITH(ops::decode_attention::cuda::forward(p, p, p, p, 1, 0, 8, 2, 288, nullptr),
                    doctest::Contains("at most 256"));
}

TEST_CASE("rmsnorm kernels vs host, fp32 and bf16") {
  rmsnorm_case<float>();
  rmsnorm_case<bf16>();
}
TEST_CASE("rope kernels (llama3 scaling, partial rotary, in place) vs host") {
  rope_case<float>();
  rope_case<bf16>();
}
TEST_CASE("rope kernels over packed rows (random positions) vs host") {
  for (int max_len : {1, 7, 60}) {
    const auto pos = random_positions(2, 100, max_len, 700 + std::uint64_t(max_len));
    rope_case<float>(pos);
    rope_case<bf16>(pos);
  }
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
