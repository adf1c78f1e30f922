// Host side of the graph-friendly step ops: the math the CUDA kernels share with the host
// (clip coefficient, AdamW step scalars from the device hyper-parameter block, GradScaler's
// update rule and unscale), against known values and torch's rules, plus bad input.
#include <doctest/doctest.h>

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "fd.hpp"
#include "lvt/ops/adamw.hpp"
#include "lvt/ops/grad_clip.hpp"
#include "lvt/ops/loss_scale.hpp"

using namespace lvt;
using lvt_test::random_vec;

namespace {
std::vector<float> random_floats(std::size_t n, std::uint64_t seed, double lo = -1, double hi = 1) {
  const auto d = random_vec(n, seed, lo, hi);
  return std::vector<float>(d.begin(), d.end());
}
}  // namespace

// ---- grad_clip ---------------------------------------------------------------------------------

TEST_CASE("grad_clip: sum_squares in double, clip_coef as torch, scale by the float coef") {
  const auto g = random_floats(1001, 201);
  double want = 0;
  for (float x : g) want += double(x) * double(x);
  CHECK(ops::grad_clip::sum_squares(g.data(), 1001) == doctest::Approx(want).epsilon(1e-15));
  // in pieces, added by the caller
  CHECK(ops::grad_clip::sum_squares(g.data(), 400) + ops::grad_clip::sum_squares(g.data() + 400, 601) ==
        doctest::Approx(want).epsilon(1e-14));
  CHECK(ops::grad_clip::clip_coef(5.0, 1.0) == 1.0 / (5.0 + 1e-6));
  CHECK(ops::grad_clip::clip_coef(0.5, 1.0) == 1.0);  // clamp(max=1)
  CHECK(ops::grad_clip::clip_coef(0.0, 1.0) == 1.0);
  CHECK(ops::grad_clip::clip_coef(INFINITY, 1.0) == 0.0);
  CHECK(std::isnan(ops::grad_clip::clip_coef(NAN, 1.0)));
  auto h = g;
  const double coef = ops::grad_clip::clip_coef(std::sqrt(want), 2.0);
  REQUIRE(coef < 1.0);
  ops::grad_clip::scale(h.data(), 1001, coef);
  for (std::size_t i = 0; i < h.size(); i += 97) CHECK(h[i] == g[i] * float(coef));
  ops::grad_clip::scale(h.data(), 1001, ops::grad_clip::clip_coef(NAN, 2.0));
  CHECK(std::isnan(h[0]));
  CHECK(std::isnan(h[1000]));
}

// ---- adamw: the device hyper-parameter block -------------------------------------------------

