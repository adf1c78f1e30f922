#pragma once
// Generation over a backend's KV cache: prefill the prompt, then one token at a time, each picked
// greedily or sampled through the logits warpers transformers applies, in its order
// (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper; generation/logits_process.py),
// stopping at an eos id, after max_new_tokens, or when the cache is full. run.hpp's
// BasicRun::generate and `lvt generate` are built on it.
//
// Sampling is seeded and reproducible (the same seed, logits and options give the same tokens),
// but its random stream is lvt's own (splitmix64), not torch.multinomial's: sampled text matches
// transformers in distribution, greedy text token for token.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "lvt/error.hpp"

namespace lvt {

struct GenerateOptions {
  int max_new_tokens = 128;
  double temperature = 0;  // <= 0: greedy (argmax); else sample from softmax(logits / T)
  int top_k = 0;           // 0: off; else keep the k largest logits (ties with the k-th kept)
  double top_p = 1.0;      // 1: off; else nucleus: the smallest set with probability >= p
  std::uint64_t seed = 0;
  std::vector<std::int32_t> eos_ids;  // stop after generating any of these (it is returned)
  // Called with each new id as soon as it is picked (streaming); returning false stops.
  std::function<bool(std::int32_t)> on_token;
};

enum class StopReason { eos, max_new_tokens, context_full, callback };

inline const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::eos: return "eos";
    case StopReason::max_new_tokens: return "max_new_tokens";
    case StopReason::context_full: return "context_full";
    case StopReason::callback: return "callback";
  }
  return "?";
}

struct GenerateResult {
  std::vector<std::int32_t> ids;  // the new tokens (an eos that stopped it included)
  StopReason stop = StopReason::max_new_tokens;
  std::int64_t prompt_tokens = 0;
  std::int64_t decode_steps = 0;  // one-token forwards after the prefill
  double prefill_s = 0, decode_s = 0;
  double prefill_tokens_per_s() const { return prefill_s > 0 ? double(prompt_tokens) / prefill_s : 0; }
  double decode_tokens_per_s() const { return decode_s > 0 ? double(decode_steps) / decode_s : 0; }
};

namespace sampling {

inline constexpr float filtered = -std::numeric_limits<float>::infinity();

// torch.argmax: the first index of the largest value.
inline std::int32_t argmax(std::span<const float> logits) {
  return std::int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// TemperatureLogitsWarper: scores / temperature (temperature > 0).
inline void temperature(std::span<float> scores, double t) {
  if (!(t > 0)) throw Error("temperature must be > 0 to sample (0 means greedy)");
  if (t == 1.0) return;  // transformers adds no warper for 1.0
  for (float& s : scores) s = float(s / t);
}

// TopKLogitsWarper: scores below the k-th largest become -inf (k clamped to [1, vocab]).
inline void top_k(std::span<float> scores, int k) {
  if (k <= 0 || std::size_t(k) >= scores.size()) return;
  std::vector<float> v(scores.begin(), scores.end());
  std::nth_element(v.begin(), v.begin() + (k - 1), v.end(), std::greater<float>());
  const float kth = v[std::size_t(k - 1)];
  for (float& s : scores)
    if (s < kth) s = filtered;
}

// TopPLogitsWarper: sort ascending, softmax, cumulative sum; tokens whose cumulative probability
// is <= 1 - p are removed, the largest always kept. That keeps the smallest descending set whose
// probability reaches p.
inline void top_p(std::span<float> scores, double p) {
  if (!(p >= 0 && p <= 1)) throw Error("top_p must be in [0, 1] (got " + std::to_string(p) + ")");
  if (p >= 1.0 || scores.empty()) return;
  std::vector<std::int32_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int32_t a, std::int32_t b) { return scores[std::size_t(a)] < scores[std::size_t(b)]; });
  const float m = scores[std::size_t(order.back())];
  double total = 0;
  for (float s : scores) total += std::exp(double(s) - double(m));
  double cum = 0;
  std::vector<std::int32_t> drop;
  for (std::size_t i = 0; i + 1 < order.size(); ++i) {  // the last (largest) is always kept
    cum += std::exp(double(scores[std::size_t(order[i])]) - double(m)) / total;
    if (cum <= 1.0 - p) drop.push_back(order[i]);
    else break;  // cumulative sums only grow
  }
  for (std::int32_t i : drop) scores[std::size_t(i)] = filtered;
}

