// Host reference ops: finite-difference gradient checks in double on fresh seeded random inputs,
// known values (RoPE llama3 inv_freq, AdamW steps, cosine schedule), and bad input.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "fd.hpp"
#include "lvt/model/presets.hpp"
#include "lvt/quant/blockwise.hpp"
#include "lvt/ops/adamw.hpp"
#include "lvt/ops/attention.hpp"
#include "lvt/ops/cross_entropy.hpp"
#include "lvt/ops/embedding.hpp"
#include "lvt/ops/grad_accum.hpp"
#include "lvt/ops/grad_clip.hpp"
#include "lvt/ops/linear.hpp"
#include "lvt/ops/matmul.hpp"
#include "lvt/ops/residual.hpp"
#include "lvt/ops/rmsnorm.hpp"
#include "lvt/ops/rope.hpp"
#include "lvt/ops/schedule.hpp"
#include "lvt/ops/vmath.hpp"
#include "lvt/ops/swiglu.hpp"

using namespace lvt;
using lvt_test::dot;
using lvt_test::fd_check;
using lvt_test::random_vec;
using lvt_test::Vec;

// ---- embedding --------------------------------------------------------------------------------

TEST_CASE("embedding: forward gathers rows; a token id outside the vocabulary names its position") {
  const int V = 7, D = 5, N = 4;
  const Vec table = random_vec(V * D, 11);
  std::vector<std::int32_t> tok = {3, 0, 6, 3};
  Vec out(N * D);
  ops::embedding::forward(out.data(), tok.data(), table.data(), N, V, D);
  for (int n = 0; n < N; n++)
    for (int i = 0; i < D; i++) CHECK(out[n * D + i] == table[tok[n] * D + i]);
  tok[2] = 7;
  CHECK_THROWS_WITH_AS(ops::embedding::forward(out.data(), tok.data(), table.data(), N, V, D),
                       "embedding: token id 7 at position 2 is outside the vocabulary (vocab_size 7)",
                       Error);
  tok[2] = -1;
  CHECK_THROWS_AS(ops::embedding::forward(out.data(), tok.data(), table.data(), N, V, D), Error);
}

// ---- rmsnorm ----------------------------------------------------------------------------------

TEST_CASE("rmsnorm: known value and finite-difference gradients wrt x and weight") {
  {
    const double x[4] = {1, 2, 3, 4}, w[4] = {1, 0.5, 2, -1};
    double out[4], rstd;
    ops::rmsnorm::forward(out, &rstd, x, w, 1, 4, 1e-5);
    const double r = 1 / std::sqrt(7.5 + 1e-5);  // mean of squares: 30 / 4
    CHECK(rstd == doctest::Approx(r).epsilon(1e-14));
    CHECK(out[3] == doctest::Approx(-4 * r).epsilon(1e-14));
    CHECK(out[2] == doctest::Approx(6 * r).epsilon(1e-14));
  }
  const int N = 5, C = 12;
  const double eps = 1e-5;
  Vec x = random_vec(N * C, 21), w = random_vec(C, 22, 0.5, 1.5), wout = random_vec(N * C, 23);
  auto loss = [&] {
    Vec out(N * C), rstd(N);
    ops::rmsnorm::forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
    return dot(out, wout);
  };
  Vec out(N * C), rstd(N), dx(N * C, 0.0), dw(C, 0.0);
  ops::rmsnorm::forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
  ops::rmsnorm::backward(dx.data(), dw.data(), wout.data(), x.data(), w.data(), rstd.data(), N, C);
  fd_check("rmsnorm dx", x, dx, loss);
  fd_check("rmsnorm dweight", w, dw, loss);
  // backward accumulates: a second call doubles the gradient
  Vec dx2 = dx;
  ops::rmsnorm::backward(dx2.data(), (double*)nullptr, wout.data(), x.data(), w.data(),
                         rstd.data(), N, C);
  CHECK(dx2[7] == doctest::Approx(2 * dx[7]));
  CHECK_THROWS_WITH_AS(ops::rmsnorm::forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 0.0),
                       "rmsnorm: eps (rms_norm_eps) must be positive (got 0)", Error);
}

// ---- rope -------------------------------------------------------------------------------------

TEST_CASE("rope: llama3 inv_freq equals transformers' _compute_llama3_parameters") {
  // Llama-3.1-8B: theta 5e5, head_dim 128, factor 8, low 1, high 4, original 8192. Expected
  // values from transformers' formula (high band i <= 28 unchanged, 29..34 blended, >= 35 / 8).
  std::vector<double> f(ops::rope::inv_freq_elems(presets::llama_3_1_8b));
  REQUIRE(f.size() == 64);
  ops::rope::inv_freq(f.data(), presets::llama_3_1_8b);
  const std::pair<int, double> expect_8b[] = {
      {0, 1.0},
      {1, 0.8146172338565447},
      {28, 0.0032114459947525913},
      {29, 0.002166570763503359},
      {30, 0.0013718935677611381},
      {33, 0.00031269375038406517},
      {34, 0.00017850781276799638},
      {35, 9.556212353964683e-05},
      {63, 3.068925988914511e-07}};
  for (const auto& iv : expect_8b) {
    const int i = iv.first;
    const double v = iv.second;
    INFO("i = " << i);
    CHECK(f[i] == doctest::Approx(v).epsilon(2e-6));
  }
  // The whole table as torch prints it (float32, 5 significant digits) for these settings, from
  // an independent implementation's test data: every band agrees to 1e-4 relative.
  const double torch_printed[64] = {
      1.0000e+00, 8.1462e-01, 6.6360e-01, 5.4058e-01, 4.4037e-01, 3.5873e-01, 2.9223e-01,
      2.3805e-01, 1.9392e-01, 1.5797e-01, 1.2869e-01, 1.0483e-01, 8.5397e-02, 6.9566e-02,
      5.6670e-02, 4.6164e-02, 3.7606e-02, 3.0635e-02, 2.4955e-02, 2.0329e-02, 1.6560e-02,
      1.3490e-02, 1.0990e-02, 8.9523e-03, 7.2927e-03, 5.9407e-03, 4.8394e-03, 3.9423e-03,
      3.2114e-03, 2.1666e-03, 1.3719e-03, 8.5675e-04, 5.2485e-04, 3.1269e-04, 1.7851e-04,
      9.5562e-05, 7.7847e-05, 6.3415e-05, 5.1659e-05, 4.2082e-05, 3.4281e-05, 2.7926e-05,
      2.2749e-05, 1.8532e-05, 1.5096e-05, 1.2298e-05, 1.0018e-05, 8.1607e-06, 6.6479e-06,
      5.4155e-06, 4.4115e-06, 3.5937e-06, 2.9275e-06, 2.3848e-06, 1.9427e-06, 1.5826e-06,
      1.2892e-06, 1.0502e-06, 8.5550e-07, 6.9690e-07, 5.6771e-07, 4.6247e-07, 3.7673e-07,
      3.0689e-07};
  for (int i = 0; i < 64; i++) {
    INFO("i = " << i);
    CHECK(f[i] == doctest::Approx(torch_printed[i]).epsilon(1e-4));
  }
  // Llama-3.2-1B: head_dim 64, factor 32.
  std::vector<double> g(32);
  ops::rope::inv_freq(g.data(), presets::llama_3_2_1b);
  const std::pair<int, double> expect_1b[] = {{13, 0.004839421345719893},
                                              {15, 0.001290547928209264},
                                              {16, 0.00042955679655936815},
                                              {18, 1.9461638184831125e-05},
                                              {31, 9.418306725434909e-08}};
  for (const auto& iv : expect_1b) {
    const int i = iv.first;
    const double v = iv.second;
    INFO("i = " << i);
    CHECK(g[i] == doctest::Approx(v).epsilon(2e-6));
  }
}

