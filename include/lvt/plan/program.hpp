#pragma once
// The step program: layer-granularity actions on a compute stream and copy streams, with
// explicit dependencies, and every buffer the step touches with its size and lifetime.
// Everything here is constexpr on plain values: `Trainer<...>::plan` runs it at compile time,
// `lvt plan` at run time on a config.json.
#include <cstdint>
#include <vector>

#include "lvt/plan/sizes.hpp"

namespace lvt::plan {

enum class Op : std::uint8_t {
  embed,             // token ids -> residual x0 (gathered on the host when the table is pinned)
  fetch_weights,     // one layer's frozen weights: pinned host -> a device ring slot
  forward,           // one decoder layer forward
  save_checkpoint,   // a checkpoint: device -> pinned host
  load_checkpoint,   // a checkpoint: pinned host -> device
  loss,              // final norm + chunked lm head + cross-entropy, forward and backward
  recompute,         // one layer forward again, from a checkpoint, saving its activations
  backward,          // one decoder layer backward (LoRA grads, grad of its input)
  grads_to_host,     // LoRA grads: device -> pinned host (optimizer offloaded)
  optimizer_step,    // AdamW over the flat LoRA buffer (on the device, or the host when offloaded)
  params_to_device,  // updated LoRA params: pinned host -> device (optimizer offloaded)
};

enum class Stream : std::uint8_t { compute, h2d, d2h, host };
inline constexpr int stream_count = 4;

constexpr const char* op_name(Op o) {
  switch (o) {
    case Op::embed: return "embed";
    case Op::fetch_weights: return "fetch_weights";
    case Op::forward: return "forward";
    case Op::save_checkpoint: return "save_checkpoint";
    case Op::load_checkpoint: return "load_checkpoint";
    case Op::loss: return "loss";
    case Op::recompute: return "recompute";
    case Op::backward: return "backward";
    case Op::grads_to_host: return "grads_to_host";
    case Op::optimizer_step: return "optimizer_step";
    case Op::params_to_device: return "params_to_device";
  }
  return "?";
}
constexpr const char* stream_name(Stream s) {
  switch (s) {
    case Stream::compute: return "compute";
    case Stream::h2d: return "h2d";
    case Stream::d2h: return "d2h";
    case Stream::host: return "host";
  }
  return "?";
}

struct Action {
  Op op{};
  Stream stream{};
  int layer = -1;  // decoder layer, -1 for whole-model actions
  int slot = -1;   // ring slot of fetch_weights and of the compute actions that read it
  i64 bytes = 0;   // bytes a copy action moves
  // Waits: per stream, the latest action of that stream this one must wait for (-1: none).
  // Actions on one stream run in program order, so one index per stream says everything.
  int wait[stream_count]{-1, -1, -1, -1};
  constexpr bool operator==(const Action&) const = default;
};

enum class Kind : std::uint8_t {
  weights,      // frozen layer weights (resident, ring slots, or the pinned copy)
  embeddings,   // embedding table, lm head, final norm
  lora,         // LoRA parameters (fp32, one flat buffer)
  lora_grads,   // their gradients
  optimizer,    // AdamW first and second moments (fp32), and the host staging when offloaded
  residual,     // residual stream between layers (a checkpoint is a residual kept alive)
  activations,  // what a layer's backward needs, saved by forward or recompute
  gradients,    // gradient of the residual stream during backward
  workspace,    // per-action scratch: dequantized weight, temporaries, logits chunk
  cublas,       // cuBLASLt workspace
  io,           // token ids, targets and positions, and the step's control block
  kv_cache,     // generation: keys and values of every layer for the planned context
};
inline constexpr int kind_count = 12;

constexpr const char* kind_name(Kind k) {
  switch (k) {
    case Kind::weights: return "weights";
    case Kind::embeddings: return "embeddings";
    case Kind::lora: return "lora";
    case Kind::lora_grads: return "lora_grads";
    case Kind::optimizer: return "optimizer";
    case Kind::residual: return "residual";
    case Kind::activations: return "activations";
    case Kind::gradients: return "gradients";
    case Kind::workspace: return "workspace";
    case Kind::cublas: return "cublas";
    case Kind::io: return "io";
    case Kind::kv_cache: return "kv_cache";
  }
  return "?";
}

enum class Memory : std::uint8_t { device, pinned };

// Which of the buffers of one kind this is, where a kind has several roles.
enum class Role : std::uint8_t {
  none,
  embed_table,  // embeddings: the input embedding table (also the lm head when tied)
  lm_head,      // embeddings: the lm head (untied) and the final norm weight
  slot,         // weights: a device ring slot of streamed weights
  moment1,      // optimizer: AdamW m
  moment2,      // optimizer: AdamW v
  host_grads,   // optimizer: LoRA grads landed on the host
  host_params,  // optimizer: fp32 LoRA params updated on the host
  checkpoint,   // residual: a checkpoint parked in pinned memory
  generation,   // workspace: the decode scratch beside the KV cache
};

// One action's use of one buffer (the backends find an action's operands from these).
enum class Access : std::uint8_t { read, write, read_write };
struct Use {
  int action = -1;
  int buffer = -1;
  Access access{};
  constexpr bool operator==(const Use&) const = default;
};

struct Buffer {
  Kind kind{};
  Memory memory{};
  Role role = Role::none;
  int layer = -1;
  i64 bytes = 0;      // aligned to arena_alignment
  int first = -1;     // first action using it (its lifetime starts there)
  int last = -1;      // last action using it (inclusive)
  i64 offset = -1;    // in the device arena or the pinned pool, set by packing
  // Per stream, the last action using it: the waits a later buffer at the same address needs.
  int last_use[stream_count]{-1, -1, -1, -1};
  int last_writer = -1;
  constexpr bool live_at(int t) const { return first <= t && t <= last; }
  constexpr bool operator==(const Buffer&) const = default;
};

// What backward work the options imply for each layer.
struct LayerRoles {
  int layers = 0;
  int lowest_trainable = 0;  // backward stops here
  int top_start = 0;         // first layer of the top segment (saves activations in forward)
  int every = 0;             // checkpoint_every
  constexpr bool trainable(const PlanOptions& o, int l) const {
    if (o.sparse_first < 0) return true;
    return l < o.sparse_first || l >= layers - o.sparse_last;
  }
  constexpr bool needs_backward(int l) const { return l >= lowest_trainable; }
  constexpr bool saves_in_forward(int l) const { return l >= top_start; }
  // A checkpoint is the input of the first layer of a recomputed segment.
  constexpr bool checkpoint(int l) const {
    return needs_backward(l) && l < top_start && (l % every == 0 || l == lowest_trainable);
  }
};

constexpr LayerRoles layer_roles(const ModelConfig& m, const PlanOptions& o) {
  LayerRoles r;
  r.layers = m.layers;
  r.every = o.checkpoint_every;
  r.lowest_trainable = m.layers;
  for (int l = 0; l < m.layers; ++l)
    if (r.trainable(o, l)) {
      r.lowest_trainable = l;
      break;
    }
  if (o.checkpoint_every <= 0) {
    r.top_start = r.lowest_trainable;
  } else {
    const int top = ((m.layers - 1) / o.checkpoint_every) * o.checkpoint_every;
    r.top_start = top > r.lowest_trainable ? top : r.lowest_trainable;
  }
  return r;
}

constexpr i64 trainable_layer_count(const ModelConfig& m, const PlanOptions& o) {
  const LayerRoles r = layer_roles(m, o);
  i64 n = 0;
  for (int l = 0; l < m.layers; ++l) n += r.trainable(o, l);
  return n;
}

constexpr i64 lora_param_count(const ModelConfig& m, const PlanOptions& o) {
  return trainable_layer_count(m, o) * layer_lora_params(m, o);
}

// Builds actions and buffers together: each action declares which buffers it reads and writes,
// and the waits follow from that (read after write, write after read, on other streams).
class ProgramBuilder {
 public:
  std::vector<Action> actions;
  std::vector<Buffer> buffers;
  std::vector<Use> uses;

