#pragma once
// A fine-tuning run at run time: a model (Hugging Face folder, or random weights), the plan's
// options, the backend that executes the step program, and the loop around it: fit with a
// progress line, evaluate, PEFT adapters, checkpoints and resume. `Trainer<...>` (trainer.hpp)
// and `lvt train` / `lvt eval` are both built on it.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "lvt/backend/host.hpp"
#include "lvt/generate.hpp"
#include "lvt/io/bnb4bit.hpp"
#include "lvt/io/checkpoint.hpp"
#include "lvt/io/examples.hpp"
#include "lvt/io/model_source.hpp"
#include "lvt/io/peft.hpp"
#include "lvt/io/tokens.hpp"
#include "lvt/ops/schedule.hpp"

namespace lvt {

struct Progress {
  std::int64_t step = 0, steps = 0;  // optimizer steps done / planned
  double loss = 0;                   // mean token loss of this step's micro-batches
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  double eta_s = 0;
  std::int64_t arena_bytes = 0, pinned_bytes = 0;
};

// How a run executes (not what it computes, except that results are bit-identical only for a
// fixed thread count).
struct RunOptions {
  // Host threads: 0 (the default) uses every core this process may run on; 1..that many is
  // taken as it is; more, or a negative count, is an error that names the machine's count.
  // The host backend plans one attention scratch per thread.
  int threads = 0;
  bool poison = false;  // host backend: freed buffers filled with NaN (a use-after-free check)
};

struct FitOptions {
  std::int64_t steps = 100;         // optimizer steps of the whole run (the schedule's length)
  std::int64_t stop_after = 0;      // return after this optimizer step (0: at `steps`)
  double lr = 2e-4;
  double weight_decay = 0.0;
  std::int64_t warmup = 0;
  int grad_accum = 1;               // micro-batches per optimizer step
  double clip = 1.0;                // global-norm clip (<= 0: none)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  std::uint64_t seed = 0;           // data order and dropout
  bool shuffle = true;
  std::filesystem::path checkpoint_dir;  // empty: no checkpoints
  std::int64_t checkpoint_every = 0;     // steps; 0: only at the end (when a dir is given)
  std::function<void(const Progress&)> progress;  // null: a line on stderr per step
};

struct FitResult {
  std::vector<double> losses;  // per optimizer step
  double seconds = 0;
  std::int64_t tokens = 0;
};

// The progress line `lvt train` prints.
inline std::string progress_line(const Progress& p) {
  char s[256];
  std::snprintf(s, sizeof s,
                "step %lld/%lld  loss %.4f  lr %.3g  grad-norm %.3g  %.0f tok/s  ETA %.0fs  "
                "memory %.1f MiB arena + %.1f MiB pinned",
                static_cast<long long>(p.step), static_cast<long long>(p.steps), p.loss, p.lr,
                p.grad_norm, p.tokens_per_s, p.eta_s, double(p.arena_bytes) / 1048576.0,
                double(p.pinned_bytes) / 1048576.0);
  return s;
}

// Backend: backend::HostBackend (the reference, `Run`) or backend::CudaBackend<bf16 | fp16>
// (`CudaRun`, in cuda_run.hpp: needs nvcc). The backend is held by pointer so a run can be
// returned by value while the CUDA backend's streams and graphs stay where they are.
template <class Backend>
class BasicRun {
 public:
  // `poison` (freed buffers filled with NaN) is a host-backend check.
  BasicRun(const ModelConfig& model, const PlanOptions& options, bool poison = false)
      : BasicRun(model, options, RunOptions{0, poison}) {}
  BasicRun(const ModelConfig& model, const PlanOptions& options, const RunOptions& run)
      : b_(make(model, options, run)) {
    init_lora(0);
  }