TEST_CASE("rope: default and linear inv_freq, partial rotary, longrope rejected") {
  ModelConfig c = presets::tinyllama_1_1b;  // theta 1e4, head_dim 64
  std::vector<double> f(32), lin(32);
  ops::rope::inv_freq(f.data(), c);
  for (int i = 0; i < 32; i++) CHECK(f[i] == doctest::Approx(std::pow(1e4, -2.0 * i / 64)));
  c.rope_scaling = RopeScaling::linear;
  c.rope_factor = 4;
  ops::rope::inv_freq(lin.data(), c);
  for (int i = 0; i < 32; i++) CHECK(lin[i] == doctest::Approx(f[i] / 4));
  ModelConfig p = presets::phi_4;
  p.partial_rotary_factor = 0.75;  // rotary_dim 96: exponent over 96, not 128
  std::vector<double> pf(ops::rope::inv_freq_elems(p));
  REQUIRE(pf.size() == 48);
  ops::rope::inv_freq(pf.data(), p);
  CHECK(pf[47] == doctest::Approx(std::pow(250000.0, -94.0 / 96)));
  std::vector<double> lr(64);
  CHECK_THROWS_WITH_AS(
      ops::rope::inv_freq(lr.data(), presets::phi_4_mini),
      doctest::Contains("rope: rope_scaling type 'longrope' needs the per-dimension"), Error);
  ModelConfig bad = presets::tinyllama_1_1b;
  bad.rope_theta = 0;
  CHECK_THROWS_WITH_AS(ops::rope::inv_freq(lr.data(), bad),
                       "rope: model config: rope_theta must be positive", Error);
}

TEST_CASE("rope: rotate_half pairs split halves; partial rotary passes the tail through") {
  const int T = 3, H = 1, D = 8, R = 6, half = R / 2;
  const std::vector<double> inv = {1.0, 0.1, 0.01};
  Vec cs(T * half), sn(T * half);
  ops::rope::tables(cs.data(), sn.data(), inv.data(), T, half);
  CHECK(sn[2 * half + 0] == doctest::Approx(std::sin(2.0)));
  {  // the angle is HF's float32 product: at position 7777 it differs from the exact one
    const std::vector<double> inv1 = {0.3};
    Vec c1(7778), s1(7778);
    ops::rope::tables(c1.data(), s1.data(), inv1.data(), 7778, 1);
    const float hf_angle = 7777.0f * 0.3f;  // float(0.3) * 7777 in float32
    CHECK(c1[7777] == std::cos(double(hf_angle)));
    CHECK(std::fabs(c1[7777] - std::cos(7777 * 0.3)) > 1e-5);
  }
  // x = e_0 at position 2: out = cos(2) e_0 + sin(2) e_3 (the partner of 0 is 0 + R/2)
  Vec x(T * H * D, 0.0), out(T * H * D);
  for (int t = 0; t < T; t++) x[t * D + 0] = 1, x[t * D + 7] = 5;
  ops::rope::forward(out.data(), x.data(), cs.data(), sn.data(), 1, T, H, D, R);
  CHECK(out[2 * D + 0] == doctest::Approx(std::cos(2.0)));
  CHECK(out[2 * D + 3] == doctest::Approx(std::sin(2.0)));
  CHECK(out[2 * D + 1] == 0.0);
  CHECK(out[2 * D + 7] == 5.0);  // beyond rotary_dim: unchanged
  CHECK(out[0] == 1.0);          // position 0: identity
  CHECK_THROWS_WITH_AS(
      ops::rope::forward(out.data(), x.data(), cs.data(), sn.data(), 1, T, H, D, 9),
      "rope: rotary_dim must be even and in (0, head_dim] (got 9)", Error);
}

TEST_CASE("rope: finite-difference gradient, partial rotary, in place") {
  const int B = 2, T = 5, H = 3, D = 10, R = 6;
  ModelConfig c{.layers = 1, .hidden = H * D, .heads = H, .kv_heads = H, .head_dim = D, .ffn = 4,
                .vocab = 4, .rope_theta = 100.0, .partial_rotary_factor = 0.6};
  REQUIRE(c.rotary_dim() == R);
  std::vector<double> inv(R / 2);
  ops::rope::inv_freq(inv.data(), c);
  Vec cs(T * R / 2), sn(T * R / 2);
  ops::rope::tables(cs.data(), sn.data(), inv.data(), T, R / 2);
  Vec x = random_vec(B * T * H * D, 31), w = random_vec(B * T * H * D, 32);
  auto loss = [&] {
    Vec out(x.size());
    ops::rope::forward(out.data(), x.data(), cs.data(), sn.data(), B, T, H, D, R);
    return dot(out, w);
  };
  Vec dx(x.size(), 0.0);
  ops::rope::backward(dx.data(), w.data(), cs.data(), sn.data(), B, T, H, D, R);
  fd_check("rope dx", x, dx, loss);
  Vec y = x, out(x.size());
  ops::rope::forward(out.data(), x.data(), cs.data(), sn.data(), B, T, H, D, R);
  ops::rope::forward(y.data(), y.data(), cs.data(), sn.data(), B, T, H, D, R);
  CHECK(y == out);
}

// ---- attention ---------------------------------------------------------------------------------

namespace {
// Materialized reference: full score matrix per (b, h), causal mask, softmax.
void naive_attention(Vec& out, Vec& lse, const Vec& q, const Vec& k, const Vec& v, int B, int T,
                     int H, int KV, int D) {
  const double scale = 1 / std::sqrt(double(D));
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++) {
      const int g = h / (H / KV);
      for (int t = 0; t < T; t++) {
        std::vector<double> s(T, -INFINITY);
        double m = -INFINITY;
        for (int j = 0; j <= t; j++) {
          double d = 0;
          for (int i = 0; i < D; i++)
            d += q[((b * T + t) * H + h) * D + i] * k[((b * T + j) * KV + g) * D + i];
          s[j] = d * scale;
          m = std::fmax(m, s[j]);
        }
        double z = 0;
        for (int j = 0; j <= t; j++) z += std::exp(s[j] - m);
        lse[(b * H + h) * T + t] = m + std::log(z);
        for (int i = 0; i < D; i++) {
          double o = 0;
          for (int j = 0; j <= t; j++) o += std::exp(s[j] - m) / z * v[((b * T + j) * KV + g) * D + i];
          out[((b * T + t) * H + h) * D + i] = o;
        }
      }
    }
}
}  // namespace