  constexpr int act(Op op, Stream s, int layer = -1, i64 bytes = 0) {
    Action a;
    a.op = op;
    a.stream = s;
    a.layer = layer;
    a.bytes = bytes;
    actions.push_back(a);
    return int(actions.size()) - 1;
  }
  constexpr int buf(Kind k, Memory mem, i64 bytes, int layer = -1, Role role = Role::none) {
    Buffer b;
    b.role = role;
    b.kind = k;
    b.memory = mem;
    b.layer = layer;
    b.bytes = align_up(bytes > 0 ? bytes : 1, arena_alignment);
    buffers.push_back(b);
    return int(buffers.size()) - 1;
  }
  constexpr void wait(int a, int on) {
    if (on < 0 || on >= a) return;
    Action& x = actions[std::size_t(a)];
    const int s = int(actions[std::size_t(on)].stream);
    if (s == int(x.stream)) return;  // same stream: program order already
    if (x.wait[s] < on) x.wait[s] = on;
  }
  constexpr void read(int b, int a) {
    uses.push_back({a, b, Access::read});
    touch(b, a);
    wait(a, buffers[std::size_t(b)].last_writer);
  }
  constexpr void write(int b, int a) {
    uses.push_back({a, b, Access::write});
    Buffer& x = buffers[std::size_t(b)];
    touch(b, a);
    wait(a, x.last_writer);
    for (int s = 0; s < stream_count; ++s)
      if (x.last_use[s] != a) wait(a, x.last_use[s]);
    x.last_writer = a;
  }
  constexpr void read_write(int b, int a) {
    read(b, a);
    write(b, a);
    uses.pop_back();  // one record: read_write
    uses.back().access = Access::read_write;
  }