TEST_CASE("adamw: step_scalars is scalars unchecked; device_hyper fills and checks the block") {
  const ops::adamw::Hyper h{.lr = 2e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  for (std::int64_t s = 1; s <= 5; s++) {
    const auto a = ops::adamw::scalars(h, s);
    const auto b = ops::adamw::step_scalars(h.lr, h.beta1, h.beta2, h.weight_decay, s);
    CHECK(a.decay == b.decay);
    CHECK(a.step_size == b.step_size);
    CHECK(a.bc2_sqrt == b.bc2_sqrt);
  }
  const auto s2 = ops::adamw::scalars(h, 2);
  CHECK(s2.step_size == doctest::Approx(2e-4 / (1 - 0.81)).epsilon(1e-14));
  CHECK(s2.bc2_sqrt == doctest::Approx(std::sqrt(1 - 0.9025)).epsilon(1e-14));
  CHECK(s2.decay == doctest::Approx(1 - 2e-5).epsilon(1e-15));

  const ops::adamw::DeviceHyper d = ops::adamw::device_hyper(h, 0);
  CHECK(d.lr == 2e-4);
  CHECK(d.beta1 == 0.9);
  CHECK(d.beta2 == 0.95);
  CHECK(d.eps == 1e-8);
  CHECK(d.weight_decay == 0.1);
  CHECK(d.step == 0);
  CHECK(offsetof(ops::adamw::DeviceHyper, step) == 40);

  // What the kernel does with the block against the host step.
  const int n = 257;
  auto p = random_floats(n, 211), m = random_floats(n, 212, 0, 0.1), v = random_floats(n, 213, 0, 0.01);
  const auto g = random_floats(n, 214);
  auto p2 = p, m2 = m, v2 = v;
  for (std::int64_t step = 1; step <= 3; step++) {
    ops::adamw::step(p.data(), m.data(), v.data(), g.data(), n, h, step);
    const auto s = ops::adamw::step_scalars(d.lr, d.beta1, d.beta2, d.weight_decay, step);
    for (int i = 0; i < n; i++)
      ops::adamw::update(p2[i], m2[i], v2[i], g[i], float(d.beta1), float(d.beta2), float(d.eps), float(s.decay),
                         float(s.step_size), float(s.bc2_sqrt));
  }
  for (int i = 0; i < n; i++) {
    CHECK(m2[i] == m[i]);  // same float betas
    CHECK(v2[i] == v[i]);
    CHECK(p2[i] == p[i]);  // the same double bias corrections as the host's

  }

  CHECK_THROWS_WITH_AS(ops::adamw::device_hyper(h, -1),
                       "adamw: the device step count must be >= 0 (0 before the first update) (got -1)",
                       Error);
  ops::adamw::Hyper bad = h;
  bad.lr = -1;
  CHECK_THROWS_WITH_AS(ops::adamw::device_hyper(bad, 0),
                       doctest::Contains("adamw: invalid hyper-parameters (lr -1.000000"), Error);
}

// ---- loss_scale: torch.amp.GradScaler ----------------------------------------------------------

TEST_CASE("loss_scale: update follows torch's _amp_update_scale_ over a scripted sequence") {
  const ops::loss_scale::Settings st{.growth_factor = 2, .backoff_factor = 0.5, .growth_interval = 3};
  ops::loss_scale::State s;
  CHECK(s.scale == 65536.0f);
  struct Expect {
    float found_inf;
    float scale;
    std::int32_t tracker;
  };
  const Expect script[] = {
      {0, 65536, 1},  {0, 65536, 2}, {0, 131072, 0},  // third clean step grows
      {1, 65536, 0},                                  // inf: back off, tracker reset
      {0, 65536, 1},  {0, 65536, 2}, {1, 32768, 0},   // inf just before growth: tracker reset
      {1, 16384, 0},                                  // consecutive infs keep backing off
      {0, 16384, 1},  {0, 16384, 2}, {0, 32768, 0}, {0, 32768, 1},
  };
  int k = 0;
  for (const Expect& e : script) {
    CAPTURE(k);
    ops::loss_scale::begin(s);
    CHECK(!ops::loss_scale::skipped(s));
    s.found_inf = e.found_inf;
    CHECK(ops::loss_scale::skipped(s) == (e.found_inf != 0));
    ops::loss_scale::update(s, st);
    CHECK(s.scale == e.scale);
    CHECK(s.growth_tracker == e.tracker);
    k++;
  }

  // torch's defaults: growth after 2000 clean steps
  ops::loss_scale::State d;
  for (int i = 0; i < 1999; i++) ops::loss_scale::update(d, {});
  CHECK(d.scale == 65536.0f);
  CHECK(d.growth_tracker == 1999);
  ops::loss_scale::update(d, {});
  CHECK(d.scale == 131072.0f);
  CHECK(d.growth_tracker == 0);

  // never grows to inf: the scale stays, the tracker still resets
  ops::loss_scale::State big{.scale = FLT_MAX / 1.5f, .growth_tracker = 2, .found_inf = 0};
  ops::loss_scale::update(big, st);
  CHECK(big.scale == FLT_MAX / 1.5f);
  CHECK(big.growth_tracker == 0);

  // factors are applied in double, then rounded to fp32 (torch's kernel takes double factors)
  ops::loss_scale::State odd{.scale = 3.0f, .growth_tracker = 0, .found_inf = 1};
  ops::loss_scale::update(odd, {.growth_factor = 2, .backoff_factor = 0.3f, .growth_interval = 3});
  CHECK(odd.scale == float(3.0 * double(0.3f)));

  CHECK_THROWS_WITH_AS(ops::loss_scale::update(s, {.growth_factor = 1, .backoff_factor = 0.5, .growth_interval = 3}),
                       "loss_scale: growth_factor must be > 1 and backoff_factor in (0, 1) (got 1.000000 and 0.500000)",
                       Error);
  CHECK_THROWS_WITH_AS(ops::loss_scale::update(s, {.growth_factor = 2, .backoff_factor = 0.5, .growth_interval = 0}),
                       "loss_scale: growth_interval must be positive (got 0)", Error);
}

TEST_CASE("loss_scale: unscale_and_check multiplies by the fp32 reciprocal and flags inf / NaN") {
  const int n = 1000;
  const auto g0 = random_floats(n, 221, -1000, 1000);
  for (float scale : {65536.0f, 3.0f, 1000.0f}) {
    CAPTURE(scale);
    ops::loss_scale::State s{.scale = scale, .growth_tracker = 0, .found_inf = 0};
    auto g = g0;
    ops::loss_scale::unscale_and_check(g.data(), n, s);
    const float inv = float(1.0 / double(scale));
    for (int i = 0; i < n; i++) CHECK(g[i] == g0[i] * inv);
    CHECK(g[17] == doctest::Approx(double(g0[17]) / scale).epsilon(1e-7));
    CHECK(s.found_inf == 0.0f);
    CHECK(!ops::loss_scale::skipped(s));
  }
  ops::loss_scale::State one{.scale = 1.0f, .growth_tracker = 0, .found_inf = 0};
  auto g = g0;
  ops::loss_scale::unscale_and_check(g.data(), n, one);
  CHECK(g == g0);

  // the flag: set by inf or NaN anywhere, kept across pieces until begin()
  ops::loss_scale::State s;
  g = g0;
  g[500] = INFINITY;
  ops::loss_scale::unscale_and_check(g.data(), 300, s);
  CHECK(s.found_inf == 0.0f);
  ops::loss_scale::unscale_and_check(g.data() + 300, n - 300, s);
  CHECK(s.found_inf == 1.0f);
  CHECK(ops::loss_scale::skipped(s));
  CHECK(std::isinf(g[500]));
  auto clean = g0;
  ops::loss_scale::unscale_and_check(clean.data(), n, s);
  CHECK(s.found_inf == 1.0f);
  ops::loss_scale::begin(s);
  CHECK(s.found_inf == 0.0f);
  clean = g0;
  clean[3] = NAN;
  ops::loss_scale::unscale_and_check(clean.data(), n, s);
  CHECK(ops::loss_scale::skipped(s));
  clean = g0;
  clean[999] = -INFINITY;
  ops::loss_scale::begin(s);
  ops::loss_scale::unscale_and_check(clean.data(), n, s);
  CHECK(ops::loss_scale::skipped(s));

  // found_inf_ptr is the address of the member, for adamw's skip flag on the device
  CHECK(ops::loss_scale::found_inf_ptr(&s) == &s.found_inf);
  CHECK_THROWS_WITH_AS(ops::loss_scale::unscale_and_check(clean.data(), -1, s),
                       "loss_scale: the element count must be non-negative (got -1)", Error);
}