TEST_CASE("attention: GQA forward equals the materialized softmax; FD gradients wrt q, k, v") {
  const int B = 2, T = 6, H = 4, KV = 2, D = 5;
  Vec q = random_vec(B * T * H * D, 41, -2, 2), k = random_vec(B * T * KV * D, 42, -2, 2),
      v = random_vec(B * T * KV * D, 43), w = random_vec(B * T * H * D, 44);
  Vec out(q.size()), lse(B * H * T), scratch(ops::attention::scratch_elems(B, T, H, KV, D, 1));
  ops::attention::forward(out.data(), lse.data(), scratch.data(), q.data(), k.data(), v.data(), B,
                          T, H, KV, D);
  Vec ref(q.size()), ref_lse(lse.size());
  naive_attention(ref, ref_lse, q, k, v, B, T, H, KV, D);
  for (std::size_t i = 0; i < out.size(); i++) CHECK(out[i] == doctest::Approx(ref[i]).epsilon(1e-12));
  for (std::size_t i = 0; i < lse.size(); i++) CHECK(lse[i] == doctest::Approx(ref_lse[i]).epsilon(1e-12));

  auto loss = [&] {
    Vec o(q.size()), l(B * H * T), s(scratch.size());
    ops::attention::forward(o.data(), l.data(), s.data(), q.data(), k.data(), v.data(), B, T, H,
                            KV, D);
    return dot(o, w);
  };
  Vec dq(q.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0);
  ops::attention::backward(dq.data(), dk.data(), dv.data(), scratch.data(), w.data(), q.data(),
                           k.data(), v.data(), out.data(), lse.data(), B, T, H, KV, D);
  fd_check("attention dq", q, dq, loss);
  fd_check("attention dk", k, dk, loss);
  fd_check("attention dv", v, dv, loss);

  // causal: the last position's key does not change any earlier output
  Vec k2 = k;
  for (int i = 0; i < D; i++) k2[((0 * T + T - 1) * KV + 1) * D + i] += 3;
  Vec out2(q.size());
  ops::attention::forward(out2.data(), lse.data(), scratch.data(), q.data(), k2.data(), v.data(),
                          B, T, H, KV, D);
  for (int t = 0; t < T - 1; t++)
    for (int i = 0; i < H * D; i++) CHECK(out2[(0 * T + t) * H * D + i] == out[(0 * T + t) * H * D + i]);
  CHECK(out2[((0 * T + T - 1) * H + 3) * D] != out[((0 * T + T - 1) * H + 3) * D]);

  CHECK_THROWS_WITH_AS(ops::attention::forward(out.data(), lse.data(), scratch.data(), q.data(),
                                               k.data(), v.data(), B, T, 4, 3, D),
                       "attention: heads must be a multiple of kv_heads (grouped-query attention) "
                       "(got 3)",
                       Error);
  CHECK_THROWS_WITH_AS(ops::attention::backward(q.data(), k.data(), v.data(), (double*)nullptr,
                                                w.data(), q.data(), k.data(), v.data(), out.data(),
                                                lse.data(), B, T, H, KV, D),
                       "attention: scratch (scratch_elems(batch, seq, heads, kv_heads, head_dim, threads) "
                       "elements) is null (got 6)",
                       Error);
}

// Packed rows: row 0 holds examples of 4, 3 and 2 tokens, row 1 one example filling it.
namespace {
constexpr int packed_T = 9;
const std::vector<std::int32_t> packed_positions = {0, 1, 2, 3, 0, 1, 2, 0, 1,
                                                    0, 1, 2, 3, 4, 5, 6, 7, 8};
struct Span1 {
  int row, start, len;
};
const Span1 packed_examples[] = {{0, 0, 4}, {0, 4, 3}, {0, 7, 2}, {1, 0, 9}};
// Rows [start, start + len) of row `row` of x [B, T, width] as a batch of one.
Vec rows_of(const Vec& x, int T, int width, const Span1& e) {
  const auto at = x.begin() + std::ptrdiff_t((e.row * T + e.start) * width);
  return Vec(at, at + std::ptrdiff_t(e.len * width));
}
}  // namespace

TEST_CASE("attention with positions: each packed example equals it alone; FD gradients") {
  const int B = 2, T = packed_T, H = 4, KV = 2, D = 5;
  const std::int32_t* pos = packed_positions.data();
  Vec q = random_vec(B * T * H * D, 141, -2, 2), k = random_vec(B * T * KV * D, 142, -2, 2),
      v = random_vec(B * T * KV * D, 143), w = random_vec(B * T * H * D, 144);
  Vec out(q.size()), lse(B * H * T), scratch(ops::attention::scratch_elems(B, T, H, KV, D, 1));
  ops::attention::forward(out.data(), lse.data(), scratch.data(), q.data(), k.data(), v.data(), B,
                          T, H, KV, D, pos);
  Vec dq(q.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0);
  ops::attention::backward(dq.data(), dk.data(), dv.data(), scratch.data(), w.data(), q.data(),
                           k.data(), v.data(), out.data(), lse.data(), B, T, H, KV, D, pos);
  for (const Span1& e : packed_examples) {
    CAPTURE(e.row);
    CAPTURE(e.start);
    const int n = e.len;
    const Vec qe = rows_of(q, T, H * D, e), ke = rows_of(k, T, KV * D, e),
              ve = rows_of(v, T, KV * D, e), we = rows_of(w, T, H * D, e);
    Vec ref(qe.size()), ref_lse(H * n);
    naive_attention(ref, ref_lse, qe, ke, ve, 1, n, H, KV, D);
    for (int t = 0; t < n; t++)
      for (int h = 0; h < H; h++) {
        CHECK(lse[(e.row * H + h) * T + e.start + t] == doctest::Approx(ref_lse[h * n + t]).epsilon(1e-12));
        for (int i = 0; i < D; i++)
          CHECK(out[((e.row * T + e.start + t) * H + h) * D + i] ==
                doctest::Approx(ref[(t * H + h) * D + i]).epsilon(1e-12));
      }
    // Backward of the example alone (causal, no positions): the same gradients, bit for bit.
    Vec oe(qe.size()), le(H * n), se(ops::attention::scratch_elems(1, n, H, KV, D, 1)), dqe(qe.size(), 0.0), dke(ke.size(), 0.0), dve(ve.size(), 0.0);
    ops::attention::forward(oe.data(), le.data(), se.data(), qe.data(), ke.data(), ve.data(), 1, n,
                            H, KV, D);
    ops::attention::backward(dqe.data(), dke.data(), dve.data(), se.data(), we.data(), qe.data(),
                             ke.data(), ve.data(), oe.data(), le.data(), 1, n, H, KV, D);
    CHECK(rows_of(out, T, H * D, e) == oe);
    CHECK(rows_of(dq, T, H * D, e) == dqe);
    CHECK(rows_of(dk, T, KV * D, e) == dke);
    CHECK(rows_of(dv, T, KV * D, e) == dve);
  }
  auto loss = [&] {
    Vec o(q.size()), l(B * H * T), s(scratch.size());
    ops::attention::forward(o.data(), l.data(), s.data(), q.data(), k.data(), v.data(), B, T, H,
                            KV, D, pos);
    return dot(o, w);
  };
  fd_check("attention dq (positions)", q, dq, loss);
  fd_check("attention dk (positions)", k, dk, loss);
  fd_check("attention dv (positions)", v, dv, loss);

  // Positions 0..T-1 in every row are plain causal attention, bit for bit.
  std::vector<std::int32_t> iota(std::size_t(B * T));
  for (int i = 0; i < B * T; i++) iota[std::size_t(i)] = i % T;
  Vec o1(q.size()), l1(lse.size()), o2(q.size()), l2(lse.size());
  ops::attention::forward(o1.data(), l1.data(), scratch.data(), q.data(), k.data(), v.data(), B, T,
                          H, KV, D);
  ops::attention::forward(o2.data(), l2.data(), scratch.data(), q.data(), k.data(), v.data(), B, T,
                          H, KV, D, iota.data());
  CHECK(o1 == o2);
  CHECK(l1 == l2);
}

