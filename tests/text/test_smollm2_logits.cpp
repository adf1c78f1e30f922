// The real SmolLM2-135M-Instruct GGUF (LVT_SMOLLM2_GGUF; tools/fetch-smollm2 fetches it): lvt's
// logits, with the file's weights dequantized to fp32 (--quant none) on the host backend, against
// transformers' own GGUF loading of the same file in fp32 (tools/peers/make_smollm2_logits.py ->
// tests/io/gguf/smollm2_logits.json). For every position of three prompts (plain text, the chat
// template's rendering, a longer paragraph) the golden holds the row's log-sum-exp and L2 norm
// (every logit enters them), its 16 largest logits and 64 fixed sampled ones; each must agree
// within 1e-4 relative, the argmax must be transformers' top id, and lvt's tokenizer from the
// same file must give transformers' ids. Without the file: SKIP (exit 77), never a pass.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "lvt/run.hpp"
#include "lvt/text/gguf_tokenizer.hpp"

namespace fs = std::filesystem;
using Json = nlohmann::json;
using namespace lvt;

namespace {

bool g_skipped = false;
constexpr double kTol = 1e-4;

Json golden() {
  const fs::path p = fs::path(LVT_SOURCE_ROOT) / "tests" / "io" / "gguf" / "smollm2_logits.json";
  std::ifstream f(p);
  REQUIRE_MESSAGE(f.good(), "cannot open " << p);
  return Json::parse(f);
}

}  // namespace

TEST_CASE("the real SmolLM2-135M-Instruct GGUF: logits equal transformers' (fp32) within 1e-4") {
  const char* env = std::getenv("LVT_SMOLLM2_GGUF");
  if (!env || !fs::is_regular_file(env)) {
    MESSAGE("SKIP: set LVT_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf (bash tools/fetch-smollm2)");
    g_skipped = true;
    return;
  }
  const Json g = golden();
  const fs::path file = env;
  const text::Tokenizer tok = text::tokenizer_from_gguf(file);

  std::size_t longest = 0;
  for (const Json& p : g["prompts"]) longest = std::max(longest, p["ids"].size());
  PlanOptions o;
  o.quant = QuantKind::none;  // the file's weights, dequantized to fp32: what transformers runs
  o.double_quant = false;
  o.batch = 1;
  o.seq = int(longest);
  o.generate_context = int(longest);
  Run run = Run::from_pretrained(file, o);
  auto& b = run.backend();
  const std::int64_t V = run.backend().model().vocab;
  REQUIRE(V == g["vocab"].get<std::int64_t>());
  const std::vector<std::int64_t> sample = g["sample_ids"].get<std::vector<std::int64_t>>();

  double worst = 0;
  std::size_t rows = 0;
  for (const Json& p : g["prompts"]) {
    const std::string name = p["name"].get<std::string>();
    CAPTURE(name);
    const std::vector<std::int32_t> ids = p["ids"].get<std::vector<std::int32_t>>();
    // lvt's tokenizer from the same file: transformers' ids (the chat text carries its own
    // specials as text; SmolLM2 adds no BOS)
    CHECK(tok.encode(p["text"].get<std::string>()) == ids);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      CAPTURE(i);
      const float* l = b.decode(0, &ids[i], 1, std::int64_t(i));
      const Json& r = p["rows"][i];
      double m = -INFINITY, norm = 0;
      std::int64_t arg = 0;
      for (std::int64_t v = 0; v < V; ++v) {
        if (l[v] > m) m = l[v], arg = v;
        norm += double(l[v]) * l[v];
      }
      double s = 0;
      for (std::int64_t v = 0; v < V; ++v) s += std::exp(double(l[v]) - m);
      const double lse = m + std::log(s);
      norm = std::sqrt(norm);
      const double ref_norm = r["norm"].get<double>();
      auto rel = [&](double a, double ref) { return std::fabs(a - ref) / std::max(std::fabs(ref), 1.0); };
      double e = std::max(rel(lse, r["lse"].get<double>()), rel(norm, ref_norm));
      // single logits relative to the row's scale (its RMS): a logit near zero has no relative
      // precision of its own
      const double scale = ref_norm / std::sqrt(double(V));
      for (const Json& t : r["top"]) e = std::max(e, std::fabs(l[t[0].get<std::int64_t>()] - t[1].get<double>()) / scale);
      for (std::size_t k = 0; k < sample.size(); ++k)
        e = std::max(e, std::fabs(l[sample[k]] - r["sample"][k].get<double>()) / scale);
      CHECK(e <= kTol);
      // the argmax is transformers' (where its top two are not a near tie)
      const double gap = r["top"][0][1].get<double>() - r["top"][1][1].get<double>();
      if (gap > 1e-3) CHECK(arg == r["top"][0][0].get<std::int64_t>());
      worst = std::max(worst, e);
      ++rows;
    }
  }
  MESSAGE("SmolLM2-135M-Instruct (" << file.filename().string() << "): " << rows
          << " positions of 3 prompts, largest relative difference to transformers "
          << worst);
}

int main(int argc, char** argv) {
  doctest::Context ctx(argc, argv);
  const int rc = ctx.run();
  if (rc == 0 && g_skipped) {
    std::printf("SKIP: the real SmolLM2 GGUF is absent (LVT_SMOLLM2_GGUF)\n");
    return 77;
  }
  return rc;
}