  // A Hugging Face folder (bf16/fp16/fp32 safetensors, sharded or not): each weight is read and
  // quantized into its planned place one tensor at a time. With `expected`, config.json must
  // match it field by field.
  // A bitsandbytes 4-bit folder (config.json with a bitsandbytes `quantization_config`, as
  // transformers saves one) loads directly: its 4-bit weights are kept bit for bit when their
  // format is the plan's, else dequantized and quantized as the plan says.
  // A llama .gguf file (F32/F16/BF16, Q4_0..Q8_0, IQ4_NL, K-quants) is dequantized one tensor
  // at a time (io/gguf_model.hpp: q/k rows un-permuted) and quantized as the plan says.
  static BasicRun from_pretrained(const std::filesystem::path& dir, const PlanOptions& options,
                             const ModelConfig* expected = nullptr, bool poison = false) {
    return from_pretrained(dir, options, expected, RunOptions{0, poison});
  }
  static BasicRun from_pretrained(const std::filesystem::path& dir, const PlanOptions& options,
                                  const ModelConfig* expected, const RunOptions& run) {
    const io::ModelSource src(dir, expected);
    BasicRun r(src.config(), options, run);
    r.base_model_ = dir.string();
    r.bit_exact_weights_ = 0;
    src.for_each_weight(
        [&](const io::WeightSlot& s, std::span<const float> v) { r.set_weight(s, v.data()); },
        [&](const io::WeightSlot& s, const quant::Quant4& q) {
          const bool kept = r.b_->set_projection_quant4(s.layer, io::target_index(s.kind), q);
          r.bit_exact_weights_ += kept;
          return kept;
        });
    return r;
  }

  // Projections loaded from a bnb-4bit folder without requantization (tests, reports).
  int bit_exact_weights() const { return bit_exact_weights_; }

  // Random frozen weights (normal, std 0.02; norms 1): benchmarks, tests, and the main job,
  // which has no pretrained checkpoint offline.
  void init_random_weights(std::uint64_t seed, float std = 0.02f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0.0f, std);
    for (const io::WeightSlot& s : io::weight_slots(b_->model())) {
      std::vector<float> v(std::size_t(s.numel()));
      const bool norm = s.kind == io::WeightKind::attn_norm || s.kind == io::WeightKind::mlp_norm ||
                        s.kind == io::WeightKind::final_norm;
      for (float& x : v) x = norm ? 1.0f : nd(rng);
      set_weight(s, v.data());
    }
  }

  // A fresh adapter as PEFT initializes one (B = 0: the first step starts at the base model).
  void init_lora(std::uint64_t seed) {
    put_adapter(io::make_lora_adapter(b_->model(), lora_config(), seed));
    reset_optimizer();
  }

  // Fresh AdamW state, step 0 and the data from its start: what a run that loads only an
  // adapter (no checkpoint) begins with.
  void reset_optimizer() {
    step_ = 0;
    pos_ = {};
    loader_.reset();
    packed_.reset();
    b_->sync_lora_from_device();
    std::fill(b_->adam_m().begin(), b_->adam_m().end(), 0.0f);
    std::fill(b_->adam_v().begin(), b_->adam_v().end(), 0.0f);
    b_->sync_lora_to_device();
    b_->zero_grads();
  }

  const Backend& backend() const { return *b_; }
  Backend& backend() { return *b_; }
  std::int64_t step() const { return step_; }

  io::LoraConfig lora_config() const {
    const PlanOptions& o = b_->options();
    io::LoraConfig c;
    c.r = o.lora_rank;
    c.alpha = o.lora_alpha;
    c.dropout = o.lora_dropout;
    c.rslora = o.rslora;
    c.targets = o.lora_targets;
    c.base_model = base_model_;
    if (o.sparse_first >= 0)
      for (int l = 0; l < b_->model().layers; ++l)
        if (l < o.sparse_first || l >= b_->model().layers - o.sparse_last) c.layers.push_back(l);
    return c;
  }

  io::LoraAdapter adapter() {
    io::LoraAdapter a;
    a.config = lora_config();
    b_->sync_lora_from_device();
    const auto params = b_->lora_params();
    for (const backend::LoraSlice& s : b_->lora_layout()) {
      io::LoraPair p{s.layer, s.proj, s.in, s.out, {}, {}};
      const std::int64_t r = b_->options().lora_rank;
      p.A.assign(params.begin() + s.a, params.begin() + s.a + r * s.in);
      p.B.assign(params.begin() + s.b, params.begin() + s.b + s.out * r);
      a.pairs.push_back(std::move(p));
    }
    return a;
  }