TEST_CASE("rope with positions: each packed example equals it alone; FD gradient") {
  const int B = 2, T = packed_T, H = 3, D = 10, R = 6;
  const std::int32_t* pos = packed_positions.data();
  ModelConfig c{.layers = 1, .hidden = H * D, .heads = H, .kv_heads = H, .head_dim = D, .ffn = 4,
                .vocab = 4, .rope_theta = 100.0, .partial_rotary_factor = 0.6};
  REQUIRE(c.rotary_dim() == R);
  std::vector<double> inv(R / 2);
  ops::rope::inv_freq(inv.data(), c);
  Vec cs(T * R / 2), sn(T * R / 2);
  ops::rope::tables(cs.data(), sn.data(), inv.data(), T, R / 2);
  Vec x = random_vec(B * T * H * D, 131), w = random_vec(B * T * H * D, 132);
  Vec out(x.size()), dx(x.size(), 0.0);
  ops::rope::forward(out.data(), x.data(), cs.data(), sn.data(), B, T, H, D, R, pos);
  ops::rope::backward(dx.data(), w.data(), cs.data(), sn.data(), B, T, H, D, R, pos);
  for (const Span1& e : packed_examples) {
    CAPTURE(e.start);
    const int n = e.len;
    const Vec xe = rows_of(x, T, H * D, e), we = rows_of(w, T, H * D, e);
    Vec ce(n * R / 2), se(n * R / 2), oe(xe.size()), de(xe.size(), 0.0);
    ops::rope::tables(ce.data(), se.data(), inv.data(), n, R / 2);  // positions 0..n-1
    ops::rope::forward(oe.data(), xe.data(), ce.data(), se.data(), 1, n, H, D, R);
    ops::rope::backward(de.data(), we.data(), ce.data(), se.data(), 1, n, H, D, R);
    CHECK(rows_of(out, T, H * D, e) == oe);
    CHECK(rows_of(dx, T, H * D, e) == de);
  }
  auto loss = [&] {
    Vec o(x.size());
    ops::rope::forward(o.data(), x.data(), cs.data(), sn.data(), B, T, H, D, R, pos);
    return dot(o, w);
  };
  fd_check("rope dx (positions)", x, dx, loss);
}

// ---- swiglu ------------------------------------------------------------------------------------

TEST_CASE("swiglu: silu(gate) * up; FD gradients; fused gate_up stride") {
  const int N = 4, F = 7;
  Vec g = random_vec(N * F, 51, -4, 4), u = random_vec(N * F, 52), w = random_vec(N * F, 53);
  Vec out(N * F);
  ops::swiglu::forward(out.data(), g.data(), u.data(), N, F);
  CHECK(out[5] == doctest::Approx(g[5] / (1 + std::exp(-g[5])) * u[5]).epsilon(1e-14));
  auto loss = [&] {
    Vec o(N * F);
    ops::swiglu::forward(o.data(), g.data(), u.data(), N, F);
    return dot(o, w);
  };
  Vec dg(N * F, 0.0), du(N * F, 0.0);
  ops::swiglu::backward(dg.data(), du.data(), w.data(), g.data(), u.data(), N, F);
  fd_check("swiglu dgate", g, dg, loss);
  fd_check("swiglu dup", u, du, loss);
  // phi3 gate_up_proj: rows of [gate | up]
  Vec fused(N * 2 * F), dfused(N * 2 * F, 0.0), out2(N * F);
  for (int n = 0; n < N; n++)
    for (int i = 0; i < F; i++) fused[n * 2 * F + i] = g[n * F + i], fused[n * 2 * F + F + i] = u[n * F + i];
  ops::swiglu::forward(out2.data(), fused.data(), fused.data() + F, N, F, 2 * F);
  CHECK(out2 == out);
  ops::swiglu::backward(dfused.data(), dfused.data() + F, w.data(), fused.data(), fused.data() + F,
                        N, F, 2 * F);
  CHECK(dfused[2 * F + 3] == dg[F + 3]);
  CHECK(dfused[2 * F + F + 3] == du[F + 3]);
  CHECK_THROWS_WITH_AS(ops::swiglu::forward(out2.data(), fused.data(), fused.data() + F, N, F, F - 1),
                       "swiglu: cols must be positive and <= the row stride (got 7)", Error);
}

// ---- matmul ------------------------------------------------------------------------------------

TEST_CASE("attention: when the CUDA launchers fall back to the simple kernels, and what they say") {
  using ops::attention::simple_attention_reason;
  for (int d : {64, 80, 96, 128}) CHECK(simple_attention_reason(d, true, true) == nullptr);
  CHECK(std::string(simple_attention_reason(72, true, true)).find("head_dim is not 64, 80, 96 or 128") == 0);
  CHECK(std::string(simple_attention_reason(64, false, true)).find("no tiled kernels") != std::string::npos);
  CHECK(std::string(simple_attention_reason(64, true, false)).find("16-byte aligned") != std::string::npos);
  const std::string w = ops::attention::simple_attention_warning(simple_attention_reason(72, true, true), 72);
  CHECK(w.find("warning: attention runs the simple CUDA kernels (head_dim is not") != std::string::npos);
  CHECK(w.find("head_dim 72") != std::string::npos);
}

TEST_CASE("matmul: cuBLASLt's 'no algorithm' error names the shape, types and alignments") {
  const std::uint32_t align[4] = {16, 2, 256, 256};  // cuBLASLt's A (our B), B (our A), C, D
  const std::string m = ops::matmul::no_algorithm_message(4096, 8, 11008, false, true, "bf16", align);
  CHECK(m.find("no algorithm for a 4096 x 8 x 11008 GEMM") != std::string::npos);
  CHECK(m.find("A B^T, bf16") != std::string::npos);
  CHECK(m.find("aligned to 2 / 16 / 256 bytes (A / B / C)") != std::string::npos);
}

TEST_CASE("matmul: blocked products equal the naive sums (edge tiles, depth > one panel)") {
  // 37 rows (> row_block, not a multiple of 4), 37 outputs (not a multiple of 16), depth 300
  // (> depth_block), leading dimensions wider than the rows.
  const int N = 37, M = 37, K = 300, ldx = K + 3, ldw = K + 5, ldy = M + 2;
  Vec x = random_vec(N * ldx, 121), W = random_vec(M * ldw, 122), bias = random_vec(M, 123),
      y0 = random_vec(N * ldy, 124), dy = random_vec(N * ldy, 125);
  const double alpha = 0.75;
  for (bool acc : {false, true}) {
    CAPTURE(acc);
    Vec y = y0;
    ops::matmul::forward(y.data(), ldy, x.data(), ldx, W.data(), ldw, bias.data(), N, M, K, alpha, acc);
    for (int n = 0; n < N; n++)
      for (int m = 0; m < M; m++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += x[n * ldx + k] * W[m * ldw + k];
        const double ref = (acc ? y0[n * ldy + m] : 0.0) + alpha * s + bias[m];
        CHECK(y[n * ldy + m] == doctest::Approx(ref).epsilon(1e-12));
      }
    CHECK(y[0 * ldy + M] == y0[0 * ldy + M]);  // padding between rows untouched
  }
  Vec dx = random_vec(N * ldx, 126), dx0 = dx;
  ops::matmul::backward_input(dx.data(), ldx, dy.data(), ldy, W.data(), ldw, N, M, K, alpha);
  for (int n = 0; n < N; n += 5)
    for (int k = 0; k < K; k += 7) {
      double s = 0;
      for (int m = 0; m < M; m++) s += dy[n * ldy + m] * W[m * ldw + k];
      CHECK(dx[n * ldx + k] == doctest::Approx(dx0[n * ldx + k] + alpha * s).epsilon(1e-12));
    }
  Vec dW = random_vec(M * ldw, 127), dW0 = dW;
  ops::matmul::backward_weight(dW.data(), ldw, dy.data(), ldy, x.data(), ldx, N, M, K, alpha);
  for (int m = 0; m < M; m += 3)
    for (int k = 0; k < K; k += 11) {
      double s = 0;
      for (int n = 0; n < N; n++) s += dy[n * ldy + m] * x[n * ldx + k];
      CHECK(dW[m * ldw + k] == doctest::Approx(dW0[m * ldw + k] + alpha * s).epsilon(1e-12));
    }
}

