// The graph-friendly step ops on the device against their host references, on fresh random
// inputs: the deterministic gradient-norm reduction and clip, AdamW reading its hyper-parameters
// from device memory (and skipping on found_inf), GradScaler's unscale / update, the fused
// lm-head loss that reads its gradient scale from device memory; then all of them captured once
// into a CUDA graph and replayed with new device scalars. Without a GPU: exit 77 (skipped).
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <random>
#include <vector>

#include "lvt/ops/adamw.hpp"
#include "lvt/ops/cross_entropy.hpp"
#include "lvt/ops/grad_clip.hpp"
#include "lvt/ops/loss_scale.hpp"
#include "lvt/ops/matmul.hpp"
#include "lvt/ops/rope.hpp"
#include "lvt/model/presets.hpp"
#include "../gpu_util.hpp"

using namespace lvt;
using namespace lvt::test;

namespace {

// A device buffer of n T's, optionally filled from the host.
template <class T>
struct Dev {
  T* p = nullptr;
  std::size_t n = 0;
  explicit Dev(std::size_t count) : n(count) {
    LVT_CUDA_CHECK(cudaMalloc(&p, (n ? n : 1) * sizeof(T)));
  }
  explicit Dev(const std::vector<T>& v) : Dev(v.size()) { put(v); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  void put(const std::vector<T>& v) {
    REQUIRE(v.size() == n);
    LVT_CUDA_CHECK(cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice));
    LVT_CUDA_CHECK(cudaDeviceSynchronize());  // a pageable copy may return before it lands
  }
  std::vector<T> get() const {
    std::vector<T> v(n);
    LVT_CUDA_CHECK(cudaDeviceSynchronize());
    LVT_CUDA_CHECK(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
  T value() const { return get().at(0); }
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

}  // namespace

// ---- grad_clip ---------------------------------------------------------------------------------

TEST_CASE("grad_clip: device sum of squares (deterministic, in pieces) and clip vs host") {
  const std::int64_t n = 1'000'003;
  const auto g = random_floats(std::size_t(n), 301, -0.01f, 0.01f);
  Dev<float> dg(g);
  Dev<double> partials(ops::grad_clip::cuda::sum_squares_partials), sum(1);
  const double want = ops::grad_clip::sum_squares(g.data(), n);

  ops::grad_clip::cuda::sum_squares(dg.p, n, partials.p, sum.p, false, nullptr);
  const double got = sum.value();
  CHECK(got == doctest::Approx(want).epsilon(1e-10));  // double sums, different orders
  ops::grad_clip::cuda::sum_squares(dg.p, n, partials.p, sum.p, false, nullptr);
  CHECK(sum.value() == got);  // bit for bit, run to run

  // two pieces, the second accumulated; an empty piece adds nothing
  const std::int64_t cut = 333'331;
  ops::grad_clip::cuda::sum_squares(dg.p, cut, partials.p, sum.p, false, nullptr);
  ops::grad_clip::cuda::sum_squares(dg.p + cut, n - cut, partials.p, sum.p, true, nullptr);
  ops::grad_clip::cuda::sum_squares(dg.p, 0, partials.p, sum.p, true, nullptr);
  CHECK(sum.value() == doctest::Approx(want).epsilon(1e-10));
  // a small piece (fewer blocks than partials) and an empty one overwriting
  ops::grad_clip::cuda::sum_squares(dg.p, 1000, partials.p, sum.p, false, nullptr);
  CHECK(sum.value() == doctest::Approx(ops::grad_clip::sum_squares(g.data(), 1000)).epsilon(1e-12));
  ops::grad_clip::cuda::sum_squares(dg.p, 0, partials.p, sum.p, false, nullptr);
  CHECK(sum.value() == 0.0);

  // clip: norm ~ 5.8, max_norm 1 clips; the coefficient comes from the device sum
  ops::grad_clip::cuda::sum_squares(dg.p, n, partials.p, sum.p, false, nullptr);
  const double dev_sum = sum.value();
  ops::grad_clip::cuda::scale_by_clip(dg.p, n, sum.p, 1.0f, nullptr);
  auto host = g;
  const double coef = ops::grad_clip::clip_coef(std::sqrt(dev_sum), 1.0);
  REQUIRE(coef < 0.5);
  ops::grad_clip::scale(host.data(), n, coef);
  CHECK(same_bits(dg.get(), host));  // same double coef, same float multiply
  auto host_ref = g;
  ops::grad_clip::clip<float>(std::vector<ops::grad_clip::Grad<float>>{{host_ref.data(), n}}, 1.0);
  check_close(dg.get(), host_ref, 1e-5, "clipped gradient vs host clip");

  // below max_norm: untouched
  dg.put(g);
  ops::grad_clip::cuda::scale_by_clip(dg.p, n, sum.p, 100.0f, nullptr);
  CHECK(same_bits(dg.get(), g));

  // a NaN gradient: NaN norm, NaN everywhere (torch, error_if_nonfinite=False)
  auto bad = g;
  bad[123457] = NAN;
  dg.put(bad);
  ops::grad_clip::cuda::sum_squares(dg.p, n, partials.p, sum.p, false, nullptr);
  CHECK(std::isnan(sum.value()));
  ops::grad_clip::cuda::scale_by_clip(dg.p, n, sum.p, 1.0f, nullptr);
  const auto after = dg.get();
  CHECK(std::isnan(after[0]));
  CHECK(std::isnan(after[std::size_t(n - 1)]));

  CHECK_THROWS_WITH_AS(ops::grad_clip::cuda::scale_by_clip(dg.p, n, sum.p, 0.0f, nullptr),
                       "grad_clip: max_norm must be positive (got 0.000000)", Error);
}

// ---- adamw -------------------------------------------------------------------------------------

TEST_CASE("adamw: device hyper-parameter block vs host, three steps; skip leaves p, m, v") {
  const int n = 50'001;
  auto p = random_floats(n, 311), m = random_floats(n, 312, 0, 0.1f), v = random_floats(n, 313, 0, 0.01f);
  const auto g = random_floats(n, 314);
  Dev<float> dp(p), dm(m), dv(v), dg(g), skip(1);
  Dev<ops::adamw::DeviceHyper> dh(1);
  const ops::adamw::Hyper h{1e-3, 0.9, 0.999, 1e-8, 0.01};
  dh.put({ops::adamw::device_hyper(h, 0)});
  skip.put({0.0f});
  for (int s = 1; s <= 3; ++s) {
    ops::adamw::step(p.data(), m.data(), v.data(), g.data(), n, h, s);
    ops::adamw::cuda::advance_step(dh.p, skip.p, nullptr);
    ops::adamw::cuda::step(dp.p, dm.p, dv.p, dg.p, n, dh.p, skip.p, nullptr);
  }
  CHECK(dh.value().step == 3);
  check_close(dp.get(), p, 1e-5, "adamw params");
  check_close(dm.get(), m, 1e-5, "adamw m");
  check_close(dv.get(), v, 1e-5, "adamw v");

  // found_inf set: neither the step count nor p, m, v move
  const auto p3 = dp.get(), m3 = dm.get(), v3 = dv.get();
  skip.put({1.0f});
  ops::adamw::cuda::advance_step(dh.p, skip.p, nullptr);
  ops::adamw::cuda::step(dp.p, dm.p, dv.p, dg.p, n, dh.p, skip.p, nullptr);
  CHECK(dh.value().step == 3);
  CHECK(same_bits(dp.get(), p3));
  CHECK(same_bits(dm.get(), m3));
  CHECK(same_bits(dv.get(), v3));

  // no skip pointer: a fourth step with a new lr written to the block
  ops::adamw::Hyper h4 = h;
  h4.lr = 5e-4;
  dh.put({ops::adamw::device_hyper(h4, 4)});
  ops::adamw::step(p.data(), m.data(), v.data(), g.data(), n, h4, 4);
  ops::adamw::cuda::step(dp.p, dm.p, dv.p, dg.p, n, dh.p, nullptr);
  check_close(dp.get(), p, 1e-5, "adamw params, step 4");
  check_close(dv.get(), v, 1e-5, "adamw v, step 4");
}

// ---- loss_scale --------------------------------------------------------------------------------

TEST_CASE("loss_scale: device unscale / found_inf / update vs host GradScaler rules") {
  const std::int64_t n = 300'007;
  const auto g0 = random_floats(std::size_t(n), 321, -3000, 3000);
  Dev<float> dg(g0);
  Dev<ops::loss_scale::State> ds(1);
  const ops::loss_scale::Settings st{.growth_factor = 2, .backoff_factor = 0.5, .growth_interval = 3};

  for (float scale : {65536.0f, 3.0f}) {
    CAPTURE(scale);
    ops::loss_scale::State hs{.scale = scale, .growth_tracker = 0, .found_inf = 1};
    ds.put({hs});
    dg.put(g0);
    ops::loss_scale::cuda::begin(ds.p, nullptr);
    ops::loss_scale::cuda::unscale_and_check(dg.p, n, ds.p, nullptr);
    auto hg = g0;
    ops::loss_scale::begin(hs);
    ops::loss_scale::unscale_and_check(hg.data(), n, hs);
    CHECK(same_bits(dg.get(), hg));
    check_close(dg.get(), hg, 1e-5, "unscaled gradient");
    CHECK(ds.value().found_inf == 0.0f);
  }

  // an inf in the second piece sets the flag; a clean third piece does not clear it
  auto bad = g0;
  bad[std::size_t(n - 2)] = INFINITY;
  dg.put(bad);
  ds.put({ops::loss_scale::State{}});
  ops::loss_scale::cuda::begin(ds.p, nullptr);
  ops::loss_scale::cuda::unscale_and_check(dg.p, 1000, ds.p, nullptr);
  CHECK(ds.value().found_inf == 0.0f);
  ops::loss_scale::cuda::unscale_and_check(dg.p + 1000, n - 1000, ds.p, nullptr);
  CHECK(ds.value().found_inf == 1.0f);
  dg.put(g0);
  ops::loss_scale::cuda::unscale_and_check(dg.p, n, ds.p, nullptr);
  CHECK(ds.value().found_inf == 1.0f);
  bad = g0;
  bad[5] = NAN;
  dg.put(bad);
  ops::loss_scale::cuda::begin(ds.p, nullptr);
  ops::loss_scale::cuda::unscale_and_check(dg.p, n, ds.p, nullptr);
  CHECK(ds.value().found_inf == 1.0f);

  // update: a random found_inf script of 40 steps, device and host in lockstep
  std::mt19937_64 rng(322);
  ops::loss_scale::State hs;
  ds.put({hs});
  for (int k = 0; k < 40; k++) {
    CAPTURE(k);
    const float inf = rng() % 4 == 0 ? 1.0f : 0.0f;
    ops::loss_scale::begin(hs);
    hs.found_inf = inf;
    ops::loss_scale::update(hs, st);
    auto d = ds.value();
    d.found_inf = inf;
    ds.put({d});
    ops::loss_scale::cuda::update(ds.p, st, nullptr);
    const auto got = ds.value();
    CHECK(got.scale == hs.scale);
    CHECK(got.growth_tracker == hs.growth_tracker);
  }
  // growth would overflow: the scale stays
  ds.put({ops::loss_scale::State{.scale = 3e38f, .growth_tracker = 2, .found_inf = 0}});
  ops::loss_scale::cuda::update(ds.p, st, nullptr);
  CHECK(ds.value().scale == 3e38f);
  CHECK(ds.value().growth_tracker == 0);
}

// ---- cross_entropy -----------------------------------------------------------------------------

template <class S>
void loss_device_case() {
  const std::int64_t n = 45, dim = 96, vocab = 1000, chunk = 16;
  const auto h = rounded<S>(random_floats(std::size_t(n * dim), 331));
  const auto W = rounded<S>(random_floats(std::size_t(vocab * dim), 332));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  std::mt19937_64 rng(333);
  for (auto& l : labels) l = std::int32_t(rng() % vocab);
  labels[7] = -100;
  labels[20] = -100;
  labels[44] = -100;
  std::vector<float> dh(h.size()), scratch(std::size_t(ops::cross_entropy::scratch_elems(chunk, vocab, dim)));
  const auto want = ops::cross_entropy::forward_backward(dh.data(), scratch.data(), h.data(), W.data(),
                                                         labels.data(), n, dim, vocab, chunk, 0.5);
  Dev<S> dH(to_storage<S>(h)), dW(to_storage<S>(W)), dD(h.size());
  Dev<std::int32_t> dl(labels);
  Dev<float> rows(static_cast<std::size_t>(n)), grad_scale(std::vector<float>{float(0.5 / double(want.count))});
  Dev<float> loss_sum(1), kept(1);
  Dev<char> sc(std::size_t(ops::cross_entropy::cuda::scratch_bytes<S>(chunk, vocab)));
  Dev<char> ws(4 << 20);
  ops::matmul::cuda::Gemm gemm(ws.p, 4 << 20);
  ops::cross_entropy::cuda::forward_backward_device<S>(dD.p, sc.p, rows.p, dH.p, dW.p, dl.p, n, dim, vocab,
                                                       chunk, grad_scale.p, loss_sum.p, kept.p, gemm, nullptr);
  CHECK(kept.value() == float(want.count));
  CHECK(loss_sum.value() == doctest::Approx(want.loss_sum).epsilon(sizeof(S) == 4 ? 1e-5 : 1e-3));
  check_close(to_floats(dD.get()), dh, sizeof(S) == 4 ? 1e-5 : 1e-2, "d hidden");
  // ignored positions: zero gradient rows
  const auto got = to_floats(dD.get());
  for (std::int64_t i = 0; i < dim; i++) CHECK(got[std::size_t(20 * dim + i)] == 0.0f);

  // loss only (dhidden null), and a label outside the vocabulary shows up as a NaN loss
  labels[3] = std::int32_t(vocab + 5);
  dl.put(labels);
  ops::cross_entropy::cuda::forward_backward_device<S>(nullptr, sc.p, rows.p, dH.p, dW.p, dl.p, n, dim, vocab,
                                                       chunk, grad_scale.p, loss_sum.p, kept.p, gemm, nullptr);
  CHECK(std::isnan(loss_sum.value()));
  CHECK(kept.value() == float(want.count));
}

TEST_CASE("cross_entropy: graph-friendly fused loss (device grad scale, device sums) vs host, fp32 and bf16") {
  loss_device_case<float>();
  loss_device_case<lvt::bf16>();
}

// ---- all of it in one captured graph -------------------------------------------------------------

TEST_CASE("step ops capture into a CUDA graph; replays read new device scalars") {
  const std::int64_t tokens = 24, dim = 64, vocab = 500, chunk = 8, n_lora = 10'007;
  const auto h = random_floats(std::size_t(tokens * dim), 341), W = random_floats(std::size_t(vocab * dim), 342);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(tokens));
  std::mt19937_64 rng(343);
  for (auto& l : labels) l = std::int32_t(rng() % vocab);
  labels[2] = -100;
  auto p = random_floats(std::size_t(n_lora), 344), m = random_floats(std::size_t(n_lora), 345, 0, 0.1f),
       v = random_floats(std::size_t(n_lora), 346, 0, 0.01f);
  const auto g0 = random_floats(std::size_t(n_lora), 347, -100, 100);

  Dev<float> dH(h), dW(W), dD(h.size()), rows(static_cast<std::size_t>(tokens)), grad_scale(1), loss_sum(1), kept(1);
  Dev<std::int32_t> dl(labels);
  Dev<char> sc(std::size_t(ops::cross_entropy::cuda::scratch_bytes<float>(chunk, vocab))), ws(4 << 20);
  Dev<float> dp(p), dm(m), dv(v), dg(static_cast<std::size_t>(n_lora));
  Dev<double> partials(ops::grad_clip::cuda::sum_squares_partials), sum(1);
  Dev<ops::loss_scale::State> ds(1);
  Dev<ops::adamw::DeviceHyper> dhyp(1);
  ops::matmul::cuda::Gemm gemm(ws.p, 4 << 20);
  const ops::loss_scale::Settings st{.growth_factor = 2, .backoff_factor = 0.5, .growth_interval = 2};
  ops::adamw::Hyper hyper{1e-3, 0.9, 0.999, 1e-8, 0.01};
  ds.put({ops::loss_scale::State{.scale = 1024, .growth_tracker = 0, .found_inf = 0}});
  dhyp.put({ops::adamw::device_hyper(hyper, 0)});

  cudaStream_t stream;
  LVT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const float* found_inf = ops::loss_scale::found_inf_ptr(ds.p);
  auto issue_step = [&] {
    ops::cross_entropy::cuda::forward_backward_device<float>(dD.p, sc.p, rows.p, dH.p, dW.p, dl.p, tokens, dim,
                                                             vocab, chunk, grad_scale.p, loss_sum.p, kept.p, gemm,
                                                             stream);
    ops::loss_scale::cuda::begin(ds.p, stream);
    ops::loss_scale::cuda::unscale_and_check(dg.p, n_lora, ds.p, stream);
    ops::grad_clip::cuda::sum_squares(dg.p, n_lora, partials.p, sum.p, false, stream);
    ops::grad_clip::cuda::scale_by_clip(dg.p, n_lora, sum.p, 1.0f, stream);
    ops::adamw::cuda::advance_step(dhyp.p, found_inf, stream);
    ops::adamw::cuda::step(dp.p, dm.p, dv.p, dg.p, n_lora, dhyp.p, found_inf, stream);
    ops::loss_scale::cuda::update(ds.p, st, stream);
  };
  // One eager run first (modules load lazily, cuBLASLt picks its kernels), as before any
  // capture; then the state is put back.
  dg.put(g0);
  grad_scale.put({1.0f});
  issue_step();
  LVT_CUDA_CHECK(cudaStreamSynchronize(stream));
  dp.put(p);
  dm.put(m);
  dv.put(v);
  ds.put({ops::loss_scale::State{.scale = 1024, .growth_tracker = 0, .found_inf = 0}});
  dhyp.put({ops::adamw::device_hyper(hyper, 0)});

  cudaGraph_t graph;
  cudaGraphExec_t exec;
  LVT_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  issue_step();
  LVT_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  LVT_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));

