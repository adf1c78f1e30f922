// `lvt plan`: the memory plan of a model + policies for a GPU budget, before any run.
#include <cstdio>
#include <fstream>

#include "lvt/plan/report.hpp"
#include "options.hpp"

namespace {

const char* plan_help =
    "usage: lvt plan --model NAME|DIR|config.json|FILE.gguf [--budget SIZE|GPU] [policies] [--auto]\n"
    "                [--json] [--svg FILE]\n\n"
    "Prints the device-memory breakdown of one training step: every buffer sized from the model\n"
    "and the policies, packed into one arena. Exit status 0 when it fits the budget, 3 when not.\n\n"
    "  --model M               preset (llama-3.1-8b, ...), a Hugging Face folder, config.json\n"
    "                          or a llama .gguf file (its metadata)\n"
    "  --auto                  pick the fastest policies that fit (least streaming, then least\n"
    "                          recompute, then the largest batch x sequence)\n"
    "  --max-batch N           largest batch --auto tries (default 64; --batch fixes it)\n"
    "  --json                  print the plan as JSON (summary, buffers, actions)\n"
    "  --svg FILE              write an SVG map of the arena (time x address)\n";

}  // namespace

int lvt_cmd_plan(int argc, char** argv) {
  using namespace lvt;
  std::vector<std::string> switches = cli::policy_switches;
  switches.insert(switches.end(), {"--auto", "--json", "--help"});
  std::vector<std::string> valued = cli::policy_flags;
  valued.insert(valued.end(), {"--model", "--svg", "--max-batch"});
  const cli::Args a = cli::parse_args(argc, argv, switches, valued);
  if (a.has("--help")) {
    std::printf("%s%s", plan_help, cli::policy_help);
    return 0;
  }
  if (!a.positional.empty()) throw Error("unexpected argument '" + a.positional[0] + "'");
  if (!a.has("--model")) throw Error("--model is required (a preset name, a folder, config.json or a .gguf file)");
  const ModelConfig model = cli::load_model(a.get("--model"));
  const PlanOptions asked = cli::plan_options(a);

  plan::Plan p;
  if (a.has("--auto")) {
    if (!asked.budget_bytes) throw Error("--auto needs --budget (a size or a GPU name)");
    plan::SearchLimits lim;
    lim.vary_batch = !a.has("--batch");
    lim.max_batch = a.has("--max-batch")
                        ? int(cli::parse_int("--max-batch", a.get("--max-batch"), 1, 4096))
                        : 64;
    lim.vary_seq = false;
    p = plan::search(model, asked, lim);
    if (!p.fits()) {  // not even batch 1 at this sequence length: try shorter ones
      lim.vary_seq = true;
      p = plan::search(model, asked, lim);
    }
  } else {
    p = plan::make_plan(model, asked);
  }
  if (p.error != plan::PlanError::ok) throw Error(plan::message(p.error));

  if (a.has("--svg")) {
    const std::string path = a.get("--svg");
    std::ofstream f(path, std::ios::binary);
    if (!f) throw Error("--svg: cannot write " + path);
    f << plan::svg(p);
    if (!f.flush()) throw Error("--svg: error writing " + path);
  }
  if (a.has("--json")) {
    std::printf("%s\n", plan::to_json(p).dump(1).c_str());
  } else {
    std::printf("%s", plan::table(p).c_str());
    if (a.has("--auto")) {
      const std::string changes = cli::flag_changes(asked, p.options);
      std::printf("\n--auto chose: %s\n", changes.empty() ? "the flags as given" : changes.c_str());
    }
  }
  if (p.fits()) return 0;

  // Say what would fit: the fastest policies with this shape, else a smaller shape.
  plan::SearchLimits keep{.vary_batch = false, .vary_seq = false};
  plan::Plan alt = plan::search(model, p.options, keep);
  if (!alt.fits()) {
    plan::SearchLimits shrink{.vary_batch = true, .max_batch = p.options.batch, .vary_seq = true};
    alt = plan::search(model, p.options, shrink);
  }
  std::fprintf(stderr, "lvt plan: does not fit: %s missing of %s.\n",
               plan::format_bytes(p.summary.missing_bytes()).c_str(),
               plan::format_bytes(p.summary.budget_bytes).c_str());
  if (alt.fits())
    std::fprintf(stderr, "lvt plan: fits with: %s (%s of %s)\n",
                 cli::flag_changes(p.options, alt.options).c_str(),
                 plan::format_bytes(alt.summary.device_bytes()).c_str(),
                 plan::format_bytes(alt.summary.budget_bytes).c_str());
  else
    std::fprintf(stderr,
                 "lvt plan: nothing fits this budget: even batch 1 at sequence 1 with every "
                 "memory saver needs %s (the lm head, LoRA state and the %s CUDA context reserve)\n",
                 plan::format_bytes(alt.summary.device_bytes()).c_str(),
                 plan::format_bytes(plan::cuda_context_reserve_bytes).c_str());
  return 3;
}
