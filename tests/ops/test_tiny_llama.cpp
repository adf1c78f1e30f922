// A whole tiny 2-layer Llama written from the ops (the way the block program will call them),
// forward and backward, its LoRA gradients checked by central differences in double.
// hidden 32, 4 heads, 2 kv heads (GQA), ffn 64, vocab 50, seq 8, batch 2, LoRA r 4 on all seven
// projections, q/k/v biases, llama3 RoPE scaling (all three bands), dropout 0.1.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "fd.hpp"
#include "lvt/ops/attention.hpp"
#include "lvt/ops/cross_entropy.hpp"
#include "lvt/ops/embedding.hpp"
#include "lvt/ops/linear.hpp"
#include "lvt/ops/residual.hpp"
#include "lvt/ops/rmsnorm.hpp"
#include "lvt/ops/rope.hpp"
#include "lvt/ops/swiglu.hpp"

using namespace lvt;

namespace {

constexpr ModelConfig tiny{.arch = Arch::qwen2, .layers = 2, .hidden = 32, .heads = 4,
                           .kv_heads = 2, .head_dim = 8, .ffn = 64, .vocab = 50,
                           .rope_theta = 10.0, .rope_scaling = RopeScaling::llama3,
                           .rope_factor = 4.0, .rope_low_freq_factor = 1.0,
                           .rope_high_freq_factor = 4.0, .rope_original_max_position = 64,
                           .norm_eps = 1e-5, .qkv_bias = true, .max_position = 256};
constexpr int Bsz = 2, Seq = 8, N = Bsz * Seq, R = 4;
constexpr int C = tiny.hidden, QD = int(tiny.q_dim()), KVD = int(tiny.kv_dim()), F = tiny.ffn,
              V = tiny.vocab, H = tiny.heads, KV = tiny.kv_heads, D = tiny.head_dim;
constexpr float dropout_p = 0.1f;
constexpr int chunk_tokens = 5;

// The seven projections in PEFT's order, with (in, out).
enum Proj { q, k, v, o, gate, up, down, n_proj };
constexpr int proj_in[n_proj] = {C, C, C, QD, C, C, F};
constexpr int proj_out[n_proj] = {QD, KVD, KVD, C, F, F, C};

// Offsets of every LoRA A and B in one flat vector, so one FD loop covers them all.
struct LoraLayout {
  std::int64_t a[2][n_proj], b[2][n_proj], total = 0;
  LoraLayout() {
    for (int l = 0; l < 2; l++)
      for (int p = 0; p < n_proj; p++) {
        a[l][p] = total;
        total += std::int64_t(R) * proj_in[p];
        b[l][p] = total;
        total += std::int64_t(proj_out[p]) * R;
      }
  }
};
const LoraLayout layout;

template <class T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

struct Weights {  // frozen base (double; cast per run)
  std::vector<double> embed, final_norm, lm_head;
  std::vector<double> ln1[2], ln2[2], W[2][n_proj], bias[2][3];
  Weights() {
    std::uint64_t s = 1000;
    embed = lvt_test::random_vec(V * C, s++);
    final_norm = lvt_test::random_vec(C, s++, 0.8, 1.2);
    lm_head = lvt_test::random_vec(V * C, s++, -0.5, 0.5);
    for (int l = 0; l < 2; l++) {
      ln1[l] = lvt_test::random_vec(C, s++, 0.8, 1.2);
      ln2[l] = lvt_test::random_vec(C, s++, 0.8, 1.2);
      for (int p = 0; p < n_proj; p++)
        W[l][p] = lvt_test::random_vec(std::size_t(proj_in[p]) * proj_out[p], s++,
                                       -1.0 / std::sqrt(proj_in[p]), 1.0 / std::sqrt(proj_in[p]));
      for (int p = 0; p < 3; p++) bias[l][p] = lvt_test::random_vec(proj_out[p], s++, -0.1, 0.1);
    }
  }
};

template <class T>
struct Model {
  // frozen, in T
  std::vector<T> embed, final_norm, lm_head, ln1[2], ln2[2], W[2][n_proj], bias[2][3];
  std::vector<T> cos, sin;
  std::vector<std::int32_t> tokens, labels;
  // saved activations, per layer
  struct Acts {
    std::vector<T> x_in, ln1, rstd1, q, k, v, att, lse, x_mid, ln2, rstd2, gate, up, act;
  } acts[2];
  std::vector<T> x_final, norm_out, rstdf, scratch, att_scratch, ce_scratch;

