// lvt quantize IN_DIR OUT_DIR [--fp4] [--no-double-quant] [--block 64] [--shard-gb 5]
// A Hugging Face folder (config.json + safetensors) to a bitsandbytes 4-bit folder that
// transformers loads with from_pretrained, one tensor in memory at a time.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "lvt/io/bnb4bit.hpp"

namespace {
const char* quantize_usage =
    "usage: lvt quantize IN_DIR OUT_DIR [--fp4] [--no-double-quant] [--block N] [--shard-gb G]\n"
    "  quantizes the linear projections (q/k/v/o/gate/up/down, phi3 qkv_proj/gate_up_proj) of a\n"
    "  Hugging Face folder to bitsandbytes 4-bit (NF4 by default, double quantization on, block 64)\n"
    "  and copies every other tensor and file; config.json gains quantization_config.\n";

int parse_int(const char* flag, const char* v) {
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (!*v || *end || x <= 0 || x > 1 << 20)
    throw lvt::Error(std::string(flag) + ": expected a positive integer, got '" + v + "'");
  return int(x);
}
}  // namespace

int lvt_cmd_quantize(int argc, char** argv) {
  lvt::io::bnb::QuantizeOptions opt;
  std::string in, out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(quantize_usage, stdout);
      return 0;
    } else if (a == "--fp4") {
      opt.code = lvt::quant::Code4::fp4;
    } else if (a == "--nf4") {
      opt.code = lvt::quant::Code4::nf4;
    } else if (a == "--no-double-quant") {
      opt.double_quant = false;
    } else if (a == "--block" || a == "--shard-gb") {
      if (i + 1 >= argc) throw lvt::Error(a + ": missing value");
      const int v = parse_int(a.c_str(), argv[++i]);
      if (a == "--block") opt.block = v;
      else opt.max_shard_bytes = std::uint64_t(v) * 1'000'000'000ull;
    } else if (!a.empty() && a[0] == '-') {
      throw lvt::Error("unknown option '" + a + "'\n" + quantize_usage);
    } else if (in.empty()) {
      in = a;
    } else if (out.empty()) {
      out = a;
    } else {
      throw lvt::Error("unexpected argument '" + a + "'\n" + quantize_usage);
    }
  }
  if (in.empty() || out.empty()) throw lvt::Error(std::string("need IN_DIR and OUT_DIR\n") + quantize_usage);
  if (in.size() > 5 && in.ends_with(".gguf"))
    throw lvt::Error(in + ": lvt quantize writes a bitsandbytes folder from a Hugging Face folder; a .gguf "
                     "model needs no such step: lvt train / eval / generate --model " + in +
                     " requantize it on load (--quant nf4|fp4|int8), or lvt merge --model " + in +
                     " writes it out as a Hugging Face folder");
  const auto t0 = std::chrono::steady_clock::now();
  const auto rep = lvt::io::bnb::quantize_folder(in, out, opt);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s: %d weights quantized to %s%s (block %d), %d tensors copied; %.1f MB -> %.1f MB "
              "in %.1f s\n",
              out.c_str(), rep.quantized, lvt::io::bnb::quant_type_name(opt.code),
              opt.double_quant ? "+DQ" : "", opt.block, rep.copied, rep.bytes_in / 1e6,
              rep.bytes_out / 1e6, s);
  return 0;
}
