// Host reference ops at a small model's shapes: hidden 256, 8 heads (head_dim 32), 4 kv heads,
// ffn 688, vocab 32000, seq 256, batch 4 (1024 tokens), LoRA r 16. Items are tokens, so each
// line reads as tokens/s for that op; these add up to the host step benchmark's budget.
//   ninja -C build-ops bench/bench_ops && ./build-ops/bench/bench_ops
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "lvt/ops/adamw.hpp"
#include "lvt/ops/attention.hpp"
#include "lvt/ops/cross_entropy.hpp"
#include "lvt/ops/linear.hpp"
#include "lvt/ops/residual.hpp"
#include "lvt/ops/rmsnorm.hpp"
#include "lvt/ops/rope.hpp"
#include "lvt/ops/swiglu.hpp"

namespace {

constexpr int B = 4, T = 256, N = B * T, C = 256, H = 8, KV = 4, D = 32, F = 688, V = 32000,
              R = 16;

std::vector<float> rnd(std::size_t n, unsigned seed, float lo = -1, float hi = 1) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

void tokens(benchmark::State& s) { s.SetItemsProcessed(std::int64_t(s.iterations()) * N); }

void BM_rmsnorm_fwd_bwd(benchmark::State& s) {
  auto x = rnd(N * C, 1), w = rnd(C, 2), dy = rnd(N * C, 3);
  std::vector<float> y(N * C), rstd(N), dx(N * C);
  for (auto _ : s) {
    lvt::ops::rmsnorm::forward(y.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5);
    lvt::ops::rmsnorm::backward(dx.data(), (float*)nullptr, dy.data(), x.data(), w.data(),
                                rstd.data(), N, C);
    benchmark::DoNotOptimize(dx.data());
  }
  tokens(s);
}

void BM_rope_fwd_bwd(benchmark::State& s) {
  auto x = rnd(N * H * D, 4), dy = rnd(N * H * D, 5);
  std::vector<float> inv(D / 2), cs(T * D / 2), sn(T * D / 2), dx(N * H * D);
  for (int i = 0; i < D / 2; i++) inv[i] = std::pow(10000.0f, -2.0f * i / D);
  lvt::ops::rope::tables(cs.data(), sn.data(), inv.data(), T, D / 2);
  for (auto _ : s) {
    lvt::ops::rope::forward(x.data(), x.data(), cs.data(), sn.data(), B, T, H, D, D);
    lvt::ops::rope::backward(dx.data(), dy.data(), cs.data(), sn.data(), B, T, H, D, D);
    benchmark::DoNotOptimize(dx.data());
  }
  tokens(s);
}

void BM_attention_fwd(benchmark::State& s) {
  auto q = rnd(N * H * D, 6), k = rnd(N * KV * D, 7), v = rnd(N * KV * D, 8);
  std::vector<float> out(N * H * D), lse(B * H * T), scr(lvt::ops::attention::scratch_elems(B, T, H, KV, D, 1));
  for (auto _ : s) {
    lvt::ops::attention::forward(out.data(), lse.data(), scr.data(), q.data(), k.data(), v.data(),
                                 B, T, H, KV, D);
    benchmark::DoNotOptimize(out.data());
  }
  tokens(s);
}

void BM_attention_bwd(benchmark::State& s) {
  auto q = rnd(N * H * D, 6), k = rnd(N * KV * D, 7), v = rnd(N * KV * D, 8),
       dout = rnd(N * H * D, 9);
  std::vector<float> out(N * H * D), lse(B * H * T), scr(lvt::ops::attention::scratch_elems(B, T, H, KV, D, 1)), dq(N * H * D), dk(N * KV * D),
      dv(N * KV * D);
  lvt::ops::attention::forward(out.data(), lse.data(), scr.data(), q.data(), k.data(), v.data(),
                               B, T, H, KV, D);
  for (auto _ : s) {
    lvt::ops::attention::backward(dq.data(), dk.data(), dv.data(), scr.data(), dout.data(),
                                  q.data(), k.data(), v.data(), out.data(), lse.data(), B, T, H,
                                  KV, D);
    benchmark::DoNotOptimize(dq.data());
  }
  tokens(s);
}

void BM_swiglu_fwd_bwd(benchmark::State& s) {
  auto g = rnd(N * F, 10), u = rnd(N * F, 11), dy = rnd(N * F, 12);
  std::vector<float> y(N * F), dg(N * F), du(N * F);
  for (auto _ : s) {
    lvt::ops::swiglu::forward(y.data(), g.data(), u.data(), N, F);
    lvt::ops::swiglu::backward(dg.data(), du.data(), dy.data(), g.data(), u.data(), N, F);
    benchmark::DoNotOptimize(dg.data());
  }
  tokens(s);
}

// One LoRA projection in -> out (args), forward then backward (dx, dA, dB), dropout 0.05.
void BM_linear_lora_fwd_bwd(benchmark::State& s) {
  const int in = int(s.range(0)), out = int(s.range(1));
  auto x = rnd(std::size_t(N) * in, 13), W = rnd(std::size_t(out) * in, 14),
       A = rnd(std::size_t(R) * in, 15), Bm = rnd(std::size_t(out) * R, 16),
       dy = rnd(std::size_t(N) * out, 17);
  std::vector<float> y(std::size_t(N) * out), dx(std::size_t(N) * in), dA(R * in), dB(out * R),
      scr(lvt::ops::linear::scratch_elems(N, in, R));
  const lvt::ops::linear::Lora<float> lora{A.data(), Bm.data(), R, 2.0f, 0.05f, 1};
  for (auto _ : s) {
    lvt::ops::linear::forward(y.data(), scr.data(), x.data(), W.data(), (float*)nullptr, lora, N,
                              in, out);
    lvt::ops::linear::backward(dx.data(), {dA.data(), dB.data()}, scr.data(), dy.data(), x.data(),
                               W.data(), lora, N, in, out);
    benchmark::DoNotOptimize(dx.data());
  }
  tokens(s);
  s.counters["GFLOP/s"] = benchmark::Counter(
      double(s.iterations()) * 2.0 * N * in * out * 2, benchmark::Counter::kIsRate,
      benchmark::Counter::kIs1000);
}

void BM_cross_entropy_fused(benchmark::State& s) {
  const int chunk = int(s.range(0));
  auto h = rnd(N * C, 18), W = rnd(std::size_t(V) * C, 19, -0.05f, 0.05f);
  std::vector<std::int32_t> labels(N);
  for (int i = 0; i < N; i++) labels[i] = (i * 7919) % V;
  std::vector<float> dh(N * C), scr(lvt::ops::cross_entropy::scratch_elems(chunk, V, C));
  for (auto _ : s) {
    auto r = lvt::ops::cross_entropy::forward_backward(dh.data(), scr.data(), h.data(), W.data(),
                                                       labels.data(), N, C, V, chunk);
    benchmark::DoNotOptimize(r.loss_sum);
  }
  tokens(s);
  s.counters["GFLOP/s"] = benchmark::Counter(double(s.iterations()) * 2.0 * N * C * V * 2,
                                             benchmark::Counter::kIsRate,
                                             benchmark::Counter::kIs1000);
}

// AdamW over the LoRA parameters of 4 layers x 7 projections at r 16.
void BM_adamw_lora_params(benchmark::State& s) {
  const std::int64_t n = 4 * std::int64_t(R) * (4 * 2 * C + 2 * C + 2 * 2 * (C + F) + (F + C));
  auto p = rnd(n, 20), g = rnd(n, 21);
  std::vector<float> m(n), v(n);
  std::int64_t step = 0;
  for (auto _ : s) {
    lvt::ops::adamw::step(p.data(), m.data(), v.data(), g.data(), n, {}, ++step);
    benchmark::DoNotOptimize(p.data());
  }
  s.SetItemsProcessed(std::int64_t(s.iterations()) * n);
}

// One whole decoder layer, forward then backward, LoRA r 16 on all seven projections (dropout
// 0.05), written as the block program will call the ops; activations kept (no recompute).
// Four of these plus the lm-head line above are the host step of the small model.
void BM_decoder_layer_fwd_bwd(benchmark::State& s) {
  namespace op = lvt::ops;
  constexpr int QD = H * D, KVD = KV * D;
  enum { q, k, v, o, gate, up, down, n_proj };
  const int in[n_proj] = {C, C, C, QD, C, C, F}, out[n_proj] = {QD, KVD, KVD, C, F, F, C};
  std::vector<float> W[n_proj], A[n_proj], Bm[n_proj], dA[n_proj], dB[n_proj];
  for (int p = 0; p < n_proj; p++) {
    W[p] = rnd(std::size_t(in[p]) * out[p], 30 + p, -0.05f, 0.05f);
    A[p] = rnd(std::size_t(R) * in[p], 40 + p, -0.05f, 0.05f);
    Bm[p] = rnd(std::size_t(out[p]) * R, 50 + p, -0.05f, 0.05f);
    dA[p].assign(A[p].size(), 0.f);
    dB[p].assign(Bm[p].size(), 0.f);
  }
  auto lora = [&](int p) { return op::linear::Lora<float>{A[p].data(), Bm[p].data(), R, 2.0f, 0.05f, 7u + p}; };
  auto ln1 = rnd(C, 60, 0.9f, 1.1f), ln2 = rnd(C, 61, 0.9f, 1.1f), x = rnd(N * C, 62),
       dres0 = rnd(N * C, 63);
  std::vector<float> inv(D / 2), cs(T * D / 2), sn(T * D / 2);
  for (int i = 0; i < D / 2; i++) inv[i] = std::pow(10000.0f, -2.0f * i / D);
  op::rope::tables(cs.data(), sn.data(), inv.data(), T, D / 2);
  std::vector<float> h1(N * C), r1(N), qv(N * QD), kv(N * KVD), vv(N * KVD), att(N * QD),
      lse(B * H * T), tmp(N * C), xm(N * C), h2(N * C), r2(N), g(N * F), u(N * F), act(N * F),
      xo(N * C), scr(op::linear::scratch_elems(N, F, R)), ascr(op::attention::scratch_elems(B, T, H, KV, D, 1)), dres(N * C), dact(N * F),
      dg(N * F), du(N * F), dln(N * C), datt(N * QD), dq(N * QD), dk(N * KVD), dv(N * KVD),
      dqp(N * QD), dkp(N * KVD);
  auto fwd = [&](int p, float* y, const float* xin) {
    op::linear::forward(y, scr.data(), xin, W[p].data(), (const float*)nullptr, lora(p), N, in[p], out[p]);
  };
  auto bwd = [&](int p, float* dx, const float* dy, const float* xin) {
    op::linear::backward(dx, {dA[p].data(), dB[p].data()}, scr.data(), dy, xin, W[p].data(), lora(p), N, in[p], out[p]);
  };
  auto zero = [](std::vector<float>& z) { std::fill(z.begin(), z.end(), 0.f); };
  for (auto _ : s) {
    op::rmsnorm::forward(h1.data(), r1.data(), x.data(), ln1.data(), N, C, 1e-5);
    fwd(q, qv.data(), h1.data()), fwd(k, kv.data(), h1.data()), fwd(v, vv.data(), h1.data());
    op::rope::forward(qv.data(), qv.data(), cs.data(), sn.data(), B, T, H, D, D);
    op::rope::forward(kv.data(), kv.data(), cs.data(), sn.data(), B, T, KV, D, D);
    op::attention::forward(att.data(), lse.data(), ascr.data(), qv.data(), kv.data(), vv.data(), B, T, H, KV, D);
    fwd(o, tmp.data(), att.data());
    op::residual::forward(xm.data(), x.data(), tmp.data(), N * C);
    op::rmsnorm::forward(h2.data(), r2.data(), xm.data(), ln2.data(), N, C, 1e-5);
    fwd(gate, g.data(), h2.data()), fwd(up, u.data(), h2.data());
    op::swiglu::forward(act.data(), g.data(), u.data(), N, F);
    fwd(down, tmp.data(), act.data());
    op::residual::forward(xo.data(), xm.data(), tmp.data(), N * C);
    // backward
    dres = dres0;
    zero(dact), zero(dg), zero(du), zero(dln), zero(datt), zero(dq), zero(dk), zero(dv),
        zero(dqp), zero(dkp);
    bwd(down, dact.data(), dres.data(), act.data());
    op::swiglu::backward(dg.data(), du.data(), dact.data(), g.data(), u.data(), N, F);
    bwd(gate, dln.data(), dg.data(), h2.data()), bwd(up, dln.data(), du.data(), h2.data());
    op::rmsnorm::backward(dres.data(), (float*)nullptr, dln.data(), xm.data(), ln2.data(), r2.data(), N, C);
    bwd(o, datt.data(), dres.data(), att.data());
    op::attention::backward(dq.data(), dk.data(), dv.data(), ascr.data(), datt.data(), qv.data(), kv.data(),
                            vv.data(), att.data(), lse.data(), B, T, H, KV, D);
    op::rope::backward(dqp.data(), dq.data(), cs.data(), sn.data(), B, T, H, D, D);
    op::rope::backward(dkp.data(), dk.data(), cs.data(), sn.data(), B, T, KV, D, D);
    zero(dln);
    bwd(q, dln.data(), dqp.data(), h1.data()), bwd(k, dln.data(), dkp.data(), h1.data()),
        bwd(v, dln.data(), dv.data(), h1.data());
    op::rmsnorm::backward(dres.data(), (float*)nullptr, dln.data(), x.data(), ln1.data(), r1.data(), N, C);
    benchmark::DoNotOptimize(dres.data());
  }
  tokens(s);
}

}  // namespace

BENCHMARK(BM_rmsnorm_fwd_bwd)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_rope_fwd_bwd)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_attention_fwd)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_attention_bwd)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_swiglu_fwd_bwd)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_linear_lora_fwd_bwd)->Args({C, C})->Args({C, F})->Args({F, C})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_cross_entropy_fused)->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_decoder_layer_fwd_bwd)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_adamw_lora_params)->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