  Model(const Weights& w, const std::vector<std::int32_t>& tok,
        const std::vector<std::int32_t>& lab)
      : tokens(tok), labels(lab) {
    embed = cast<T>(w.embed), final_norm = cast<T>(w.final_norm), lm_head = cast<T>(w.lm_head);
    for (int l = 0; l < 2; l++) {
      ln1[l] = cast<T>(w.ln1[l]), ln2[l] = cast<T>(w.ln2[l]);
      for (int p = 0; p < n_proj; p++) W[l][p] = cast<T>(w.W[l][p]);
      for (int p = 0; p < 3; p++) bias[l][p] = cast<T>(w.bias[l][p]);
    }
    std::vector<T> inv(ops::rope::inv_freq_elems(tiny));
    ops::rope::inv_freq(inv.data(), tiny);
    cos.resize(Seq * inv.size()), sin.resize(Seq * inv.size());
    ops::rope::tables(cos.data(), sin.data(), inv.data(), Seq, int(inv.size()));
    for (auto& a : acts) {
      a.x_in.resize(N * C), a.ln1.resize(N * C), a.rstd1.resize(N), a.q.resize(N * QD);
      a.k.resize(N * KVD), a.v.resize(N * KVD), a.att.resize(N * QD), a.lse.resize(Bsz * H * Seq);
      a.x_mid.resize(N * C), a.ln2.resize(N * C), a.rstd2.resize(N), a.gate.resize(N * F);
      a.up.resize(N * F), a.act.resize(N * F);
    }
    x_final.resize(N * C), norm_out.resize(N * C), rstdf.resize(N);
    scratch.resize(ops::linear::scratch_elems(N, F, R));
    att_scratch.resize(ops::attention::scratch_elems(Bsz, Seq, H, KV, D, 1));
    ce_scratch.resize(ops::cross_entropy::scratch_elems(chunk_tokens, V, C));
  }

  ops::linear::Lora<T> lora(const std::vector<T>& params, int l, int p) const {
    const T scale = T(ops::linear::lora_scale(8.0, R, false));
    return {params.data() + layout.a[l][p], params.data() + layout.b[l][p], R, scale, dropout_p,
            ops::dropout_seed(42, 0, l, p)};
  }

  void proj_forward(T* y, const T* x, const std::vector<T>& params, int l, int p) {
    ops::linear::forward(y, scratch.data(), x, W[l][p].data(), p < 3 ? bias[l][p].data() : nullptr,
                         lora(params, l, p), N, proj_in[p], proj_out[p]);
  }
  void proj_backward(T* dx, std::vector<T>& grads, const T* dy, const T* x,
                     const std::vector<T>& params, int l, int p) {
    ops::linear::backward(dx, {grads.data() + layout.a[l][p], grads.data() + layout.b[l][p]},
                          scratch.data(), dy, x, W[l][p].data(), lora(params, l, p), N,
                          proj_in[p], proj_out[p]);
  }