 private:
  // Waits are computed before mark_use updates last_use, so a write sees earlier users only.
  constexpr void touch(int b, int a) {
    Buffer& x = buffers[std::size_t(b)];
    if (x.first < 0 || a < x.first) x.first = a;
    if (a > x.last) x.last = a;
  }

 public:
  constexpr void mark_use(int b, int a) {
    Buffer& x = buffers[std::size_t(b)];
    int& u = x.last_use[int(actions[std::size_t(a)].stream)];
    if (a > u) u = a;
  }
};

// One step: forward through every layer, loss, backward down to the lowest trainable layer
// (recomputing checkpointed segments), optimizer. Returns actions and buffers with lifetimes
// (offsets unset: see pack.hpp).
constexpr ProgramBuilder build_program(const ModelConfig& m, const PlanOptions& o) {
  ProgramBuilder P;
  const LayerRoles R = layer_roles(m, o);
  const int L = m.layers;
  const Memory dev = Memory::device, pin = Memory::pinned;
  const bool stream_w = o.offload_weights;
  const int slots = o.weight_slots < 2 ? 2 : o.weight_slots;

  // ---- 1. the order of non-fetch actions (what the compute stream does, and its copies) ----
  struct Step {
    Op op;
    int layer;
  };
  std::vector<Step> steps;
  // The slot reads and writes below make each compute action wait for its fetch, and each
  // fetch wait for the compute that last read its slot.
  steps.push_back({Op::embed, -1});
  if (o.offload_checkpoints && R.checkpoint(0)) steps.push_back({Op::save_checkpoint, 0});
  for (int l = 0; l < L; ++l) {
    steps.push_back({Op::forward, l});
    if (l + 1 < L && o.offload_checkpoints && R.checkpoint(l + 1))
      steps.push_back({Op::save_checkpoint, l + 1});
  }
  steps.push_back({Op::loss, -1});
  for (int l = L - 1; l >= R.top_start && l >= R.lowest_trainable; --l)
    steps.push_back({Op::backward, l});
  for (int s1 = R.top_start - 1; s1 >= R.lowest_trainable;) {
    int s0 = s1;
    while (!R.checkpoint(s0)) --s0;
    if (o.offload_checkpoints) steps.push_back({Op::load_checkpoint, s0});
    for (int l = s0; l <= s1; ++l) steps.push_back({Op::recompute, l});
    for (int l = s1; l >= s0; --l) steps.push_back({Op::backward, l});
    s1 = s0 - 1;
  }
  const bool any_trainable = R.lowest_trainable < L;
  if (any_trainable) {
    if (o.offload_optimizer) {
      steps.push_back({Op::grads_to_host, -1});
      steps.push_back({Op::optimizer_step, -1});
      steps.push_back({Op::params_to_device, -1});
    } else {
      steps.push_back({Op::optimizer_step, -1});
    }
  }

  // ---- 2. weight uses: consecutive compute steps on one layer share one fetch ----
  auto uses_weights = [](Op op) {
    return op == Op::forward || op == Op::recompute || op == Op::backward;
  };
  std::vector<int> use_of_step(steps.size(), -1);
  std::vector<int> use_layer;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    if (!uses_weights(steps[i].op)) continue;
    if (use_layer.empty() || use_layer.back() != steps[i].layer) use_layer.push_back(steps[i].layer);
    use_of_step[i] = int(use_layer.size()) - 1;
  }
  std::vector<int> last_step_of_use(use_layer.size(), -1);
  for (std::size_t i = 0; i < steps.size(); ++i)
    if (use_of_step[i] >= 0) last_step_of_use[std::size_t(use_of_step[i])] = int(i);

