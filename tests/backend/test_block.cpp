// The block program (model/block.hpp) in double precision over a whole 2-layer model
// (embedding -> 2 decoder layers -> final norm -> fused lm-head + cross-entropy): its LoRA
// gradients, through model::block_backward, against central differences of the loss.
#include <doctest/doctest.h>

#include <vector>

#include "../ops/fd.hpp"
#include "lvt/backend/host.hpp"
#include "lvt/model/block.hpp"
#include "lvt/ops/attention.hpp"
#include "lvt/ops/cross_entropy.hpp"
#include "lvt/ops/embedding.hpp"
#include "lvt/ops/linear.hpp"
#include "lvt/ops/residual.hpp"
#include "lvt/ops/rmsnorm.hpp"
#include "lvt/ops/rope.hpp"
#include "lvt/ops/swiglu.hpp"

using namespace lvt;
using lvt_test::Vec;

namespace {

constexpr ModelConfig cfg{.arch = Arch::qwen2, .layers = 2, .hidden = 16, .heads = 4,
                          .kv_heads = 2, .head_dim = 4, .ffn = 24, .vocab = 20,
                          .rope_theta = 100.0, .partial_rotary_factor = 0.5, .norm_eps = 1e-5,
                          .qkv_bias = true, .max_position = 64};
constexpr int B = 2, T = 5, N = B * T, R = 2;

struct Dense {
  Vec W[7], bias[3], norm[2], A[7], B[7];
};

std::int64_t in_of(int p) { return p == 3 ? cfg.q_dim() : p == 6 ? cfg.ffn : cfg.hidden; }
std::int64_t out_of(int p) {
  return p == 0 ? cfg.q_dim() : p < 3 ? cfg.kv_dim() : p == 3 ? cfg.hidden : p < 6 ? cfg.ffn : cfg.hidden;
}

// Ops over dense double weights, bound to one layer.
struct DenseOps : backend::HostElementOps<double> {
  Dense* d;
  Vec* dA;
  Vec* dB;
  Vec scratch;
  ops::linear::Lora<double> lora(int p) {
    ops::linear::Lora<double> l;
    l.A = d->A[p].data();
    l.B = d->B[p].data();
    l.rank = R;
    l.scale = 1.5;
    return l;
  }
  const double* norm(int which) const { return d->norm[which].data(); }
  void linear_forward(int p, double* y, const double* x, std::int64_t rows) {
    ops::linear::forward(y, scratch.data(), x, d->W[p].data(), p < 3 ? d->bias[p].data() : nullptr,
                         lora(p), rows, in_of(p), out_of(p));
  }
  void linear_backward(int p, double* dx, const double* dy, const double* x, std::int64_t rows) {
    ops::linear::backward(dx, ops::linear::LoraGrads<double>{dA[p].data(), dB[p].data()},
                          scratch.data(), dy, x, d->W[p].data(), lora(p), rows, in_of(p), out_of(p));
  }
};

struct Model {
  Dense layer[2];
  Vec embed, head, final_norm;
  std::vector<std::int32_t> tokens, labels;
  Vec cos, sin;
};

struct Buffers {
  std::vector<Vec> saved;  // 12 per layer
  Vec x[3];
  model::BlockSaved<double> view(int l) {
    Vec* s = &saved[std::size_t(l) * 12];
    return {s[0].data(), s[1].data(), s[2].data(), s[3].data(), s[4].data(), s[5].data(),
            s[6].data(), s[7].data(), s[8].data(), s[9].data(), s[10].data(), s[11].data()};
  }
};

model::BlockDims dims() {
  model::BlockDims d;
  d.batch = B;
  d.seq = T;
  d.hidden = cfg.hidden;
  d.heads = cfg.heads;
  d.kv_heads = cfg.kv_heads;
  d.head_dim = cfg.head_dim;
  d.rotary_dim = cfg.rotary_dim();
  d.ffn = cfg.ffn;
  d.eps = cfg.norm_eps;
  return d;
}

// Loss (mean over labels) and, with grads, d loss / d A and d B of every layer.
double run(Model& m, std::vector<Vec>* grads) {
  const std::int64_t H = cfg.hidden, QD = cfg.q_dim(), KVD = cfg.kv_dim(), F = cfg.ffn;
  Buffers b;
  const std::int64_t sizes[12] = {N * H, N * QD, N * KVD, N * KVD, N * QD, N * H,
                                  N * H, N * F,  N * F,   N,       N,      N * cfg.heads};
  for (int l = 0; l < 2; ++l)
    for (std::int64_t s : sizes) b.saved.emplace_back(std::size_t(s), 0.0);
  for (Vec& x : b.x) x.assign(std::size_t(N * H), 0.0);
  ops::embedding::forward(b.x[0].data(), m.tokens.data(), m.embed.data(), N, cfg.vocab, H);
  Vec act(std::size_t(N * F)),
      row(std::size_t(ops::attention::scratch_elems(B, T, cfg.heads, cfg.kv_heads, cfg.head_dim, 1)));
  std::vector<Vec> dA(14), dB(14);
  for (int l = 0; l < 2; ++l)
    for (int p = 0; p < 7; ++p) {
      dA[std::size_t(l * 7 + p)].assign(std::size_t(R * in_of(p)), 0.0);
      dB[std::size_t(l * 7 + p)].assign(std::size_t(out_of(p) * R), 0.0);
    }
  auto ops_for = [&](int l) {
    DenseOps o;
    o.d = &m.layer[l];
    o.dA = &dA[std::size_t(l * 7)];
    o.dB = &dB[std::size_t(l * 7)];
    o.scratch.assign(std::size_t(ops::linear::scratch_elems(N, F, R)), 0.0);
    return o;
  };
  for (int l = 0; l < 2; ++l) {
    DenseOps o = ops_for(l);
    model::block_forward(o, dims(), b.view(l),
                         model::BlockForwardWork<double>{act.data(), row.data(), m.cos.data(), m.sin.data()},
                         b.x[l].data(), b.x[l + 1].data());
  }
  Vec xf(std::size_t(N * H)), rstd(N), dxf(std::size_t(N * H)), chunk(std::size_t(ops::cross_entropy::scratch_elems(3, cfg.vocab, H)));
  ops::rmsnorm::forward(xf.data(), rstd.data(), b.x[2].data(), m.final_norm.data(), N, H, cfg.norm_eps);
  const auto r = ops::cross_entropy::forward_backward(grads ? dxf.data() : static_cast<double*>(nullptr),
                                                      chunk.data(), xf.data(), m.head.data(),
                                                      m.labels.data(), N, H, cfg.vocab, 3);
  if (!grads) return r.mean();
  Vec g(std::size_t(N * H), 0.0);
  ops::rmsnorm::backward(g.data(), static_cast<double*>(nullptr), dxf.data(), b.x[2].data(),
                         m.final_norm.data(), rstd.data(), N, H);
  Vec w[12];
  const std::int64_t wsz[12] = {N * F, N * F, N * F, N * F, N * H, N * QD,
                                N * QD, N * KVD, N * KVD, N * QD, N * KVD, N * H};
  for (int i = 0; i < 12; ++i) w[i].assign(std::size_t(wsz[i]), 0.0);
  for (int l = 1; l >= 0; --l) {
    DenseOps o = ops_for(l);
    model::BlockBackwardWork<double> bw{w[0].data(), w[1].data(),  w[2].data(),  w[3].data(),
                                        w[4].data(), w[5].data(),  w[6].data(),  w[7].data(),
                                        w[8].data(), w[9].data(),  w[10].data(), w[11].data(),
                                        row.data(),  m.cos.data(), m.sin.data()};
    model::block_backward(o, dims(), b.view(l), bw, b.x[l].data(), g.data());
  }
  grads->clear();
  for (int i = 0; i < 14; ++i) {
    grads->push_back(dA[std::size_t(i)]);
    grads->push_back(dB[std::size_t(i)]);
  }
  return r.mean();
}

}  // namespace