  // Mean token loss; when `grads` is given, d loss / d LoRA params accumulate into it.
  double step(const std::vector<T>& params, std::vector<T>* grads) {
    std::vector<T> x(N * C), tmp(N * C);
    ops::embedding::forward(x.data(), tokens.data(), embed.data(), N, V, C);
    for (int l = 0; l < 2; l++) {
      auto& a = acts[l];
      a.x_in = x;
      ops::rmsnorm::forward(a.ln1.data(), a.rstd1.data(), x.data(), ln1[l].data(), N, C, tiny.norm_eps);
      proj_forward(a.q.data(), a.ln1.data(), params, l, q);
      proj_forward(a.k.data(), a.ln1.data(), params, l, k);
      proj_forward(a.v.data(), a.ln1.data(), params, l, v);
      ops::rope::forward(a.q.data(), a.q.data(), cos.data(), sin.data(), Bsz, Seq, H, D, tiny.rotary_dim());
      ops::rope::forward(a.k.data(), a.k.data(), cos.data(), sin.data(), Bsz, Seq, KV, D, tiny.rotary_dim());
      ops::attention::forward(a.att.data(), a.lse.data(), att_scratch.data(), a.q.data(), a.k.data(),
                              a.v.data(), Bsz, Seq, H, KV, D);
      proj_forward(tmp.data(), a.att.data(), params, l, o);
      ops::residual::forward(a.x_mid.data(), x.data(), tmp.data(), N * C);
      ops::rmsnorm::forward(a.ln2.data(), a.rstd2.data(), a.x_mid.data(), ln2[l].data(), N, C, tiny.norm_eps);
      proj_forward(a.gate.data(), a.ln2.data(), params, l, gate);
      proj_forward(a.up.data(), a.ln2.data(), params, l, up);
      ops::swiglu::forward(a.act.data(), a.gate.data(), a.up.data(), N, F);
      proj_forward(tmp.data(), a.act.data(), params, l, down);
      ops::residual::forward(x.data(), a.x_mid.data(), tmp.data(), N * C);
    }
    x_final = x;
    ops::rmsnorm::forward(norm_out.data(), rstdf.data(), x.data(), final_norm.data(), N, C, tiny.norm_eps);
    std::vector<T> dnorm(N * C);
    const auto res = ops::cross_entropy::forward_backward(
        grads ? dnorm.data() : nullptr, ce_scratch.data(), norm_out.data(), lm_head.data(),
        labels.data(), N, C, V, chunk_tokens);
    if (!grads) return res.mean();

    // backward: dres is d loss / d residual stream, accumulated into by every branch
    std::vector<T> dres(N * C, T(0));
    ops::rmsnorm::backward(dres.data(), (T*)nullptr, dnorm.data(), x_final.data(), final_norm.data(),
                           rstdf.data(), N, C);
    for (int l = 1; l >= 0; l--) {
      auto& a = acts[l];
      std::vector<T> dact(N * F, T(0)), dgate(N * F, T(0)), dup(N * F, T(0)), dln(N * C, T(0));
      proj_backward(dact.data(), *grads, dres.data(), a.act.data(), params, l, down);
      ops::swiglu::backward(dgate.data(), dup.data(), dact.data(), a.gate.data(), a.up.data(), N, F);
      proj_backward(dln.data(), *grads, dgate.data(), a.ln2.data(), params, l, gate);
      proj_backward(dln.data(), *grads, dup.data(), a.ln2.data(), params, l, up);
      ops::rmsnorm::backward(dres.data(), (T*)nullptr, dln.data(), a.x_mid.data(), ln2[l].data(),
                             a.rstd2.data(), N, C);
      std::vector<T> datt(N * QD, T(0)), dq(N * QD, T(0)), dk(N * KVD, T(0)), dv(N * KVD, T(0));
      std::vector<T> dq_pre(N * QD, T(0)), dk_pre(N * KVD, T(0));
      proj_backward(datt.data(), *grads, dres.data(), a.att.data(), params, l, o);
      ops::attention::backward(dq.data(), dk.data(), dv.data(), att_scratch.data(), datt.data(),
                               a.q.data(), a.k.data(), a.v.data(), a.att.data(), a.lse.data(), Bsz,
                               Seq, H, KV, D);
      ops::rope::backward(dq_pre.data(), dq.data(), cos.data(), sin.data(), Bsz, Seq, H, D, tiny.rotary_dim());
      ops::rope::backward(dk_pre.data(), dk.data(), cos.data(), sin.data(), Bsz, Seq, KV, D, tiny.rotary_dim());
      std::fill(dln.begin(), dln.end(), T(0));
      proj_backward(dln.data(), *grads, dq_pre.data(), a.ln1.data(), params, l, q);
      proj_backward(dln.data(), *grads, dk_pre.data(), a.ln1.data(), params, l, k);
      proj_backward(dln.data(), *grads, dv.data(), a.ln1.data(), params, l, v);
      ops::rmsnorm::backward(dres.data(), (T*)nullptr, dln.data(), a.x_in.data(), ln1[l].data(),
                             a.rstd1.data(), N, C);
    }
    return res.mean();
  }
};

struct Data {
  std::vector<std::int32_t> tokens, labels;
  Data() {
    std::vector<double> r = lvt_test::random_vec(N, 77, 0, V);
    for (double x : r) tokens.push_back(std::int32_t(x));
    for (int b = 0; b < Bsz; b++)
      for (int t = 0; t < Seq; t++)
        labels.push_back(t + 1 < Seq ? tokens[b * Seq + t + 1] : ops::ignore_index);
    labels[3] = ops::ignore_index;  // a masked prompt token
  }
};

}  // namespace