  // the host replica of the same step
  ops::loss_scale::State hs{.scale = 1024, .growth_tracker = 0, .found_inf = 0};
  std::int64_t host_step = 0;
  std::vector<float> dh_host(h.size()), scratch(std::size_t(ops::cross_entropy::scratch_elems(chunk, vocab, dim)));
  for (int replay = 0; replay < 4; replay++) {
    CAPTURE(replay);
    const double gs = 1.0 + replay;  // a new loss multiplier per replay
    const auto want = ops::cross_entropy::forward_backward(dh_host.data(), scratch.data(), h.data(), W.data(),
                                                           labels.data(), tokens, dim, vocab, chunk, gs);
    grad_scale.put({float(gs / double(want.count))});
    // the host rewrites the lr field only (the schedule); the step count lives on the device
    hyper.lr = 1e-3 / (1 + replay);
    const double lr = hyper.lr;
    LVT_CUDA_CHECK(cudaMemcpy(reinterpret_cast<char*>(dhyp.p) + offsetof(ops::adamw::DeviceHyper, lr), &lr,
                              sizeof lr, cudaMemcpyHostToDevice));
    LVT_CUDA_CHECK(cudaDeviceSynchronize());
    auto g = g0;
    if (replay == 2) g[77] = INFINITY;  // this step is skipped and backs the scale off
    dg.put(g);
    LVT_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    LVT_CUDA_CHECK(cudaStreamSynchronize(stream));

    CHECK(loss_sum.value() == doctest::Approx(want.loss_sum).epsilon(1e-5));
    CHECK(kept.value() == float(want.count));
    check_close(dD.get(), dh_host, 1e-5, "d hidden, replayed");

    ops::loss_scale::begin(hs);
    ops::loss_scale::unscale_and_check(g.data(), n_lora, hs);
    const double ss = ops::grad_clip::sum_squares(g.data(), n_lora);
    ops::grad_clip::scale(g.data(), n_lora, ops::grad_clip::clip_coef(std::sqrt(ss), 1.0));
    if (!ops::loss_scale::skipped(hs)) {
      host_step++;
      ops::adamw::step(p.data(), m.data(), v.data(), g.data(), n_lora, hyper, host_step);
    }
    ops::loss_scale::update(hs, st);
    CHECK(dhyp.value().step == host_step);
    CHECK(ds.value().scale == hs.scale);
    CHECK(ds.value().growth_tracker == hs.growth_tracker);
    check_close(dp.get(), p, 1e-5, "adamw params, replayed");
    check_close(dm.get(), m, 1e-5, "adamw m, replayed");
  }
  CHECK(host_step == 3);
  CHECK(hs.scale == 1024.0f);  // grew at replay 1 (2048), backed off at 2 (1024), tracker 1 at 3
  LVT_CUDA_CHECK(cudaGraphExecDestroy(exec));
  LVT_CUDA_CHECK(cudaGraphDestroy(graph));
  LVT_CUDA_CHECK(cudaStreamDestroy(stream));
}