// splitmix64: a small seeded stream, the same on every platform and standard library.
struct Rng {
  std::uint64_t state;
  explicit Rng(std::uint64_t seed) : state(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
};

// One id from softmax(scores) (-inf scores have probability 0).
inline std::int32_t sample(std::span<const float> scores, Rng& rng) {
  const float m = *std::max_element(scores.begin(), scores.end());
  double total = 0;
  for (float s : scores) total += std::exp(double(s) - double(m));
  const double u = rng.uniform() * total;
  double cum = 0;
  std::int32_t last = 0;
  for (std::size_t i = 0; i < scores.size(); ++i) {
    const double e = std::exp(double(scores[i]) - double(m));
    if (e == 0) continue;
    cum += e;
    last = std::int32_t(i);
    if (u < cum) return last;
  }
  return last;  // u rounded past the total
}

// The next id from one row of logits, as GenerateOptions say.
inline std::int32_t pick(std::span<const float> logits, const GenerateOptions& g, Rng& rng,
                         std::vector<float>& scores) {
  if (!(g.temperature > 0)) return argmax(logits);
  scores.assign(logits.begin(), logits.end());
  temperature(scores, g.temperature);
  top_k(scores, g.top_k);
  top_p(scores, g.top_p);
  return sample(scores, rng);
}

}  // namespace sampling

// Generates after `prompt` on sequence `seq` of a backend with a decode path (HostBackend,
// CudaBackend): decode(seq, ids, n, pos) -> logits [vocab] on the host, generate_context(),
// model().vocab.
template <class Backend>
GenerateResult generate(Backend& b, std::span<const std::int32_t> prompt, const GenerateOptions& g,
                        int seq = 0) {
  using clock = std::chrono::steady_clock;
  const std::int64_t ctx = b.generate_context();
  if (ctx <= 0)
    throw Error("generate: the plan has no KV cache (PlanOptions::generate_context is 0)");
  if (prompt.empty()) throw Error("generate: the prompt is empty (at least one token)");
  if (std::int64_t(prompt.size()) > ctx)
    throw Error("generate: the prompt's " + std::to_string(prompt.size()) +
                " tokens exceed the KV cache's generate_context of " + std::to_string(ctx));
  if (g.max_new_tokens < 0) throw Error("generate: max_new_tokens must be >= 0");
  if (g.temperature > 0) {
    sampling::top_p(std::span<float>(), g.top_p);  // validates p
  }
  GenerateResult r;
  r.prompt_tokens = std::int64_t(prompt.size());
  if (g.max_new_tokens == 0) return r;
  const std::size_t vocab = std::size_t(b.model().vocab);
  sampling::Rng rng(g.seed);
  std::vector<float> scores;
  auto t0 = clock::now();
  const float* logits = b.decode(seq, prompt.data(), std::int64_t(prompt.size()), 0);
  r.prefill_s = std::chrono::duration<double>(clock::now() - t0).count();
  t0 = clock::now();
  for (;;) {
    const std::int32_t id = sampling::pick({logits, vocab}, g, rng, scores);
    r.ids.push_back(id);
    if (g.on_token && !g.on_token(id)) {
      r.stop = StopReason::callback;
      break;
    }
    if (std::find(g.eos_ids.begin(), g.eos_ids.end(), id) != g.eos_ids.end()) {
      r.stop = StopReason::eos;
      break;
    }
    if (int(r.ids.size()) >= g.max_new_tokens) {
      r.stop = StopReason::max_new_tokens;
      break;
    }
    const std::int64_t pos = r.prompt_tokens + std::int64_t(r.ids.size()) - 1;
    if (pos >= ctx) {
      r.stop = StopReason::context_full;
      break;
    }
    logits = b.decode(seq, &id, 1, pos);
    ++r.decode_steps;
  }
  r.decode_s = std::chrono::duration<double>(clock::now() - t0).count();
  return r;
}

}  // namespace lvt
