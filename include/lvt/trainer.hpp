#pragma once
// Trainer<Model, Policies...>: the only header a user needs. The model description and the
// policies compose into PlanOptions; the planner runs at compile time, so
// `static_assert(Trainer::plan.fits())` rejects a run that will not fit its GPU tier, and
// `static_assert(lvt::fits<Trainer>)` also says by how much and which policies would fit.
#include <type_traits>

#include "lvt/model/llama.hpp"
#include "lvt/plan/planner.hpp"
#include "lvt/policies.hpp"
#include "lvt/run.hpp"
#if LVT_CUDA
#include "lvt/backend/cuda.hpp"
#endif

namespace lvt {

#if LVT_CUDA
// A run on the GPU (compiled by nvcc): bf16 storage, or fp16 with dynamic loss scaling (sm_75).
template <class S = bf16>
using CudaRun = BasicRun<backend::CudaBackend<S>>;
#endif

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

  // A run of this model with these policies: a Hugging Face or bnb-4bit folder whose
  // config.json must match the description field by field. R: `Run` (host reference) or, in a
  // .cu file, `CudaRun<>` (`Trainer::from_pretrained<lvt::CudaRun<>>(dir)`).
  template <class R = Run>
  static R from_pretrained(const std::filesystem::path& dir, bool poison = false) {
    return R::from_pretrained(dir, options, &model, poison);
  }
  // Random frozen weights (tests, benchmarks).
  template <class R = Run>
  static R with_random_weights(std::uint64_t seed, bool poison = false) {
    R r(model, options, poison);
    r.init_random_weights(seed);
    return r;
  }
};

// ---- saying what to change when a plan does not fit ------------------------------------------

struct NothingFits {};  // not even batch 1 at sequence 1 with every saver on
template <class... Policies>
struct Try {};

namespace detail {
// Walks plan::suggestion_candidate(i) for i = 0, 1, ...; each candidate is its own constant
// expression (so each stays within the compiler's constexpr budget), and only the candidates
// up to the first that fits are instantiated.
template <ModelConfig M, PlanOptions O, int I>
struct first_fit;

template <PlanOptions S>
struct found {
  static constexpr PlanOptions value = S;
};

template <ModelConfig M, PlanOptions O, int I>
struct first_fit {
  static constexpr plan::Candidate c = plan::suggestion_candidate(M, O, I);
  static constexpr bool ok =
      !c.valid || plan::quick_device_bytes(M, c.options) <= O.budget_bytes;
  static constexpr PlanOptions none = [] {
    PlanOptions n = O;
    n.batch = 0;  // marks "nothing fits"
    return n;
  }();
  using next = std::conditional_t<ok, found<c.valid ? c.options : none>, first_fit<M, O, I + 1>>;
  static constexpr PlanOptions value = next::value;
};

template <ModelConfig M, PlanOptions O>
constexpr PlanOptions suggested() {
  return first_fit<M, O, 0>::value;
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