TEST_CASE("block program: LoRA gradients of a whole 2-layer model match central differences (double)") {
  Model m;
  std::uint64_t seed = 100;
  for (int l = 0; l < 2; ++l) {
    Dense& d = m.layer[l];
    for (int p = 0; p < 7; ++p) {
      d.W[p] = lvt_test::random_vec(std::size_t(out_of(p) * in_of(p)), seed++, -0.4, 0.4);
      d.A[p] = lvt_test::random_vec(std::size_t(R * in_of(p)), seed++, -0.4, 0.4);
      d.B[p] = lvt_test::random_vec(std::size_t(out_of(p) * R), seed++, -0.4, 0.4);
    }
    for (int p = 0; p < 3; ++p) d.bias[p] = lvt_test::random_vec(std::size_t(out_of(p)), seed++, -0.1, 0.1);
    for (int k = 0; k < 2; ++k) d.norm[k] = lvt_test::random_vec(std::size_t(cfg.hidden), seed++, 0.8, 1.2);
  }
  m.embed = lvt_test::random_vec(std::size_t(cfg.vocab * cfg.hidden), seed++);
  m.head = lvt_test::random_vec(std::size_t(cfg.vocab * cfg.hidden), seed++);
  m.final_norm = lvt_test::random_vec(std::size_t(cfg.hidden), seed++, 0.8, 1.2);
  std::mt19937_64 rng(seed);
  for (int i = 0; i < N; ++i) m.tokens.push_back(std::int32_t(rng() % cfg.vocab));
  for (int i = 0; i < N; ++i) m.labels.push_back(i == 3 ? -100 : std::int32_t(rng() % cfg.vocab));
  const int half = cfg.rotary_dim() / 2;
  Vec inv(static_cast<std::size_t>(half));
  ops::rope::inv_freq(inv.data(), cfg);
  m.cos.assign(std::size_t(T * half), 0.0);
  m.sin.assign(std::size_t(T * half), 0.0);
  ops::rope::tables(m.cos.data(), m.sin.data(), inv.data(), T, half);

  std::vector<Vec> grads;
  const double loss = run(m, &grads);
  CHECK(std::isfinite(loss));
  double worst = 0;
  for (int l = 0; l < 2; ++l)
    for (int p = 0; p < 7; ++p) {
      Dense& d = m.layer[l];
      worst = std::max(worst, lvt_test::fd_check("A", d.A[p], grads[std::size_t((l * 7 + p) * 2)],
                                                 [&] { return run(m, nullptr); }));
      worst = std::max(worst, lvt_test::fd_check("B", d.B[p], grads[std::size_t((l * 7 + p) * 2 + 1)],
                                                 [&] { return run(m, nullptr); }));
    }
  MESSAGE("worst relative error over 28 LoRA tensors: " << worst);
}
