// Generation on the host backend: the KV cache is planned like every other buffer; the cached
// incremental decode (one token at a time, and chunked prefill) gives the logits of the step
// program's full-sequence forward; greedy generation is the argmax of repeated full forwards;
// the logits warpers do what transformers' do on fixed logits; sampling is reproducible.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "lvt/plan/report.hpp"
#include "lvt/run.hpp"

using namespace lvt;

namespace {

// GQA, q/k/v biases, tied embeddings, llama3 RoPE scaling with every band in use.
constexpr ModelConfig qwen_tiny{.arch = Arch::qwen2, .layers = 2, .hidden = 64, .heads = 4,
                                .kv_heads = 2, .head_dim = 16, .ffn = 96, .vocab = 97,
                                .tied_embeddings = true, .rope_theta = 50.0,
                                .rope_scaling = RopeScaling::llama3, .rope_factor = 4.0,
                                .rope_low_freq_factor = 1.0, .rope_high_freq_factor = 4.0,
                                .rope_original_max_position = 32, .norm_eps = 1e-5,
                                .qkv_bias = true, .max_position = 256};
// Plain Llama, untied, multi-query.
constexpr ModelConfig llama_tiny{.arch = Arch::llama, .layers = 3, .hidden = 48, .heads = 6,
                                 .kv_heads = 1, .head_dim = 8, .ffn = 80, .vocab = 61,
                                 .tied_embeddings = false, .rope_theta = 10000.0,
                                 .norm_eps = 1e-6, .max_position = 512};

PlanOptions gen_options(int seq, int context, QuantKind q = QuantKind::nf4) {
  PlanOptions o;
  o.batch = 1;
  o.seq = seq;
  o.generate_context = context;
  o.lora_rank = 4;
  o.lora_alpha = 8;
  o.lora_dropout = 0.1;  // generation runs without it (as evaluation does)
  o.quant = q;
  o.double_quant = q == QuantKind::nf4 || q == QuantKind::fp4;
  return o;
}

// Random frozen weights and a random (nonzero) adapter.
Run make_run(const ModelConfig& m, const PlanOptions& o, std::uint64_t seed) {
  Run r(m, o);
  r.init_random_weights(seed, 0.15f);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  for (float& x : r.backend().lora_params()) x = nd(rng);
  r.backend().sync_lora_to_device();
  return r;
}

std::vector<std::int32_t> random_tokens(int n, int vocab, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (auto& x : t) x = std::int32_t(rng() % std::uint64_t(vocab));
  return t;
}

double max_diff(const float* a, const float* b, std::int64_t n) {
  double d = 0;
  for (std::int64_t i = 0; i < n; ++i) d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d;
}

constexpr PlanOptions compile_time_options() {
  PlanOptions p;
  p.seq = 32;
  Generate<64>::apply(p);
  return p;
}

}  // namespace

TEST_CASE("the KV cache and the decode scratch are planned buffers; unset, the plan is unchanged") {
  PlanOptions o = gen_options(32, 0);
  o.precision = DType::bf16;
  const plan::Plan base = plan::make_plan(qwen_tiny, o);
  o.generate_context = 200;
  const plan::Plan gen = plan::make_plan(qwen_tiny, o);
  REQUIRE(gen.error == plan::PlanError::ok);
  CHECK(gen.buffers.size() == base.buffers.size() + 2);
  CHECK(gen.actions == base.actions);
  const plan::i64 kv = gen.summary.kind_bytes[int(plan::Kind::kv_cache)];
  // layers x 2 x kv_heads x head_dim x context x batch x 2 bytes (bf16)
  CHECK(kv == plan::align_up(2 * 2 * 2 * 16 * 200 * 1 * 2, plan::arena_alignment));
  CHECK(base.summary.kind_bytes[int(plan::Kind::kv_cache)] == 0);
  CHECK(gen.summary.arena_bytes >= base.summary.arena_bytes + kv);
  CHECK(gen.summary.kind_at_peak[int(plan::Kind::kv_cache)] == kv);  // resident: live at the peak
  const std::string t = plan::table(gen);
  CHECK(t.find("kv_cache") != std::string::npos);
  CHECK(t.find("KV cache for 200 tokens") != std::string::npos);
  CHECK(plan::table(base).find("kv_cache") == std::string::npos);
  CHECK(plan::to_json(gen)["options"]["generate_context"] == 200);
  CHECK(!plan::to_json(base)["options"].contains("generate_context"));
  o.generate_context = 257;  // beyond max_position_embeddings
  CHECK(plan::make_plan(qwen_tiny, o).error == plan::PlanError::generate_context_invalid);
  // At compile time: the Generate<Context> policy.
  constexpr auto fixed = plan::fixed_plan<qwen_tiny, compile_time_options()>();
  static_assert(fixed.summary.kind_bytes[int(plan::Kind::kv_cache)] > 0);
}