// ---- linear + LoRA ---------------------------------------------------------------------------

TEST_CASE("linear: LoRA scale as PEFT (alpha/r, rsLoRA alpha/sqrt(r))") {
  CHECK(ops::linear::lora_scale(32, 16, false) == 2.0);
  CHECK(ops::linear::lora_scale(32, 16, true) == 8.0);
}

TEST_CASE("linear: y = x W^T + b + s dropout(x) A^T B^T; FD gradients wrt x, A, B") {
  const int N = 6, IN = 9, OUT = 7, R = 3;
  for (float p : {0.0f, 0.3f}) {
    CAPTURE(p);
    Vec x = random_vec(N * IN, 61), W = random_vec(OUT * IN, 62), bias = random_vec(OUT, 63),
        A = random_vec(R * IN, 64), Bm = random_vec(OUT * R, 65), w = random_vec(N * OUT, 66);
    auto lora = [&] {
      return ops::linear::Lora<double>{A.data(), Bm.data(), R, 16.0 / R, p, 0x5eedull};
    };
    Vec scratch(ops::linear::scratch_elems(N, IN, R));
    auto loss = [&] {
      Vec y(N * OUT), s(scratch.size());
      ops::linear::forward(y.data(), s.data(), x.data(), W.data(), bias.data(), lora(), N, IN, OUT);
      return dot(y, w);
    };
    // forward against a direct evaluation with the same mask
    Vec y(N * OUT);
    ops::linear::forward(y.data(), scratch.data(), x.data(), W.data(), bias.data(), lora(), N, IN, OUT);
    int dropped = 0;
    for (int n = 0; n < N; n++)
      for (int m = 0; m < OUT; m++) {
        double ref = bias[m];
        for (int k = 0; k < IN; k++) ref += x[n * IN + k] * W[m * IN + k];
        for (int r = 0; r < R; r++) {
          double h = 0;
          for (int k = 0; k < IN; k++) {
            const double f = ops::linear::dropout_factor<double>(0x5eedull, n * IN + k, p);
            if (m == 0 && r == 0 && f == 0) dropped++;
            h += x[n * IN + k] * f * A[r * IN + k];
          }
          ref += 16.0 / R * h * Bm[m * R + r];
        }
        CHECK(y[n * OUT + m] == doctest::Approx(ref).epsilon(1e-12));
      }
    if (p > 0) CHECK(dropped > 0);
    Vec dx(N * IN, 0.0), dA(R * IN, 0.0), dB(OUT * R, 0.0);
    ops::linear::backward(dx.data(), {dA.data(), dB.data()}, scratch.data(), w.data(), x.data(),
                          W.data(), lora(), N, IN, OUT);
    fd_check("linear dx", x, dx, loss);
    fd_check("linear dA", A, dA, loss);
    fd_check("linear dB", Bm, dB, loss);

    // dequantize-on-use: the weight arrives 4 rows at a time (7 = 4 + 3) through a callback
    auto deq = [&](std::int64_t r0, std::int64_t r1, double* dst) {
      for (std::int64_t i = r0 * IN; i < r1 * IN; i++) dst[i - r0 * IN] = W[i];
    };
    Vec wscr(ops::linear::weight_scratch_elems(4, IN)), y2(N * OUT);
    ops::linear::forward_dequant(y2.data(), scratch.data(), wscr.data(), 4, x.data(), deq,
                                 bias.data(), lora(), N, IN, OUT);
    for (int i = 0; i < N * OUT; i++) CHECK(y2[i] == doctest::Approx(y[i]).epsilon(1e-14));
    Vec dx2(N * IN, 0.0), dA2(R * IN, 0.0), dB2(OUT * R, 0.0);
    ops::linear::backward_dequant(dx2.data(), {dA2.data(), dB2.data()}, scratch.data(),
                                  wscr.data(), 4, w.data(), x.data(), deq, lora(), N, IN, OUT);
    for (int i = 0; i < N * IN; i++) CHECK(dx2[i] == doctest::Approx(dx[i]).epsilon(1e-14));
    CHECK(dA2 == dA);
    CHECK(dB2 == dB);
  }
}

TEST_CASE("linear: NF4 base dequantized on use, chunk by chunk, equals the dequantized weight") {
  // A q_proj-like 64 x 128 weight quantized as QLoRA does (NF4, block 64, double quantization);
  // the callback dequantizes rows [r0, r1) from the packed codes (rows of 128 are whole blocks).
  const int N = 5, IN = 128, OUT = 64, R = 4, block = 64;
  std::vector<float> Wf(OUT * IN);
  {
    const Vec w = random_vec(OUT * IN, 131, -0.05, 0.05);
    for (int i = 0; i < OUT * IN; i++) Wf[i] = float(w[i]);
  }
  const quant::Quant4 q = quant::quantize4(quant::Code4::nf4, Wf.data(), OUT * IN, block, true,
                                           "model.layers.0.self_attn.q_proj.weight");
  const std::vector<float> absmax = q.block_absmax();
  std::vector<float> Wdq(OUT * IN);
  quant::dequantize4(q, Wdq.data());
  int differ = 0;
  for (int i = 0; i < OUT * IN; i++) differ += Wdq[i] != Wf[i];
  CHECK(differ > OUT * IN / 2);  // really quantized
  auto deq = [&](std::int64_t r0, std::int64_t r1, float* dst) {
    quant::dequantize_4bit(q.code, q.packed.data() + r0 * IN / 2, absmax.data() + r0 * IN / block,
                           (r1 - r0) * IN, block, dst);
  };
  std::vector<float> x(N * IN), A(R * IN), B(OUT * R), dy(N * OUT);
  for (auto* v : {&x, &A, &B, &dy}) {
    const Vec r = random_vec(v->size(), 132 + v->size());
    for (std::size_t i = 0; i < v->size(); i++) (*v)[i] = float(r[i]);
  }
  const ops::linear::Lora<float> lora{A.data(), B.data(), R, 4.0f, 0.1f, 99};
  std::vector<float> scratch(ops::linear::scratch_elems(N, IN, R)), wscr(ops::linear::weight_scratch_elems(24, IN));
  std::vector<float> y_ref(N * OUT), y(N * OUT), dx_ref(N * IN, 0.f), dx(N * IN, 0.f),
      dA_ref(R * IN, 0.f), dA(R * IN, 0.f), dB_ref(OUT * R, 0.f), dB(OUT * R, 0.f);
  ops::linear::forward(y_ref.data(), scratch.data(), x.data(), Wdq.data(), (float*)nullptr, lora, N, IN, OUT);
  ops::linear::forward_dequant(y.data(), scratch.data(), wscr.data(), 24, x.data(), deq,
                               (float*)nullptr, lora, N, IN, OUT);
  for (int i = 0; i < N * OUT; i++) CHECK(y[i] == doctest::Approx(y_ref[i]).epsilon(1e-6));
  ops::linear::backward(dx_ref.data(), {dA_ref.data(), dB_ref.data()}, scratch.data(), dy.data(),
                        x.data(), Wdq.data(), lora, N, IN, OUT);
  ops::linear::backward_dequant(dx.data(), {dA.data(), dB.data()}, scratch.data(), wscr.data(), 24,
                                dy.data(), x.data(), deq, lora, N, IN, OUT);
  for (int i = 0; i < N * IN; i++) CHECK(dx[i] == doctest::Approx(dx_ref[i]).epsilon(1e-5));
  CHECK(dA == dA_ref);
  CHECK(dB == dB_ref);
}