  // ---- 3. buffers that live through the whole step ----
  const i64 n_lora = lora_param_count(m, o);
  const bool embed_pinned = stream_w && !m.tied_embeddings;
  const int b_io = P.buf(Kind::io, dev, io_bytes(o));
  const int b_embed = P.buf(Kind::embeddings, embed_pinned ? pin : dev, embedding_bytes(m, o), -1,
                            Role::embed_table);
  const int b_head = P.buf(Kind::embeddings, dev, lm_head_bytes(m, o), -1, Role::lm_head);
  const int b_cublas = P.buf(Kind::cublas, dev, cublaslt_workspace_bytes(o.sm));
  int b_lora = -1, b_grad = -1, b_m = -1, b_v = -1, b_hgrad = -1, b_hparam = -1;
  if (any_trainable) {
    b_lora = P.buf(Kind::lora, dev, n_lora * 4);
    b_grad = P.buf(Kind::lora_grads, dev, n_lora * 4);
    b_m = P.buf(Kind::optimizer, o.offload_optimizer ? pin : dev, n_lora * 4, -1, Role::moment1);
    b_v = P.buf(Kind::optimizer, o.offload_optimizer ? pin : dev, n_lora * 4, -1, Role::moment2);
    if (o.offload_optimizer) {
      b_hgrad = P.buf(Kind::optimizer, pin, n_lora * 4, -1, Role::host_grads);
      b_hparam = P.buf(Kind::optimizer, pin, n_lora * 4, -1, Role::host_params);
    }
  }
  std::vector<int> b_weights(std::size_t(L), -1);  // resident (device) or the pinned copy
  std::vector<int> b_slot(std::size_t(slots), -1);
  const i64 w_bytes = layer_weight_bytes(m, o);
  for (int l = 0; l < L; ++l)
    b_weights[std::size_t(l)] = P.buf(Kind::weights, stream_w ? pin : dev, w_bytes, l);
  if (stream_w)
    for (int s = 0; s < slots; ++s)
      b_slot[std::size_t(s)] = P.buf(Kind::weights, dev, w_bytes, -1, Role::slot);
  // Generation (generate_context > 0): the KV cache and the decode scratch, resident so a run
  // can generate between steps with the same arena. The step's actions never touch them.
  if (o.generate_context > 0) {
    P.buf(Kind::kv_cache, dev, kv_cache_bytes(m, o));
    P.buf(Kind::workspace, dev, generate_workspace_bytes(m, o), -1, Role::generation);
  }
  const std::size_t n_resident = P.buffers.size();