TEST_CASE("tiny 2-layer Llama: LoRA gradients of the whole model by finite differences") {
  REQUIRE(validate(tiny) == nullptr);
  const Weights w;
  const Data data;
  Model<double> m(w, data.tokens, data.labels);
  std::vector<double> params = lvt_test::random_vec(layout.total, 5, -0.2, 0.2);
  REQUIRE(layout.total == 4096);
  std::vector<double> grads(layout.total, 0.0);
  const double loss = m.step(params, &grads);
  CHECK(std::isfinite(loss));
  CHECK(loss > 1.0);  // about log(50) for a random model
  auto f = [&] { return m.step(params, nullptr); };
  CHECK(f() == loss);  // forward alone reproduces the loss (dropout masks regenerate)
  // per target, so a failure names the projection
  const char* names[n_proj] = {"q", "k", "v", "o", "gate", "up", "down"};
  for (int l = 0; l < 2; l++)
    for (int p = 0; p < n_proj; p++)
      for (int ab = 0; ab < 2; ab++) {
        const std::int64_t off = ab == 0 ? layout.a[l][p] : layout.b[l][p];
        const std::int64_t n = std::int64_t(R) * (ab == 0 ? proj_in[p] : proj_out[p]);
        std::vector<double> sub(params.begin() + off, params.begin() + off + n);
        std::vector<double> gsub(grads.begin() + off, grads.begin() + off + n);
        auto fsub = [&] {
          std::copy(sub.begin(), sub.end(), params.begin() + off);
          return m.step(params, nullptr);
        };
        lvt_test::fd_check(std::string("layer ") + std::to_string(l) + " " + names[p] +
                               (ab == 0 ? " lora_A" : " lora_B"),
                           sub, gsub, fsub, 1e-6);
        std::copy(sub.begin(), sub.end(), params.begin() + off);
      }
}

TEST_CASE("tiny 2-layer Llama: float run agrees with double") {
  const Weights w;
  const Data data;
  Model<double> md(w, data.tokens, data.labels);
  Model<float> mf(w, data.tokens, data.labels);
  std::vector<double> params = lvt_test::random_vec(layout.total, 5, -0.2, 0.2);
  std::vector<double> gd(layout.total, 0.0);
  std::vector<float> gf(layout.total, 0.0f);
  const double ld = md.step(params, &gd);
  const double lf = mf.step(cast<float>(params), &gf);
  CHECK(lf == doctest::Approx(ld).epsilon(1e-5));
  double max_err = 0, max_g = 0;
  for (std::int64_t i = 0; i < layout.total; i++) {
    max_err = std::fmax(max_err, std::fabs(double(gf[i]) - gd[i]));
    max_g = std::fmax(max_g, std::fabs(gd[i]));
  }
  INFO("max |float - double| = " << max_err << " of max |g| = " << max_g);
  CHECK(max_err <= 1e-4 * max_g);
}
