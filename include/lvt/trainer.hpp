#pragma once
// Trainer<Model, Policies...>: the only header a user needs. The model description and the
// policies compose into PlanOptions; the planner runs at compile time, so
// `static_assert(Trainer::plan.fits())` rejects a run that will not fit its GPU tier, and
// `static_assert(lvt::fits<Trainer>)` also says by how much and which policies would fit.
#include <type_traits>

#include "lvt/model/llama.hpp"
#include "lvt/plan/planner.hpp"
#include "lvt/policies.hpp"

namespace lvt {

template <class... Policies>
constexpr PlanOptions compose(PlanOptions o = {}) {
  (Policies::apply(o), ...);  // later policies override earlier ones
  return o;
}

template <class Model, class... Policies>
struct Trainer {
  static constexpr ModelConfig model = Model::config;
  static constexpr PlanOptions options = compose<Policies...>();
  static constexpr lvt::plan::PlanError error = lvt::plan::check(model, options);
#define LVT_X(name, msg) static_assert(error != lvt::plan::PlanError::name, msg);
  LVT_PLAN_ERRORS(LVT_X)
#undef LVT_X
  static constexpr auto plan = lvt::plan::fixed_plan<model, options>();
};

// ---- saying what to change when a plan does not fit ------------------------------------------

struct NothingFits {};  // not even batch 1 at sequence 1 with every saver on
template <class... Policies>
struct Try {};

namespace detail {
// The fastest fitting option set with the user's batch and sequence, else with them reduced;
// found with lower bounds only, to keep compile times small.
template <ModelConfig M, PlanOptions O>
constexpr PlanOptions suggested() {
  plan::SearchLimits keep_shape{.vary_batch = false, .vary_seq = false, .pack = false};
  plan::Plan p = plan::search(M, O, keep_shape);
  if (p.fits()) return p.options;
  plan::SearchLimits shrink{.vary_batch = true, .max_batch = O.batch, .vary_seq = true, .pack = false};
  p = plan::search(M, O, shrink);
  PlanOptions none = O;
  none.batch = 0;  // marks "nothing fits"
  return p.fits() ? p.options : none;
}

template <PlanOptions S>
using suggestion_t = std::conditional_t<
    (S.batch == 0), Try<NothingFits>,
    Try<std::conditional_t<S.offload_weights, OffloadPolicy<Pinned, 2, S.offload_checkpoints>,
                           std::conditional_t<S.offload_checkpoints, OffloadCheckpoints,
                                              OffloadPolicy<None>>>,
        CheckpointEvery<S.checkpoint_every>, AdamW<S.offload_optimizer>,
        Shape<(S.batch > 0 ? S.batch : 1), S.seq>>>;
}  // namespace detail

template <long long MissingMiB, class Suggestion>
struct plan_does_not_fit {
  static_assert(MissingMiB <= 0,
                "the plan does not fit the GPU tier: read plan_does_not_fit<MissingMiB, "
                "lvt::Try<policies...>> in the lines above: MissingMiB is how much device memory "
                "is missing, Try<...> the fastest policies that fit");
  static constexpr bool value = true;
};

template <class T, bool Fits = T::plan.fits()>
struct fit_check {
  static constexpr bool value = true;
};
template <class T>
struct fit_check<T, false> {
  static constexpr PlanOptions s = detail::suggested<T::model, T::options>();
  static constexpr bool value =
      plan_does_not_fit<(T::plan.missing_bytes() + plan::mib - 1) / plan::mib,
                        detail::suggestion_t<s>>::value;
};

// `static_assert(lvt::fits<Trainer>);` compiles when the plan fits, and otherwise fails with
// the missing MiB and a policy set that fits.
template <class T>
inline constexpr bool fits = fit_check<T>::value;

}  // namespace lvt