  // ---- 4. emit actions with fetches interleaved, and per-step buffers ----
  std::vector<int> x(std::size_t(L + 1), -1);       // current residual buffer per layer input
  std::vector<int> saved(std::size_t(L), -1);       // saved activations per layer
  std::vector<int> ckpt_host(std::size_t(L), -1);   // pinned checkpoint copies
  int b_g = -1;
  const i64 res_bytes = residual_bytes(m, o);

  auto emit_fetch = [&](int u) {
    const int l = use_layer[std::size_t(u)];
    const int a = P.act(Op::fetch_weights, Stream::h2d, l, w_bytes);
    P.actions[std::size_t(a)].slot = u % slots;
    P.read(b_weights[std::size_t(l)], a);
    P.mark_use(b_weights[std::size_t(l)], a);
    P.write(b_slot[std::size_t(u % slots)], a);
    P.mark_use(b_slot[std::size_t(u % slots)], a);
  };
  auto rd = [&](int b, int a) {
    if (b < 0) return;
    P.read(b, a);
    P.mark_use(b, a);
  };
  auto wr = [&](int b, int a) {
    if (b < 0) return;
    P.write(b, a);
    P.mark_use(b, a);
  };
  auto rw = [&](int b, int a) {
    if (b < 0) return;
    P.read_write(b, a);
    P.mark_use(b, a);
  };
  auto weights_for = [&](std::size_t step, int a) {
    const int u = use_of_step[step];
    if (stream_w) {
      P.actions[std::size_t(a)].slot = u % slots;
      rd(b_slot[std::size_t(u % slots)], a);
    } else {
      rd(b_weights[std::size_t(use_layer[std::size_t(u)])], a);
    }
  };
  auto scratch = [&](int a, i64 bytes, int layer) {
    if (bytes <= 0) return;
    const int b = P.buf(Kind::workspace, dev, bytes, layer);
    wr(b, a);
  };

  if (stream_w)
    for (int u = 0; u < slots && u < int(use_layer.size()); ++u) emit_fetch(u);