TEST_CASE("linear: dropout mask keeps about 1 - p, depends on the seed, and scales by 1/(1-p)") {
  const int n = 100000;
  int kept = 0, same = 0;
  // two dropout sites next to each other: layer 3's q_proj and k_proj at step 5
  const std::uint64_t seed_a = ops::dropout_seed(1234, 5, 3, 0), seed_b = ops::dropout_seed(1234, 5, 3, 1);
  for (int i = 0; i < n; i++) {
    const double f = ops::linear::dropout_factor<double>(seed_a, i, 0.25f);
    CHECK((f == 0.0 || f == doctest::Approx(1 / 0.75)));
    kept += f != 0;
    same += (f != 0) == (ops::linear::dropout_factor<double>(seed_b, i, 0.25f) != 0);
  }
  CHECK(kept / double(n) == doctest::Approx(0.75).epsilon(0.01));
  CHECK(same / double(n) == doctest::Approx(0.625).epsilon(0.02));  // independent masks
  CHECK(ops::dropout_seed(1, 2, 3, 4) != ops::dropout_seed(1, 2, 3, 5));
  CHECK(ops::dropout_seed(1, 2, 3, 4) != ops::dropout_seed(1, 3, 3, 4));
}

TEST_CASE("linear: bad LoRA arguments name the field") {
  const int N = 2, IN = 3, OUT = 2, R = 2;
  Vec x = random_vec(N * IN, 71), W = random_vec(OUT * IN, 72), A = random_vec(R * IN, 73),
      y(N * OUT), s(ops::linear::scratch_elems(N, IN, R));
  ops::linear::Lora<double> l{A.data(), nullptr, R, 1.0, 0.0f, 0};
  CHECK_THROWS_WITH_AS(
      ops::linear::forward(y.data(), s.data(), x.data(), W.data(), (double*)nullptr, l, N, IN, OUT),
      "linear: LoRA needs both lora_A and lora_B (got 2)", Error);
  l.B = A.data();
  l.dropout = 1.0f;
  CHECK_THROWS_WITH_AS(
      ops::linear::forward(y.data(), s.data(), x.data(), W.data(), (double*)nullptr, l, N, IN, OUT),
      "linear: lora_dropout must be in [0, 1) (got 1.000000)", Error);
  l.dropout = 0;
  CHECK_THROWS_WITH_AS(
      ops::linear::forward(y.data(), (double*)nullptr, x.data(), W.data(), (double*)nullptr, l, N,
                           IN, OUT),
      "linear: LoRA needs a scratch of scratch_elems(rows, in, rank) = 14 elements (got null)", Error);
  CHECK_THROWS_WITH_AS(
      ops::linear::forward(y.data(), s.data(), x.data(), W.data(), (double*)nullptr, l, N, 0, OUT),
      "linear: in_features must be positive (got 0)", Error);
}

// ---- lm-head + cross-entropy ------------------------------------------------------------------

TEST_CASE("cross_entropy: chunked fused lm-head equals full logits; FD gradient wrt hidden") {
  const int N = 7, C = 6, V = 11;
  Vec h = random_vec(N * C, 81, -2, 2), W = random_vec(V * C, 82);
  std::vector<std::int32_t> labels = {3, -100, 10, 0, 5, -100, 7};
  // reference: full logits, log_softmax, mean over kept
  double ref = 0;
  int kept = 0;
  for (int n = 0; n < N; n++) {
    if (labels[n] < 0) continue;
    std::vector<double> lg(V);
    double m = -INFINITY, z = 0;
    for (int v = 0; v < V; v++) {
      lg[v] = 0;
      for (int i = 0; i < C; i++) lg[v] += h[n * C + i] * W[v * C + i];
      m = std::fmax(m, lg[v]);
    }
    for (int v = 0; v < V; v++) z += std::exp(lg[v] - m);
    ref += m + std::log(z) - lg[labels[n]];
    kept++;
  }
  auto run = [&](Vec* dh, int chunk) {
    Vec scratch(ops::cross_entropy::scratch_elems(chunk, V, C));
    return ops::cross_entropy::forward_backward(dh ? dh->data() : nullptr, scratch.data(),
                                                h.data(), W.data(), labels.data(), N, C, V, chunk);
  };
  Vec dh(N * C, 123.0);  // written, not accumulated
  auto r = run(&dh, 2);
  CHECK(r.count == kept);
  CHECK(r.loss_sum == doctest::Approx(ref).epsilon(1e-12));
  for (int i = 0; i < C; i++) CHECK(dh[1 * C + i] == 0.0);  // ignored position
  for (int chunk : {1, 3, 7, 100}) {
    Vec d2(N * C);
    auto r2 = run(&d2, chunk);
    CHECK(r2.loss_sum == doctest::Approx(r.loss_sum).epsilon(1e-13));
    for (int i = 0; i < N * C; i++) CHECK(d2[i] == doctest::Approx(dh[i]).epsilon(1e-13));
  }
  auto mean_loss = [&] { return run(nullptr, 3).mean(); };
  CHECK(mean_loss() == doctest::Approx(ref / kept));
  fd_check("cross_entropy dhidden", h, dh, mean_loss);
}

TEST_CASE("cross_entropy: bad label names the position; all ignored gives count 0") {
  const int N = 3, C = 2, V = 4;
  Vec h = random_vec(N * C, 91), W = random_vec(V * C, 92), dh(N * C),
      s(ops::cross_entropy::scratch_elems(2, V, C));
  std::vector<std::int32_t> labels = {1, 4, 2};
  CHECK_THROWS_WITH_AS(
      ops::cross_entropy::forward_backward(dh.data(), s.data(), h.data(), W.data(), labels.data(),
                                           N, C, V, 2),
      "cross_entropy: label 4 at position 1 is outside the vocabulary (vocab_size 4); use -100 to "
      "ignore a position",
      Error);
  labels = {-100, -100, -100};
  auto r = ops::cross_entropy::forward_backward(dh.data(), s.data(), h.data(), W.data(),
                                                labels.data(), N, C, V, 2);
  CHECK(r.count == 0);
  CHECK(r.mean() == 0.0);
  for (double d : dh) CHECK(d == 0.0);
  labels = {-7, 0, 0};
  CHECK_THROWS_WITH_AS(ops::cross_entropy::forward(s.data(), h.data(), W.data(), labels.data(), N,
                                                   C, V, 2),
                       doctest::Contains("label -7 at position 0"), Error);
}