  void save_adapter(const std::filesystem::path& dir) { io::save_lora_adapter(dir, adapter()); }

  // An adapter folder whose rank, alpha, targets and layers must be the run's own; training
  // continues from it.
  void load_adapter(const std::filesystem::path& dir) {
    const io::LoraAdapter a = io::load_lora_adapter(dir, &b_->model());
    const io::LoraConfig want = lora_config();
    const std::string src = (dir / "adapter_config.json").string();
    if (a.config.r != want.r)
      throw Error(src + ": field 'r' is " + std::to_string(a.config.r) + " but the run uses --lora-r " +
                  std::to_string(want.r));
    if (a.config.alpha != want.alpha)
      throw Error(src + ": field 'lora_alpha' is " + std::to_string(a.config.alpha) +
                  " but the run uses --lora-alpha " + std::to_string(want.alpha));
    if (a.config.targets != want.targets)
      throw Error(src + ": field 'target_modules' differs from the run's --targets");
    if (a.config.rslora != want.rslora)
      throw Error(src + ": field 'use_rslora' differs from the run's --rslora");
    if (a.config.layers != want.layers)
      throw Error(src + ": field 'layers_to_transform' differs from the run's --sparse layers");
    put_adapter(a);
  }

  // Mean token loss over consecutive windows from the start of the data (all, or `max_batches`).
  double evaluate(const io::TokenDataset& data, std::int64_t max_batches = 0) {
    const PlanOptions& o = b_->options();
    io::WindowLoader loader(data, o.seq, io::Split::train, 0.0, false, 0);
    const std::int64_t batches = std::int64_t(loader.windows()) / o.batch;
    if (batches == 0)
      throw Error(data.source() + ": " + std::to_string(loader.windows()) +
                  " windows, fewer than one batch of " + std::to_string(o.batch));
    const std::int64_t n = max_batches > 0 && max_batches < batches ? max_batches : batches;
    std::vector<std::int32_t> tok(std::size_t(o.batch * o.seq)), tgt(tok.size());
    double sum = 0;
    std::int64_t count = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      for (int b = 0; b < o.batch; ++b) loader.next(tok.data() + b * o.seq, tgt.data() + b * o.seq);
      const backend::StepStats s = b_->evaluate(tok.data(), tgt.data());
      sum += s.loss_sum;
      count += s.tokens;
    }
    return count ? sum / double(count) : 0.0;
  }

  // Mean token loss over packed rows (io/examples.hpp) in order from the first (all, or
  // `max_batches`): each row's examples attend only to themselves and restart their positions.
  double evaluate(const io::PackedExamples& data, std::int64_t max_batches = 0) {
    const PlanOptions& o = b_->options();
    check_packed(data);
    io::PackedLoader loader(data, false, 0);
    const std::int64_t batches = std::int64_t(loader.rows()) / o.batch;
    if (batches == 0)
      throw Error(data.source() + ": " + std::to_string(loader.rows()) +
                  " packed rows, fewer than one batch of " + std::to_string(o.batch));
    const std::int64_t n = max_batches > 0 && max_batches < batches ? max_batches : batches;
    std::vector<std::int32_t> tok(std::size_t(o.batch * o.seq)), tgt(tok.size()), pos(tok.size());
    double sum = 0;
    std::int64_t count = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      for (int b = 0; b < o.batch; ++b)
        loader.next(tok.data() + b * o.seq, tgt.data() + b * o.seq, pos.data() + b * o.seq);
      const backend::StepStats s = evaluate_with(tok.data(), tgt.data(), pos.data());
      sum += s.loss_sum;
      count += s.tokens;
    }
    return count ? sum / double(count) : 0.0;
  }

  FitResult fit(const io::TokenDataset& data, const FitOptions& f) {
    const PlanOptions& o = b_->options();
    if (f.grad_accum < 1) throw Error("--grad-accum must be >= 1");
    if (!loader_ || loader_seed_ != f.seed || loader_shuffle_ != f.shuffle || loader_data_ != &data) {
      loader_ = std::make_unique<io::WindowLoader>(data, o.seq, io::Split::train, 0.0, f.shuffle, f.seed);
      loader_->seek(pos_);
      loader_seed_ = f.seed;
      loader_shuffle_ = f.shuffle;
      loader_data_ = &data;
    }
    return fit_loop(f, nullptr, [&](std::int32_t* tok, std::int32_t* tgt, std::int32_t*) {
      for (int b = 0; b < o.batch; ++b) loader_->next(tok + b * o.seq, tgt + b * o.seq);
      return std::int64_t(o.batch) * o.seq;
    }, [&] { return loader_->position(); });
  }

  // Packed examples: rows shuffled per epoch with f.seed (or in order), positions per example;
  // FitResult::tokens counts example tokens, not padding. The data position is the row loader's,
  // saved and resumed by checkpoints as the window loader's is.
  FitResult fit(const io::PackedExamples& data, const FitOptions& f) {
    const PlanOptions& o = b_->options();
    if (f.grad_accum < 1) throw Error("--grad-accum must be >= 1");
    check_packed(data);
    if (!packed_ || loader_seed_ != f.seed || loader_shuffle_ != f.shuffle || packed_data_ != &data) {
      packed_ = std::make_unique<io::PackedLoader>(data, f.shuffle, f.seed);
      packed_->seek(pos_);
      loader_seed_ = f.seed;
      loader_shuffle_ = f.shuffle;
      packed_data_ = &data;
    }
    std::vector<std::int32_t> pos(std::size_t(o.batch * o.seq));
    return fit_loop(f, pos.data(), [&](std::int32_t* tok, std::int32_t* tgt, std::int32_t* p) {
      std::int64_t real = 0;
      for (int b = 0; b < o.batch; ++b)
        real += std::int64_t(packed_->next(tok + b * o.seq, tgt + b * o.seq, p + b * o.seq));
      return real;
    }, [&] { return packed_->position(); });
  }

 private:
  void check_packed(const io::PackedExamples& data) const {
    if (data.seq() != b_->options().seq)
      throw Error(data.source() + ": packed into rows of " + std::to_string(data.seq()) +
                  " tokens but the run's seq is " + std::to_string(b_->options().seq));
  }

  // The backend takes per-token positions (packed rows).
  static constexpr bool takes_positions = requires(Backend& b, const std::int32_t* p,
                                                   const backend::OptimizerSettings* os) {
    b.step(p, p, p, os, 1.0, std::uint64_t(0), std::uint64_t(0));
    b.evaluate(p, p, p);
  };

  backend::StepStats step_with(const std::int32_t* tok, const std::int32_t* tgt, const std::int32_t* positions,
                               const backend::OptimizerSettings* os, double scale, std::uint64_t seed,
                               std::uint64_t index) {
    if (!positions) return b_->step(tok, tgt, os, scale, seed, index);
    if constexpr (takes_positions) return b_->step(tok, tgt, positions, os, scale, seed, index);
    throw Error(std::string("the ") + b_->name() + " backend does not take packed rows (positions) yet");
  }
  backend::StepStats evaluate_with(const std::int32_t* tok, const std::int32_t* tgt, const std::int32_t* positions) {
    if constexpr (takes_positions) return b_->evaluate(tok, tgt, positions);
    throw Error(std::string("the ") + b_->name() + " backend does not take packed rows (positions) yet");
  }

  // The optimizer loop over micro-batches that `fill` makes (tokens, targets, and positions when
  // `positions` is not null); `fill` returns the tokens the batch counts for tokens/s, `where`
  // the loader's position after it.
  template <class Fill, class Where>
  FitResult fit_loop(const FitOptions& f, std::int32_t* positions, Fill&& fill, Where&& where) {
    const PlanOptions& o = b_->options();
    FitResult res;
    std::vector<std::int32_t> tok(std::size_t(o.batch * o.seq)), tgt(tok.size());
    const auto t0 = std::chrono::steady_clock::now();
    const std::int64_t first = step_;
    const std::int64_t end = f.stop_after > 0 && f.stop_after < f.steps ? f.stop_after : f.steps;
    for (std::int64_t s = step_; s < end; ++s) {
      backend::OptimizerSettings os;
      os.adamw = {ops::schedule::lr_at(f.lr, s, f.warmup, f.steps), f.beta1, f.beta2, f.eps, f.weight_decay};
      os.clip = f.clip;
      os.step = s + 1;
      double loss_sum = 0;
      std::int64_t counted = 0;
      backend::StepStats last;
      for (int m = 0; m < f.grad_accum; ++m) {
        const std::int64_t batch_tokens = fill(tok.data(), tgt.data(), positions);
        const bool update = m + 1 == f.grad_accum;
        try {
          last = step_with(tok.data(), tgt.data(), positions, update ? &os : nullptr, 1.0 / f.grad_accum,
                           f.seed, std::uint64_t(s * f.grad_accum + m));
        } catch (const Error& e) {
          throw Error(std::string(e.what()) + " (optimizer step " + std::to_string(s + 1) + "; " +
                      (last_checkpoint_.empty() ? std::string("no checkpoint written yet")
                                                : "last good checkpoint: " + last_checkpoint_) +
                      ")");
        }
        loss_sum += last.loss_sum;
        counted += last.tokens;
        res.tokens += batch_tokens;
      }
      step_ = s + 1;
      pos_ = where();
      const double loss = counted ? loss_sum / double(counted) : 0.0;
      res.losses.push_back(loss);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      Progress p;
      p.step = step_;
      p.steps = f.steps;
      p.loss = loss;
      p.lr = os.adamw.lr;
      p.grad_norm = last.grad_norm;
      p.tokens_per_s = secs > 0 ? double(res.tokens) / secs : 0;
      p.eta_s = step_ > first ? secs / double(step_ - first) * double(f.steps - step_) : 0;
      p.arena_bytes = b_->plan().summary.arena_bytes;
      p.pinned_bytes = b_->plan().summary.pinned_bytes;
      if (f.progress) f.progress(p);
      else std::fprintf(stderr, "%s\n", progress_line(p).c_str());
      if (!f.checkpoint_dir.empty() && f.checkpoint_every > 0 && step_ % f.checkpoint_every == 0)
        save_checkpoint(f.checkpoint_dir, f.seed);
    }
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!f.checkpoint_dir.empty() && (f.checkpoint_every <= 0 || step_ % f.checkpoint_every != 0))
      save_checkpoint(f.checkpoint_dir, f.seed);
    return res;
  }

 public:
  // New tokens after `prompt` (sequence `seq` of the batch), with the run's weights and adapter
  // (no dropout), on the plan's KV cache: the options must set generate_context (prompt + new
  // tokens). Both backends have the decode path (decode, generate_context).
  GenerateResult generate(std::span<const std::int32_t> prompt, const GenerateOptions& g,
                          int seq = 0) {
    return lvt::generate(*b_, prompt, g, seq);
  }

  // Adapter, AdamW moments, step, data position and seed, written atomically.
  void save_checkpoint(const std::filesystem::path& dir, std::uint64_t seed) {
    io::TrainingCheckpoint c;
    c.adapter = adapter();  // (synchronized the moments too)
    const auto m = b_->adam_m(), v = b_->adam_v();
    for (const backend::LoraSlice& s : b_->lora_layout()) {
      const std::int64_t r = b_->options().lora_rank;
      for (char ab : {'A', 'B'}) {
        const std::int64_t off = ab == 'A' ? s.a : s.b, len = ab == 'A' ? r * s.in : s.out * r;
        const std::string key = io::peft_key(s.layer, s.proj, ab);
        c.optimizer[key + ".exp_avg"].assign(m.begin() + off, m.begin() + off + len);
        c.optimizer[key + ".exp_avg_sq"].assign(v.begin() + off, v.begin() + off + len);
      }
    }
    c.step = std::uint64_t(step_);
    c.data = pos_;
    c.seed = seed;
    io::save_checkpoint(dir, c);
    last_checkpoint_ = dir.string();
  }

  // Continues exactly where save_checkpoint stopped (the same options and data).
  void resume(const std::filesystem::path& dir) {
    const io::TrainingCheckpoint c = io::load_checkpoint(dir, &b_->model());
    put_adapter(c.adapter);
    b_->sync_lora_from_device();
    auto m = b_->adam_m(), v = b_->adam_v();
    for (const backend::LoraSlice& s : b_->lora_layout()) {
      const std::int64_t r = b_->options().lora_rank;
      for (char ab : {'A', 'B'}) {
        const std::int64_t off = ab == 'A' ? s.a : s.b, len = ab == 'A' ? r * s.in : s.out * r;
        const std::string key = io::peft_key(s.layer, s.proj, ab);
        for (const char* which : {".exp_avg", ".exp_avg_sq"}) {
          auto it = c.optimizer.find(key + which);
          if (it == c.optimizer.end() || std::int64_t(it->second.size()) != len)
            throw Error((dir / "optimizer.safetensors").string() + ": tensor '" + key + which +
                        "' is missing or has the wrong size");
          std::copy(it->second.begin(), it->second.end(),
                    (std::string(which) == ".exp_avg_sq" ? v : m).begin() + off);
        }
      }
    }
    b_->sync_lora_to_device();
    step_ = std::int64_t(c.step);
    pos_ = c.data;
    loader_.reset();
    packed_.reset();
    last_checkpoint_ = dir.string();
  }

 private:
  std::unique_ptr<Backend> b_;
  std::string base_model_;
  std::int64_t step_ = 0;
  io::DataPosition pos_{};
  std::unique_ptr<io::WindowLoader> loader_;
  std::unique_ptr<io::PackedLoader> packed_;
  std::uint64_t loader_seed_ = 0;
  bool loader_shuffle_ = false;
  const io::TokenDataset* loader_data_ = nullptr;
  const io::PackedExamples* packed_data_ = nullptr;
  std::string last_checkpoint_;
  int bit_exact_weights_ = 0;

  void set_weight(const io::WeightSlot& s, const float* v) {
    const ModelConfig& m = b_->model();
    switch (s.kind) {
      case io::WeightKind::embed: b_->set_embed_table(v); break;
      case io::WeightKind::lm_head:
        if (!m.tied_embeddings) b_->set_lm_head(v);
        break;
      case io::WeightKind::final_norm: b_->set_final_norm(v); break;
      case io::WeightKind::attn_norm: b_->set_norm(s.layer, 0, v); break;
      case io::WeightKind::mlp_norm: b_->set_norm(s.layer, 1, v); break;
      case io::WeightKind::q_bias: b_->set_bias(s.layer, 0, v); break;
      case io::WeightKind::k_bias: b_->set_bias(s.layer, 1, v); break;
      case io::WeightKind::v_bias: b_->set_bias(s.layer, 2, v); break;
      default: b_->set_projection(s.layer, io::target_index(s.kind), v, s.name); break;
    }
  }

  static std::unique_ptr<Backend> make(const ModelConfig& model, const PlanOptions& options,
                                       const RunOptions& run) {
    if constexpr (Backend::has_poison_mode) {
      return std::make_unique<Backend>(model, options, run.poison, run.threads);
    } else {
      if (run.poison) throw Error("poison mode is a check of the host backend; the " +
                                  std::string(Backend::name()) + " backend has none");
      // the host side of this backend (an offloaded optimizer) runs on these threads
      ops::parallel::set_threads(ops::parallel::resolve_threads(run.threads));
      return std::make_unique<Backend>(model, options);
    }
  }

  void put_adapter(const io::LoraAdapter& a) {
    b_->sync_lora_from_device();
    auto params = b_->lora_params();
    const std::int64_t r = b_->options().lora_rank;
    for (const backend::LoraSlice& s : b_->lora_layout()) {
      const io::LoraPair* p = a.find(s.layer, s.proj);
      if (!p)
        throw Error("adapter: no LoRA pair for layer " + std::to_string(s.layer) + " " +
                    targets::names[s.proj] + " (rank/targets/layers disagree with the run)");
      if (std::int64_t(p->A.size()) != r * s.in || std::int64_t(p->B.size()) != s.out * r)
        throw Error("adapter: layer " + std::to_string(s.layer) + " " + targets::names[s.proj] +
                    ": A/B shapes disagree with rank " + std::to_string(r));
      std::copy(p->A.begin(), p->A.end(), params.begin() + s.a);
      std::copy(p->B.begin(), p->B.end(), params.begin() + s.b);
    }
    b_->sync_lora_to_device();
    b_->zero_grads();
  }
};

using Run = BasicRun<backend::HostBackend>;

}  // namespace lvt