// ---- rope tables -------------------------------------------------------------------------------

TEST_CASE("rope: the device cos / sin tables the backend builds each step equal the host's") {
  // Plain theta (Qwen2.5), llama3 frequency scaling (Llama 3.2), partial rotary (0.75 of the head,
  // as phi3) with linear scaling; 32k positions, where the fp32 angle is large.
  ModelConfig partial = presets::llama_3_2_1b;
  partial.partial_rotary_factor = 0.75;
  partial.rope_scaling = RopeScaling::linear;
  partial.rope_factor = 4.0;
  for (const ModelConfig& c : {presets::qwen2_5_7b, presets::llama_3_2_1b, partial}) {
    const int half = ops::rope::inv_freq_elems(c);
    const std::int64_t seq = 32768;
    std::vector<float> inv(static_cast<std::size_t>(half));
    ops::rope::inv_freq(inv.data(), c);
    std::vector<float> cs(std::size_t(seq) * half), sn(cs.size());
    ops::rope::tables(cs.data(), sn.data(), inv.data(), seq, half);
    Dev<float> dinv(inv), dcs(cs.size()), dsn(sn.size());
    ops::rope::cuda::tables(dcs.p, dsn.p, dinv.p, seq, half, nullptr);
    INFO("rotary_dim " << c.rotary_dim() << ", theta " << c.rope_theta);
    // Both take the angle in fp32 and cos / sin in double: at most one float rounding apart.
    check_close(dcs.get(), cs, 1e-6, "rope cos table");
    check_close(dsn.get(), sn, 1e-6, "rope sin table");
  }
}

#include "../gpu_main.hpp"