// ---- the accumulate convention -----------------------------------------------------------------

// Every backward adds into its gradient buffers: run it on zeros and on random contents, the
// difference must be the random contents exactly (the block program relies on this for the
// residual stream, grouped-query k/v and micro-batches).
TEST_CASE("every backward accumulates (+=) into its gradients") {
  auto check_adds = [](const char* what, std::size_t n, auto&& run) {
    CAPTURE(what);
    const Vec base = random_vec(n, 141 + n);
    Vec from_zero(n, 0.0), from_base = base;
    run(from_zero);
    run(from_base);
    int nonzero = 0;
    for (std::size_t i = 0; i < n; i++) {
      nonzero += from_zero[i] != 0;
      CHECK(from_base[i] == doctest::Approx(base[i] + from_zero[i]).epsilon(1e-14));
    }
    CHECK(nonzero > 0);
  };
  const int N = 3, C = 8, H = 2, KV = 1, D = 4, T = 3, F = 5, R = 2;
  const Vec x = random_vec(N * C, 151), w = random_vec(C, 152), dy = random_vec(N * C, 153);
  Vec out(N * C), rstd(N);
  ops::rmsnorm::forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5);
  check_adds("rmsnorm dx", N * C, [&](Vec& g) {
    ops::rmsnorm::backward(g.data(), (double*)nullptr, dy.data(), x.data(), w.data(), rstd.data(), N, C);
  });
  check_adds("rmsnorm dweight", C, [&](Vec& g) {
    Vec dx(N * C);
    ops::rmsnorm::backward(dx.data(), g.data(), dy.data(), x.data(), w.data(), rstd.data(), N, C);
  });
  const Vec cs = random_vec(T * 2, 154), sn = random_vec(T * 2, 155), rq = random_vec(T * H * D, 156);
  check_adds("rope dx", T * H * D, [&](Vec& g) {
    ops::rope::backward(g.data(), rq.data(), cs.data(), sn.data(), 1, T, H, D, D);
  });
  const Vec q = random_vec(T * H * D, 157), k = random_vec(T * KV * D, 158),
            v = random_vec(T * KV * D, 159), da = random_vec(T * H * D, 160);
  Vec ao(T * H * D), lse(H * T), scr(ops::attention::scratch_elems(1, T, H, KV, D, 1));
  ops::attention::forward(ao.data(), lse.data(), scr.data(), q.data(), k.data(), v.data(), 1, T, H, KV, D);
  for (int which = 0; which < 3; which++)
    check_adds(which == 0 ? "attention dq" : which == 1 ? "attention dk" : "attention dv",
               which == 0 ? T * H * D : T * KV * D, [&](Vec& g) {
                 Vec dq(T * H * D), dk(T * KV * D), dv(T * KV * D);
                 Vec& target = which == 0 ? dq : which == 1 ? dk : dv;
                 target = g;
                 ops::attention::backward(dq.data(), dk.data(), dv.data(), scr.data(), da.data(),
                                          q.data(), k.data(), v.data(), ao.data(), lse.data(), 1,
                                          T, H, KV, D);
                 g = target;
               });
  const Vec gt = random_vec(N * F, 161), up = random_vec(N * F, 162), ds = random_vec(N * F, 163);
  check_adds("swiglu dgate", N * F, [&](Vec& g) {
    Vec du(N * F);
    ops::swiglu::backward(g.data(), du.data(), ds.data(), gt.data(), up.data(), N, F);
  });
  const Vec W = random_vec(F * C, 164), A = random_vec(R * C, 165), Bm = random_vec(F * R, 166);
  const ops::linear::Lora<double> lora{A.data(), Bm.data(), R, 0.5, 0.2f, 3};
  Vec lscr(ops::linear::scratch_elems(N, C, R));
  for (int which = 0; which < 3; which++)
    check_adds(which == 0 ? "linear dx" : which == 1 ? "linear dA" : "linear dB",
               which == 0 ? N * C : which == 1 ? R * C : F * R, [&](Vec& g) {
                 Vec dx(N * C), dA(R * C), dB(F * R);
                 Vec& target = which == 0 ? dx : which == 1 ? dA : dB;
                 target = g;
                 ops::linear::backward(dx.data(), {dA.data(), dB.data()}, lscr.data(), ds.data(),
                                       x.data(), W.data(), lora, N, C, F);
                 g = target;
               });
}

TEST_CASE("cross_entropy: grad_scale scales d hidden, not the loss") {
  const int N = 4, C = 3, V = 6;
  Vec h = random_vec(N * C, 171), W = random_vec(V * C, 172), d1(N * C), d2(N * C),
      s(ops::cross_entropy::scratch_elems(3, V, C));
  std::vector<std::int32_t> labels = {1, 5, -100, 0};
  auto r1 = ops::cross_entropy::forward_backward(d1.data(), s.data(), h.data(), W.data(), labels.data(), N, C, V, 3);
  auto r2 = ops::cross_entropy::forward_backward(d2.data(), s.data(), h.data(), W.data(), labels.data(), N, C, V, 3, 0.25);
  CHECK(r1.loss_sum == r2.loss_sum);
  for (int i = 0; i < N * C; i++) CHECK(d2[i] == doctest::Approx(0.25 * d1[i]).epsilon(1e-14));
}

// ---- optimizer, clipping, schedule, accumulation ---------------------------------------------

TEST_CASE("adamw: two steps equal torch.optim.AdamW computed by hand") {
  // torch.optim.AdamW([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
  // p0 = [0.5, -1.5], g1 = [0.2, -0.05], g2 = [-0.1, 0.3]:
  //  step 1: p *= 0.999; m = 0.1 g1; v = 0.001 g1^2; p -= 0.01/0.1 * m / (sqrt(v)/sqrt(0.001) + 1e-8)
  //  step 2: p *= 0.999; m = 0.9 m + 0.1 g2; v = 0.999 v + 0.001 g2^2;
  //          p -= 0.01/0.19 * m / (sqrt(v)/sqrt(1 - 0.999^2) + 1e-8)
  // Values evaluated in double (torch's float32 agrees to ~1e-7).
  double p[2] = {0.5, -1.5}, m[2] = {0, 0}, v[2] = {0, 0};
  const double g1[2] = {0.2, -0.05}, g2[2] = {-0.1, 0.3};
  ops::adamw::Hyper hp{.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1};
  ops::adamw::step(p, m, v, g1, 2, hp, 1);
  CHECK(p[0] == doctest::Approx(0.4895000005).epsilon(1e-12));  // 0.4995 - 0.01 * 0.2/(0.2+1e-8)
  CHECK(p[1] == doctest::Approx(-1.488500002).epsilon(1e-12));  // -1.4985 + 0.01 * 0.05/(0.05+1e-8)
  ops::adamw::step(p, m, v, g2, 2, hp, 2);
  CHECK(m[0] == doctest::Approx(0.008).epsilon(1e-14));  // 0.9 * 0.02 + 0.1 * -0.1
  CHECK(v[0] == doctest::Approx(0.999 * 0.00004 + 0.001 * 0.01).epsilon(1e-14));
  CHECK(p[0] == doctest::Approx(0.48634713027136756).epsilon(1e-12));
  CHECK(p[1] == doctest::Approx(-1.4932506883726178).epsilon(1e-12));
  // zero gradient: only the decoupled decay acts
  double q = 2.0, qm = 0, qv = 0, zero = 0;
  ops::adamw::step(&q, &qm, &qv, &zero, 1, hp, 1);
  CHECK(q == doctest::Approx(2.0 * 0.999).epsilon(1e-15));
  CHECK_THROWS_WITH_AS(ops::adamw::step(&q, &qm, &qv, &zero, 1, hp, 0),
                       "adamw: step must be >= 1 (torch counts from 1 after incrementing) (got 0)",
                       Error);
  hp.beta2 = 1.0;
  CHECK_THROWS_WITH_AS(ops::adamw::step(&q, &qm, &qv, &zero, 1, hp, 1),
                       doctest::Contains("adamw: invalid hyper-parameters"), Error);
}