TEST_CASE("cached incremental decode gives the full forward's logits (NF4, GQA, bias, tied, LoRA)") {
  const int T = 80;  // > plan::prefill_chunk_tokens: the prefill runs in two chunks
  Run run = make_run(qwen_tiny, gen_options(T, T), 7);
  auto& b = run.backend();
  const auto tok = random_tokens(T, qwen_tiny.vocab, 3);
  const std::vector<float> full = b.forward_logits(tok.data());
  const std::int64_t V = qwen_tiny.vocab;
  double worst = 0;
  for (int i = 0; i < T; ++i) {
    const float* l = b.decode(0, &tok[std::size_t(i)], 1, i);
    worst = std::max(worst, max_diff(l, full.data() + i * V, V));
  }
  MESSAGE("one token at a time: max |logit difference| " << worst);
  CHECK(worst < 1e-5);
  // Prefill in chunks (64 + 16 rows) and a prefill then decode.
  CHECK(max_diff(b.decode(0, tok.data(), T, 0), full.data() + (T - 1) * V, V) < 1e-5);
  b.decode(0, tok.data(), 70, 0);
  for (int i = 70; i < T; ++i)
    CHECK(max_diff(b.decode(0, &tok[std::size_t(i)], 1, i), full.data() + i * V, V) < 1e-5);
}

