// Test helper for tests/cli/test_gguf_peer.sh: what lvt reads from a GGUF file, for gguf-py to
// compare against. Prints JSON to stdout: every metadata key with its value type and value
// (arrays with their element type), and every tensor with its ggml type, ne and data offset;
// writes every tensor dequantized by lvt (ggml_dequantize) as float32 to FLOATS, one after the
// other in file order.
//   gguf_dump FILE.gguf FLOATS
#include <cstdio>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "lvt/io/gguf.hpp"

namespace {
nlohmann::json value_json(const lvt::io::GgufValue& v) {
  using T = lvt::io::GgufValueType;
  switch (v.type) {
    case T::string: return v.s;
    case T::boolean: return v.u != 0;
    case T::f32: case T::f64: return v.f;
    case T::array: {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& e : v.array) a.push_back(value_json(e));
      return {{"elem_type", lvt::io::gguf_value_type_name(v.elem_type)}, {"values", a}};
    }
    default: return v.is_signed() ? nlohmann::json(v.i) : nlohmann::json(v.u);
  }
}
}  // namespace

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::fprintf(stderr, "usage: gguf_dump FILE.gguf FLOATS\n");
    return 2;
  }
  const lvt::io::GgufFile f(argv[1]);
  nlohmann::json j = {{"version", f.header().version}, {"alignment", f.header().alignment}};
  nlohmann::json md = nlohmann::json::array();
  for (const auto& kv : f.metadata())
    md.push_back({{"key", kv.key}, {"type", lvt::io::gguf_value_type_name(kv.value.type)}, {"value", value_json(kv.value)}});
  j["metadata"] = md;
  std::ofstream out(argv[2], std::ios::binary);
  nlohmann::json ts = nlohmann::json::array();
  for (const auto& t : f.tensors()) {
    const auto v = f.to_float(t);
    out.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(float)));
    ts.push_back({{"name", t.name}, {"type", lvt::io::ggml_type_name(t.type)}, {"ne", t.ne}, {"offset", t.offset}});
  }
  j["tensors"] = ts;
  if (!out) throw lvt::Error(std::string(argv[2]) + ": write failed");
  std::printf("%s\n", j.dump().c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "gguf_dump: %s\n", e.what());
  return 1;
}