TEST_CASE("grad_clip: torch clip_grad_norm_ over several tensors") {
  Vec a = {3.0, 0.0}, b = {4.0};  // total norm 5
  std::vector<ops::grad_clip::Grad<double>> gs = {{a.data(), 2}, {b.data(), 1}};
  const double total = ops::grad_clip::clip<double>(gs, 1.0);
  CHECK(total == doctest::Approx(5.0));
  CHECK(a[0] == doctest::Approx(3.0 / (5 + 1e-6)).epsilon(1e-14));
  CHECK(b[0] == doctest::Approx(4.0 / (5 + 1e-6)).epsilon(1e-14));
  Vec c = random_vec(10, 101, -0.01, 0.01), c0 = c;
  std::vector<ops::grad_clip::Grad<double>> gc = {{c.data(), 10}};
  ops::grad_clip::clip<double>(gc, 1.0);
  CHECK(c == c0);  // coef clamped to 1
  CHECK(std::isnan(ops::grad_clip::clip_coef(NAN, 1.0)));
  CHECK_THROWS_WITH_AS(ops::grad_clip::clip<double>(gc, 0.0),
                       "grad_clip: max_norm must be positive (got 0.000000)", Error);
}

TEST_CASE("schedule: cosine with warmup equals transformers' lr_lambda") {
  using ops::schedule::cosine_with_warmup;
  CHECK(cosine_with_warmup(0, 10, 100) == 0.0);
  CHECK(cosine_with_warmup(5, 10, 100) == doctest::Approx(0.5));
  CHECK(cosine_with_warmup(10, 10, 100) == doctest::Approx(1.0));
  CHECK(cosine_with_warmup(55, 10, 100) == doctest::Approx(0.5));
  CHECK(cosine_with_warmup(40, 10, 100) == doctest::Approx(0.5 * (1 + std::cos(M_PI / 3))));
  CHECK(cosine_with_warmup(100, 10, 100) == doctest::Approx(0.0));
  CHECK(cosine_with_warmup(0, 0, 100) == doctest::Approx(1.0));
  CHECK(cosine_with_warmup(3, 0, 1) == doctest::Approx(0.5 * (1 + std::cos(3 * M_PI))));  // rises past total, as transformers
  CHECK(ops::schedule::lr_at(2e-4, 25, 10, 100) == doctest::Approx(2e-4 * 0.5 * (1 + std::cos(M_PI / 6))));
  CHECK_THROWS_WITH_AS(cosine_with_warmup(1, -1, 10),
                       "schedule: warmup steps must be non-negative (got -1)", Error);
}

TEST_CASE("grad_accum and residual") {
  Vec g = random_vec(5, 111), g0 = g, h = random_vec(5, 112);
  ops::grad_accum::add(g.data(), h.data(), 5);
  ops::grad_accum::finish(g.data(), 5, 4);
  for (int i = 0; i < 5; i++) CHECK(g[i] == doctest::Approx((g0[i] + h[i]) / 4));
  CHECK_THROWS_WITH_AS(ops::grad_accum::finish(g.data(), 5, 0),
                       "grad_accum: gradient accumulation steps must be >= 1 (got 0)", Error);
  Vec o(5);
  ops::residual::forward(o.data(), g.data(), h.data(), 5);
  CHECK(o[2] == g[2] + h[2]);
}

// ---- vectorized float math of the host backend ----------------------------------------------

TEST_CASE("vmath: exp within 2 ulp of exp in double over its range; 0 below, inf above") {
  double worst = 0;
  for (double x = -86.9; x <= 88.7; x += 1.7e-3) {
    const float xf = float(x);
    const double want = std::exp(double(xf));
    const double got = ops::vmath::exp(xf);
    worst = std::max(worst, std::fabs(got - want) / want);
  }
  CHECK(worst < 2 * 1.1920929e-7);  // 2 ulp at the top of a binade
  CHECK(ops::vmath::exp(0.0f) == 1.0f);
  CHECK(ops::vmath::exp(-100.0f) == 0.0f);
  CHECK(std::isinf(ops::vmath::exp(100.0f)));
  // a row kernel: exp(x - shift) in place and its sum, against libm
  std::vector<float> row(1003), ref(row.size());
  double want = 0;
  for (std::size_t i = 0; i < row.size(); i++) {
    row[i] = float(std::sin(double(i)) * 20);
    ref[i] = std::exp(row[i] - 20.0f);
    want += ref[i];
  }
  CHECK(ops::vmath::max_of(row.data(), std::int64_t(row.size())) ==
        *std::max_element(row.begin(), row.end()));
  const double got = ops::vmath::exp_shift_sum(row.data(), std::int64_t(row.size()), 20.0f);
  CHECK(got == doctest::Approx(want).epsilon(1e-6));
  for (std::size_t i = 0; i < row.size(); i++) CHECK(row[i] == doctest::Approx(ref[i]).epsilon(3e-7));
}

TEST_CASE("matmul: gemm split over threads equals the naive sums for every transposition") {
  // 5.25 M multiply-adds: above parallel_min_work, so with 2+ threads the product is split
  // (by rows when M >= N, else by columns: both shapes run).
  for (auto [M, N] : {std::pair<int, int>{300, 70}, std::pair<int, int>{70, 300}}) {
    const int K = 250;
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        CAPTURE(M);
        CAPTURE(ta);
        CAPTURE(tb);
        const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
        const Vec A = random_vec((ta ? K : M) * lda, 201), B = random_vec((tb ? N : K) * ldb, 202),
                  C0 = random_vec(M * ldc, 203);
        Vec C = C0;
        ops::parallel::set_threads(ops::parallel::available());
        ops::matmul::gemm(ta, tb, M, N, K, 0.5, A.data(), lda, B.data(), ldb, 2.0, C.data(), ldc);
        double worst = 0;
        for (int i = 0; i < M; i++)
          for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++)
              s += (ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
            const double want = 0.5 * s + 2.0 * C0[i * ldc + j];
            worst = std::max(worst, std::fabs(C[i * ldc + j] - want) / (1 + std::fabs(want)));
          }
        CHECK(worst < 1e-12);
        CHECK(C[0 * ldc + N] == C0[0 * ldc + N]);  // padding between rows untouched
      }
  }
}