TEST_CASE("cached decode equals the full forward: unquantized, int8, streamed weights, untied") {
  for (QuantKind q : {QuantKind::none, QuantKind::int8, QuantKind::fp4}) {
    CAPTURE(quant_name(q));
    PlanOptions o = gen_options(20, 20, q);
    o.offload_weights = q == QuantKind::int8;  // weights in the pinned pool
    o.checkpoint_every = 1;
    Run run = make_run(llama_tiny, o, 11);
    auto& b = run.backend();
    const auto tok = random_tokens(20, llama_tiny.vocab, 5);
    const std::vector<float> full = b.forward_logits(tok.data());
    double worst = 0;
    for (int i = 0; i < 20; ++i)
      worst = std::max(worst, max_diff(b.decode(0, &tok[std::size_t(i)], 1, i),
                                       full.data() + i * llama_tiny.vocab, llama_tiny.vocab));
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("each sequence of the batch has its own cache") {
  PlanOptions o = gen_options(12, 12);
  o.batch = 2;
  Run run = make_run(qwen_tiny, o, 2);
  auto& b = run.backend();
  const auto t0 = random_tokens(12, qwen_tiny.vocab, 1), t1 = random_tokens(12, qwen_tiny.vocab, 2);
  std::vector<std::int32_t> both(t0);
  both.insert(both.end(), t1.begin(), t1.end());
  const std::vector<float> full = b.forward_logits(both.data());
  const std::int64_t V = qwen_tiny.vocab;
  for (int i = 0; i < 12; ++i) {  // interleaved
    CHECK(max_diff(b.decode(0, &t0[std::size_t(i)], 1, i), full.data() + i * V, V) < 1e-5);
    CHECK(max_diff(b.decode(1, &t1[std::size_t(i)], 1, i), full.data() + (12 + i) * V, V) < 1e-5);
  }
  CHECK_THROWS_WITH(b.decode(2, t0.data(), 1, 0),
                    doctest::Contains("outside the planned batch of 2"));
  CHECK_THROWS_WITH(b.decode(0, t0.data(), 2, 11), doctest::Contains("generate_context 12"));
}

TEST_CASE("greedy generation is the argmax of repeated full forwards") {
  const int T = 16, P = 5, N = 10;
  Run run = make_run(qwen_tiny, gen_options(T, T), 21);
  const auto prompt = random_tokens(P, qwen_tiny.vocab, 9);
  GenerateOptions g;
  g.max_new_tokens = N;
  std::vector<std::int32_t> streamed;
  g.on_token = [&](std::int32_t id) {
    streamed.push_back(id);
    return true;
  };
  const GenerateResult r = run.generate(prompt, g);
  REQUIRE(r.ids.size() == std::size_t(N));
  CHECK(r.stop == StopReason::max_new_tokens);
  CHECK(streamed == r.ids);
  CHECK(r.prompt_tokens == P);
  CHECK(r.decode_steps == N - 1);
  std::vector<std::int32_t> seq(prompt);
  for (int i = 0; i < N; ++i) {
    std::vector<std::int32_t> padded(seq);
    padded.resize(T, 0);  // causal: positions after seq do not change its logits
    const std::vector<float> full = run.backend().forward_logits(padded.data());
    const std::int32_t want = sampling::argmax(
        {full.data() + (seq.size() - 1) * std::size_t(qwen_tiny.vocab), std::size_t(qwen_tiny.vocab)});
    CHECK(r.ids[std::size_t(i)] == want);
    seq.push_back(want);
  }
  // eos stops (and is returned); a full cache stops.
  g.eos_ids = {r.ids[2]};
  const GenerateResult e = run.generate(prompt, g);
  CHECK(e.stop == StopReason::eos);
  CHECK(e.ids.back() == r.ids[2]);
  CHECK(e.ids.size() <= 3);
  g.eos_ids.clear();
  g.max_new_tokens = 100;
  const GenerateResult c = run.generate(prompt, g);
  CHECK(c.stop == StopReason::context_full);
  CHECK(c.ids.size() == std::size_t(T - P + 1));  // the last new token needs no cache row
  g.on_token = [](std::int32_t) { return false; };
  CHECK(run.generate(prompt, g).stop == StopReason::callback);
}

TEST_CASE("sampling is reproducible per seed") {
  Run run = make_run(qwen_tiny, gen_options(8, 40, QuantKind::none), 4);
  const auto prompt = random_tokens(4, qwen_tiny.vocab, 1);
  GenerateOptions g;
  g.max_new_tokens = 30;
  g.temperature = 1.5;
  g.top_k = 40;
  g.top_p = 0.95;
  g.seed = 123;
  const auto a = run.generate(prompt, g).ids, b = run.generate(prompt, g).ids;
  CHECK(a == b);
  g.seed = 124;
  CHECK(run.generate(prompt, g).ids != a);
  g.top_p = 1.5;
  CHECK_THROWS_WITH(run.generate(prompt, g), doctest::Contains("top_p must be in [0, 1]"));
}

TEST_CASE("a plan without a KV cache says how to get one") {
  Run run(qwen_tiny, gen_options(8, 0));
  const std::vector<std::int32_t> p = {1, 2};
  CHECK_THROWS_WITH(run.generate(p, GenerateOptions{}), doctest::Contains("generate_context"));
  CHECK_THROWS_WITH(run.backend().decode(0, p.data(), 2, 0),
                    doctest::Contains("set PlanOptions::generate_context"));
}

// ---- the logits warpers on fixed logits (transformers' TemperatureLogitsWarper,
// TopKLogitsWarper, TopPLogitsWarper) ----

TEST_CASE("temperature divides the logits") {
  std::vector<float> s = {1, 2, -3};
  sampling::temperature(s, 2.0);
  CHECK(s == std::vector<float>{0.5f, 1.0f, -1.5f});
  CHECK_THROWS(sampling::temperature(s, 0.0));
}

TEST_CASE("top-k keeps the k largest and ties with the k-th") {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> s = {1, 3, 3, 2, 0};
  sampling::top_k(s, 2);
  CHECK(s == std::vector<float>{-inf, 3, 3, -inf, -inf});
  s = {1, 3, 3, 2, 0};
  sampling::top_k(s, 3);
  CHECK(s == std::vector<float>{-inf, 3, 3, 2, -inf});
  s = {1, 3, 2};
  sampling::top_k(s, 0);  // off
  CHECK(s == std::vector<float>{1, 3, 2});
  sampling::top_k(s, 10);  // k >= vocab: off
  CHECK(s == std::vector<float>{1, 3, 2});
}

TEST_CASE("top-p keeps the smallest set whose probability reaches p, at least one") {
  const float inf = std::numeric_limits<float>::infinity();
  auto logits = [] {
    return std::vector<float>{std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
  };
  std::vector<float> s = logits();
  sampling::top_p(s, 0.75);  // ascending cumulative 0.05, 0.20, 0.50, 1: remove <= 0.25
  CHECK(s[0] == -inf);
  CHECK(s[2] == -inf);
  CHECK(s[1] == doctest::Approx(std::log(0.5f)));
  CHECK(s[3] == doctest::Approx(std::log(0.3f)));
  s = logits();
  sampling::top_p(s, 0.85);  // remove <= 0.15: only the 0.05
  CHECK(s[2] == -inf);
  CHECK(std::count(s.begin(), s.end(), -inf) == 1);
  s = logits();
  sampling::top_p(s, 0.0);  // the largest always stays
  CHECK(std::count(s.begin(), s.end(), -inf) == 3);
  CHECK(s[1] == doctest::Approx(std::log(0.5f)));
  s = logits();
  sampling::top_p(s, 1.0);  // off
  CHECK(s == logits());
}

TEST_CASE("sample follows softmax and never picks a filtered token") {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> s = {std::log(0.5f), -inf, std::log(0.3f), std::log(0.2f)};
  sampling::Rng rng(5);
  int count[4] = {0, 0, 0, 0};
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++count[sampling::sample(s, rng)];
  CHECK(count[1] == 0);
  CHECK(double(count[0]) / n == doctest::Approx(0.5).epsilon(0.03));
  CHECK(double(count[2]) / n == doctest::Approx(0.3).epsilon(0.03));
  CHECK(double(count[3]) / n == doctest::Approx(0.2).epsilon(0.03));
  CHECK(sampling::argmax(std::vector<float>{1, 4, 4, 2}) == 1);  // the first largest
}