  for (std::size_t i = 0; i < steps.size(); ++i) {
    const Step st = steps[i];
    const int l = st.layer;
    const std::size_t lz = std::size_t(l < 0 ? 0 : l);
    switch (st.op) {
      case Op::embed: {
        const int a = P.act(Op::embed, embed_pinned ? Stream::h2d : Stream::compute, -1,
                            embed_pinned ? res_bytes : 0);
        rd(b_io, a);
        rd(b_embed, a);
        x[0] = P.buf(Kind::residual, dev, res_bytes, 0);
        wr(x[0], a);
        break;
      }
      case Op::forward: {
        const int a = P.act(Op::forward, Stream::compute, l);
        weights_for(i, a);
        rd(x[lz], a);
        rd(b_io, a);  // positions: RoPE and attention
        if (R.trainable(o, l)) rd(b_lora, a);
        const bool saves = R.saves_in_forward(l);
        if (saves) {
          saved[lz] = P.buf(Kind::activations, dev, layer_saved_bytes(m, o), l);
          wr(saved[lz], a);
        }
        scratch(a, forward_workspace_bytes(m, o, saves), l);
        x[lz + 1] = P.buf(Kind::residual, dev, res_bytes, l + 1);
        wr(x[lz + 1], a);
        break;
      }
      case Op::save_checkpoint: {
        const int a = P.act(Op::save_checkpoint, Stream::d2h, l, res_bytes);
        rd(x[lz], a);
        ckpt_host[lz] = P.buf(Kind::residual, pin, res_bytes, l, Role::checkpoint);
        wr(ckpt_host[lz], a);
        break;
      }
      case Op::loss: {
        const int a = P.act(Op::loss, Stream::compute);
        rd(x[std::size_t(L)], a);
        rd(b_head, a);
        if (m.tied_embeddings) rd(b_embed, a);
        rd(b_io, a);
        scratch(a, loss_workspace_bytes(m, o), -1);
        if (any_trainable) {
          b_g = P.buf(Kind::gradients, dev, res_bytes);
          wr(b_g, a);
        }
        break;
      }
      case Op::load_checkpoint: {
        const int a = P.act(Op::load_checkpoint, Stream::h2d, l, res_bytes);
        rd(ckpt_host[lz], a);
        x[lz] = P.buf(Kind::residual, dev, res_bytes, l);
        wr(x[lz], a);
        break;
      }
      case Op::recompute: {
        const int a = P.act(Op::recompute, Stream::compute, l);
        weights_for(i, a);
        rd(x[lz], a);
        rd(b_io, a);
        if (R.trainable(o, l)) rd(b_lora, a);
        saved[lz] = P.buf(Kind::activations, dev, layer_saved_bytes(m, o), l);
        wr(saved[lz], a);
        scratch(a, forward_workspace_bytes(m, o, true), l);
        // The segment's last layer need not rebuild its output: backward starts from g.
        if (l + 1 < L && !R.checkpoint(l + 1) && !R.saves_in_forward(l + 1)) {
          x[lz + 1] = P.buf(Kind::residual, dev, res_bytes, l + 1);
          wr(x[lz + 1], a);
        }
        break;
      }
      case Op::backward: {
        const int a = P.act(Op::backward, Stream::compute, l);
        weights_for(i, a);
        rd(saved[lz], a);
        rd(x[lz], a);
        rd(b_io, a);
        rw(b_g, a);
        if (R.trainable(o, l)) {
          rd(b_lora, a);
          rw(b_grad, a);
        }
        scratch(a, backward_workspace_bytes(m, o), l);
        break;
      }
      case Op::grads_to_host: {
        const int a = P.act(Op::grads_to_host, Stream::d2h, -1, n_lora * 4);
        rd(b_grad, a);
        wr(b_hgrad, a);
        break;
      }
      case Op::optimizer_step: {
        if (o.offload_optimizer) {
          const int a = P.act(Op::optimizer_step, Stream::host);
          rd(b_hgrad, a);
          rw(b_hparam, a);
          rw(b_m, a);
          rw(b_v, a);
        } else {
          const int a = P.act(Op::optimizer_step, Stream::compute);
          rw(b_lora, a);
          rw(b_grad, a);  // zeroed for the next step
          rw(b_m, a);
          rw(b_v, a);
        }
        break;
      }
      case Op::params_to_device: {
        const int a = P.act(Op::params_to_device, Stream::h2d, -1, n_lora * 4);
        rd(b_hparam, a);
        wr(b_lora, a);
        break;
      }
      case Op::fetch_weights: break;  // emitted below, never a step
    }
    // After the last compute action of weight use u, its slot is free for use u + slots.
    if (stream_w && use_of_step[i] >= 0 && last_step_of_use[std::size_t(use_of_step[i])] == int(i)) {
      const int next = use_of_step[i] + slots;
      if (next < int(use_layer.size())) emit_fetch(next);
    }
  }

  // Resident buffers live through the whole step.
  const int end = int(P.actions.size()) - 1;
  for (std::size_t b = 0; b < n_resident; ++b) {
    P.buffers[b].first = 0;
    P.buffers[b].last = end;
  }
  (void)b_cublas;
  return P;
}

}  // namespace lvt::plan
