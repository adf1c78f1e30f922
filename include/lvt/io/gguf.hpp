#pragma once
// GGUF (ggml's model file, versions 2 and 3): a memory-mapped reader that checks every bound,
// and a writer (GgufWriter: streamed tensor by tensor, atomic; gguf_serialize: in memory) that
// share one layout function.
//
// The format (ggml docs/gguf.md), all little-endian:
//   "GGUF" u32 version, u64 tensor_count, u64 metadata_kv_count,
//   kv*:     string key, u32 value_type, value
//   tensor*: string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset
//   padding to general.alignment (u32, default 32), then the data section.
// A string is u64 length + bytes (no NUL); an array is u32 element type + u64 count + values
// (arrays of strings and of arrays too). Tensor offsets are relative to the data section and
// multiples of the alignment. Version 1 (u32 counts) is rejected; version 3 differs from 2 only
// in allowing big-endian files, which lvt rejects.
//
// ggml dims are innermost first: ne[0] is the row length. A Hugging Face [out, in] matrix is
// stored with ne = {in, out}; GgufTensorInfo::shape() gives the reversed (PyTorch) order.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lvt/error.hpp"
#include "lvt/io/gguf_quant.hpp"
#include "lvt/io/safetensors.hpp"  // MappedFile, write_text_atomic

namespace lvt::io {

inline constexpr std::uint32_t gguf_magic = 0x46554747;  // "GGUF" read as little-endian u32
inline constexpr std::uint32_t gguf_default_alignment = 32;
inline constexpr int gguf_max_dims = 4;             // GGML_MAX_DIMS
inline constexpr std::size_t gguf_max_name_bytes = 64;  // tensor names, as the spec bounds them
inline constexpr int gguf_max_array_depth = 8;      // nested arrays: far above any real file
// Metadata values decoded in all (array elements included): real files hold about 1M (tokens,
// scores, types, merges); the cap bounds the reader's memory (~100 bytes a value) on bad input.
inline constexpr std::uint64_t gguf_max_metadata_values = 1u << 23;

enum class GgufValueType : std::uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8,
  array = 9, u64 = 10, i64 = 11, f64 = 12
};

inline const char* gguf_value_type_name(GgufValueType t) {
  static const char* names[] = {"uint8", "int8",  "uint16", "int16",  "uint32", "int32", "float32",
                                "bool",  "string", "array", "uint64", "int64",  "float64"};
  return std::uint32_t(t) <= 12 ? names[std::uint32_t(t)] : "?";
}

// One metadata value. Unsigned integers and bools are held in `u`, signed in `i`, floats in `f`
// (float32 widened exactly), strings in `s`, arrays in `array` with `elem_type`.
struct GgufValue {
  GgufValueType type = GgufValueType::u8;
  std::uint64_t u = 0;
  std::int64_t i = 0;
  double f = 0;
  std::string s;
  GgufValueType elem_type = GgufValueType::u8;
  std::vector<GgufValue> array;

  static GgufValue unsigned_of(GgufValueType t, std::uint64_t v) {
    GgufValue x;
    x.type = t;
    x.u = v;
    return x;
  }
  static GgufValue signed_of(GgufValueType t, std::int64_t v) {
    GgufValue x;
    x.type = t;
    x.i = v;
    return x;
  }
  static GgufValue float_of(GgufValueType t, double v) {
    GgufValue x;
    x.type = t;
    x.f = v;
    return x;
  }
  static GgufValue u32(std::uint32_t v) { return unsigned_of(GgufValueType::u32, v); }
  static GgufValue u64(std::uint64_t v) { return unsigned_of(GgufValueType::u64, v); }
  static GgufValue f32(float v) { return float_of(GgufValueType::f32, v); }
  static GgufValue boolean(bool v) { return unsigned_of(GgufValueType::boolean, v ? 1 : 0); }
  static GgufValue str(std::string v) {
    GgufValue x;
    x.type = GgufValueType::string;
    x.s = std::move(v);
    return x;
  }
  static GgufValue array_of(GgufValueType elem, std::vector<GgufValue> v) {
    GgufValue x;
    x.type = GgufValueType::array;
    x.elem_type = elem;
    x.array = std::move(v);
    return x;
  }

  bool is_unsigned() const {
    return type == GgufValueType::u8 || type == GgufValueType::u16 || type == GgufValueType::u32 ||
           type == GgufValueType::u64;
  }
  bool is_signed() const {
    return type == GgufValueType::i8 || type == GgufValueType::i16 || type == GgufValueType::i32 ||
           type == GgufValueType::i64;
  }
  bool is_float() const { return type == GgufValueType::f32 || type == GgufValueType::f64; }
  bool operator==(const GgufValue&) const = default;
};

struct GgufKv {
  std::string key;
  GgufValue value;
  std::uint64_t file_offset = 0;  // where the kv starts (error messages)
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<std::uint64_t> ne;  // ggml order: ne[0] innermost (row length)
  std::uint64_t offset = 0;       // relative to the data section
  std::uint64_t nbytes = 0;
  std::uint64_t info_offset = 0;  // where the tensor info starts in the file

  std::uint64_t numel() const {
    std::uint64_t n = 1;
    for (auto d : ne) n *= d;
    return n;
  }
  // PyTorch / Hugging Face order: ne reversed ([out, in] for a matrix).
  std::vector<std::int64_t> shape() const {
    return std::vector<std::int64_t>(ne.rbegin(), ne.rend());
  }
};

struct GgufHeader {
  std::uint32_t version = 3;
  std::uint32_t alignment = gguf_default_alignment;
  std::vector<GgufKv> metadata;  // file order
  std::vector<GgufTensorInfo> tensors;  // file order
  std::uint64_t data_offset = 0;  // where the data section starts in the file
  std::uint64_t data_bytes = 0;

  const GgufValue* find(std::string_view key) const {
    for (const auto& kv : metadata)
      if (kv.key == key) return &kv.value;
    return nullptr;
  }
  const GgufTensorInfo* find_tensor(std::string_view name) const {
    for (const auto& t : tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
};

namespace detail_gguf {

// A bounds-checked little-endian reader over the file image; every failure names the file, the
// thing being read, and the byte offset.
struct Cursor {
  std::span<const std::byte> file;
  const std::string& source;
  std::uint64_t pos = 0;
  std::uint64_t values = 0;  // decoded so far, against gguf_max_metadata_values

  [[noreturn]] void fail(const std::string& ctx, const std::string& what, std::uint64_t at) const {
    throw Error(source + ": " + ctx + ": " + what + " (at byte " + std::to_string(at) + ")");
  }
  std::uint64_t left() const { return file.size() - pos; }
  void need(std::uint64_t n, const std::string& ctx, const char* what) const {
    if (n > left())
      fail(ctx, std::string("truncated: ") + what + " needs " + std::to_string(n) +
                    " bytes, the file has " + std::to_string(left()) + " left",
           pos);
  }
  std::uint64_t uint(int bytes, const std::string& ctx, const char* what) {
    need(std::uint64_t(bytes), ctx, what);
    std::uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i)
      v = (v << 8) | std::uint64_t(std::to_integer<unsigned>(file[pos + std::uint64_t(i)]));
    pos += std::uint64_t(bytes);
    return v;
  }
  std::uint32_t u32(const std::string& ctx, const char* what) {
    return std::uint32_t(uint(4, ctx, what));
  }
  std::uint64_t u64(const std::string& ctx, const char* what) { return uint(8, ctx, what); }
  std::string string(const std::string& ctx, const char* what) {
    const std::uint64_t at = pos;
    const std::uint64_t n = u64(ctx, what);
    if (n > left())
      fail(ctx, std::string(what) + " length " + std::to_string(n) + " runs past the end of the file (" +
                    std::to_string(left()) + " bytes left)",
           at);
    std::string s(reinterpret_cast<const char*>(file.data() + pos), std::size_t(n));
    pos += n;
    return s;
  }
};

// The fewest bytes one value of type t occupies: bounds an array's count by the bytes left.
inline std::uint64_t min_value_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::u8: case GgufValueType::i8: case GgufValueType::boolean: return 1;
    case GgufValueType::u16: case GgufValueType::i16: return 2;
    case GgufValueType::u32: case GgufValueType::i32: case GgufValueType::f32: return 4;
    case GgufValueType::array: return 12;
    default: return 8;  // u64 i64 f64, and a string's length
  }
}

inline GgufValue read_value(Cursor& c, GgufValueType t, const std::string& ctx, int depth) {
  GgufValue v;
  v.type = t;
  const std::uint64_t at = c.pos;
  if (++c.values > gguf_max_metadata_values)
    c.fail(ctx, "the metadata holds more than " + std::to_string(gguf_max_metadata_values) +
                    " values (lvt's limit)",
           at);
  switch (t) {
    case GgufValueType::u8: v.u = c.uint(1, ctx, "uint8 value"); break;
    case GgufValueType::u16: v.u = c.uint(2, ctx, "uint16 value"); break;
    case GgufValueType::u32: v.u = c.uint(4, ctx, "uint32 value"); break;
    case GgufValueType::u64: v.u = c.uint(8, ctx, "uint64 value"); break;
    case GgufValueType::i8: v.i = std::int8_t(c.uint(1, ctx, "int8 value")); break;
    case GgufValueType::i16: v.i = std::int16_t(c.uint(2, ctx, "int16 value")); break;
    case GgufValueType::i32: v.i = std::int32_t(c.uint(4, ctx, "int32 value")); break;
    case GgufValueType::i64: v.i = std::int64_t(c.uint(8, ctx, "int64 value")); break;
    case GgufValueType::f32:
      v.f = std::bit_cast<float>(std::uint32_t(c.uint(4, ctx, "float32 value")));
      break;
    case GgufValueType::f64: v.f = std::bit_cast<double>(c.uint(8, ctx, "float64 value")); break;
    case GgufValueType::boolean:
      v.u = c.uint(1, ctx, "bool value");
      if (v.u > 1) c.fail(ctx, "bool value " + std::to_string(v.u) + " is neither 0 nor 1", at);
      break;
    case GgufValueType::string: v.s = c.string(ctx, "string"); break;
    case GgufValueType::array: {
      if (depth >= gguf_max_array_depth)
        c.fail(ctx, "arrays nested deeper than " + std::to_string(gguf_max_array_depth), at);
      const std::uint32_t et = c.u32(ctx, "array element type");
      if (et > 12) c.fail(ctx, "unknown array element type " + std::to_string(et), at);
      v.elem_type = GgufValueType(et);
      const std::uint64_t n = c.u64(ctx, "array length");
      if (n > c.left() / min_value_bytes(v.elem_type))
        c.fail(ctx, "array of " + std::to_string(n) + " " + gguf_value_type_name(v.elem_type) +
                        " values cannot fit in the " + std::to_string(c.left()) +
                        " bytes left in the file",
               at);
      v.array.reserve(std::size_t(n));
      for (std::uint64_t k = 0; k < n; ++k)
        v.array.push_back(read_value(c, v.elem_type, ctx, depth + 1));
      break;
    }
  }
  return v;
}

}  // namespace detail_gguf

// Validates a whole GGUF file image and returns its header. `source` names the file in every
// error. A pure function of the bytes: the fuzzer calls it directly.
inline GgufHeader parse_gguf(std::span<const std::byte> file, const std::string& source) {
  using namespace detail_gguf;
  Cursor c{file, source};
  GgufHeader h;
  const std::string hdr = "header";
  if (file.size() < 4 || c.u32(hdr, "magic") != gguf_magic)
    throw Error(source + ": not a GGUF file (the first 4 bytes are not \"GGUF\")");
  const std::uint64_t version_at = c.pos;
  h.version = c.u32(hdr, "version");
  if (h.version == 0x02000000u || h.version == 0x03000000u)
    c.fail(hdr, "big-endian GGUF is not supported", version_at);
  if (h.version == 1)
    c.fail(hdr, "GGUF version 1 is not supported (it predates 64-bit counts: reconvert the model)",
           version_at);
  if (h.version != 2 && h.version != 3)
    c.fail(hdr, "unknown GGUF version " + std::to_string(h.version) + " (lvt reads 2 and 3)",
           version_at);
  const std::uint64_t counts_at = c.pos;
  const std::uint64_t n_tensors = c.u64(hdr, "tensor count");
  const std::uint64_t n_kv = c.u64(hdr, "metadata count");
  // A kv takes at least 8 + 4 + 1 bytes, a tensor info 8 + 4 + 4 + 8.
  if (n_kv > c.left() / 13)
    c.fail(hdr, "metadata count " + std::to_string(n_kv) + " cannot fit in the file (" +
                    std::to_string(file.size()) + " bytes)",
           counts_at + 8);
  if (n_tensors > c.left() / 24)
    c.fail(hdr, "tensor count " + std::to_string(n_tensors) + " cannot fit in the file (" +
                    std::to_string(file.size()) + " bytes)",
           counts_at);

  std::set<std::string> keys;
  for (std::uint64_t k = 0; k < n_kv; ++k) {
    GgufKv kv;
    kv.file_offset = c.pos;
    kv.key = c.string("metadata entry " + std::to_string(k), "key");
    const std::string ctx = "key '" + kv.key + "'";
    if (!keys.insert(kv.key).second) c.fail(ctx, "appears twice in the metadata", kv.file_offset);
    const std::uint64_t type_at = c.pos;
    const std::uint32_t t = c.u32(ctx, "value type");
    if (t > 12) c.fail(ctx, "unknown value type " + std::to_string(t), type_at);
    kv.value = read_value(c, GgufValueType(t), ctx, 0);
    h.metadata.push_back(std::move(kv));
  }
  for (const auto& kv : h.metadata) {
    if (kv.key != "general.alignment") continue;
    const std::string ctx = "key 'general.alignment'";
    if (kv.value.type != GgufValueType::u32)
      c.fail(ctx, std::string("expected a uint32, got ") + gguf_value_type_name(kv.value.type),
             kv.file_offset);
    if (kv.value.u == 0 || (kv.value.u & (kv.value.u - 1)) != 0)
      c.fail(ctx, std::to_string(kv.value.u) + " is not a power of two", kv.file_offset);
    h.alignment = std::uint32_t(kv.value.u);
  }

  std::unordered_map<std::string, std::size_t> names;
  for (std::uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    t.info_offset = c.pos;
    t.name = c.string("tensor info " + std::to_string(k), "tensor name");
    const std::string ctx = "tensor '" + t.name + "'";
    if (t.name.size() > gguf_max_name_bytes)
      c.fail(ctx, "name is " + std::to_string(t.name.size()) + " bytes, longer than GGUF's " +
                      std::to_string(gguf_max_name_bytes),
             t.info_offset);
    if (!names.emplace(t.name, k).second) c.fail(ctx, "appears twice", t.info_offset);
    const std::uint64_t dims_at = c.pos;
    const std::uint32_t n_dims = c.u32(ctx, "dimension count");
    if (n_dims == 0 || n_dims > std::uint32_t(gguf_max_dims))
      c.fail(ctx, std::to_string(n_dims) + " dimensions (ggml allows 1 to " +
                      std::to_string(gguf_max_dims) + ")",
             dims_at);
    std::uint64_t numel = 1;
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      const std::uint64_t at = c.pos;
      const std::uint64_t ne = c.u64(ctx, "dimension");
      if (ne > std::uint64_t(INT64_MAX) || (ne != 0 && numel > std::uint64_t(INT64_MAX) / ne))
        c.fail(ctx, "dimensions overflow int64 (ne[" + std::to_string(d) + "] = " +
                        std::to_string(ne) + ")",
               at);
      numel *= ne;
      t.ne.push_back(ne);
    }
    const std::uint64_t type_at = c.pos;
    const std::uint32_t type = c.u32(ctx, "ggml type");
    const GgmlTypeInfo* ti = ggml_type_info(type);
    if (!ti) c.fail(ctx, "unknown ggml type " + std::to_string(type), type_at);
    t.type = ti->type;
    if (t.ne[0] % std::uint64_t(ti->block_elems) != 0)
      c.fail(ctx, "row length ne[0] = " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                      ti->name + " block size " + std::to_string(ti->block_elems),
             dims_at);
    // bytes = numel / block_elems * block_bytes; block_bytes <= 292 so check before multiplying
    const std::uint64_t blocks = numel / std::uint64_t(ti->block_elems);
    if (blocks > std::uint64_t(INT64_MAX) / std::uint64_t(ti->block_bytes))
      c.fail(ctx, "byte size overflows int64", dims_at);
    t.nbytes = blocks * std::uint64_t(ti->block_bytes);
    const std::uint64_t off_at = c.pos;
    t.offset = c.u64(ctx, "data offset");
    if (t.offset % h.alignment != 0)
      c.fail(ctx, "data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                      std::to_string(h.alignment),
             off_at);
    h.tensors.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const std::uint64_t end_of_infos = c.pos;
  h.data_offset = end_of_infos + (h.alignment - end_of_infos % h.alignment) % h.alignment;
  if (h.data_offset > file.size()) {
    if (!h.tensors.empty())
      c.fail("data section", "starts at byte " + std::to_string(h.data_offset) +
                                 ", past the end of the file (" + std::to_string(file.size()) +
                                 " bytes): truncated file?",
             end_of_infos);
    h.data_offset = file.size();  // no tensors: writers may omit the padding
  }
  h.data_bytes = file.size() - h.data_offset;
  for (const auto& t : h.tensors)
    if (t.offset > h.data_bytes || t.nbytes > h.data_bytes - t.offset)
      c.fail("tensor '" + t.name + "'",
             "data [" + std::to_string(t.offset) + ", +" + std::to_string(t.nbytes) +
                 " bytes) runs past the end of the data section (" + std::to_string(h.data_bytes) +
                 " bytes): truncated file?",
             t.info_offset);
  // No two tensors may share bytes.
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : h.tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->nbytes < b->nbytes;
  });
  for (std::size_t k = 1; k < by_offset.size(); ++k) {
    const GgufTensorInfo* a = by_offset[k - 1];
    const GgufTensorInfo* b = by_offset[k];
    if (a->nbytes > 0 && b->nbytes > 0 && a->offset + a->nbytes > b->offset)
      c.fail("tensor '" + b->name + "'",
             "data at offset " + std::to_string(b->offset) + " overlaps tensor '" + a->name +
                 "' [" + std::to_string(a->offset) + ", " + std::to_string(a->offset + a->nbytes) +
                 ")",
             b->info_offset);
  }
  return h;
}

// A GGUF file, memory-mapped read-only and validated.
class GgufFile {
 public:
  explicit GgufFile(const std::filesystem::path& path)
      : path_(path), map_(path), header_(parse_gguf(map_.bytes(), path.string())) {
    for (std::size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].name, i);
  }

  const std::filesystem::path& path() const { return path_; }
  const GgufHeader& header() const { return header_; }
  const std::vector<GgufTensorInfo>& tensors() const { return header_.tensors; }
  const std::vector<GgufKv>& metadata() const { return header_.metadata; }
  std::span<const std::byte> image() const { return map_.bytes(); }  // the whole file
  const GgufValue* find_value(std::string_view key) const { return header_.find(key); }
  const GgufTensorInfo* find(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &header_.tensors[it->second];
  }

  // Zero-copy view of a tensor's bytes (aligned to the file's alignment within the mapping).
  std::span<const std::byte> bytes(const GgufTensorInfo& t) const {
    return map_.bytes().subspan(header_.data_offset + t.offset, t.nbytes);
  }

  // The tensor dequantized to fp32 into `out` (numel elements, ggml order: row after row).
  void to_float(const GgufTensorInfo& t, std::span<float> out) const {
    const std::string what = path_.string() + ": tensor '" + t.name + "'";
    if (out.size() != t.numel())
      throw Error(what + ": output holds " + std::to_string(out.size()) + " floats, tensor has " +
                  std::to_string(t.numel()));
    ggml_dequantize(t.type, bytes(t).data(), out.size(), out.data(), what);
  }
  std::vector<float> to_float(const GgufTensorInfo& t) const {
    std::vector<float> v(std::size_t(t.numel()));
    to_float(t, v);
    return v;
  }

 private:
  std::filesystem::path path_;
  MappedFile map_;
  GgufHeader header_;
  std::unordered_map<std::string, std::size_t> index_;
};

// ---- serializer ---------------------------------------------------------------------------

struct GgufTensorData {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<std::uint64_t> ne;  // ggml order
  std::vector<std::byte> bytes;
};

namespace detail_gguf {

inline void put(std::vector<std::byte>& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(std::byte((v >> (8 * i)) & 0xff));
}
inline void put_string(std::vector<std::byte>& out, const std::string& s) {
  put(out, s.size(), 8);
  for (char ch : s) out.push_back(std::byte(static_cast<unsigned char>(ch)));
}
inline void put_value(std::vector<std::byte>& out, const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::u8: case GgufValueType::boolean: put(out, v.u, 1); break;
    case GgufValueType::u16: put(out, v.u, 2); break;
    case GgufValueType::u32: put(out, v.u, 4); break;
    case GgufValueType::u64: put(out, v.u, 8); break;
    case GgufValueType::i8: put(out, std::uint64_t(v.i), 1); break;
    case GgufValueType::i16: put(out, std::uint64_t(v.i), 2); break;
    case GgufValueType::i32: put(out, std::uint64_t(v.i), 4); break;
    case GgufValueType::i64: put(out, std::uint64_t(v.i), 8); break;
    case GgufValueType::f32: put(out, std::bit_cast<std::uint32_t>(float(v.f)), 4); break;
    case GgufValueType::f64: put(out, std::bit_cast<std::uint64_t>(v.f), 8); break;
    case GgufValueType::string: put_string(out, v.s); break;
    case GgufValueType::array:
      put(out, std::uint32_t(v.elem_type), 4);
      put(out, v.array.size(), 8);
      for (const auto& e : v.array) put_value(out, e);
      break;
  }
}

}  // namespace detail_gguf

// What a tensor info declares: the data's size follows from ne and type.
struct GgufTensorDecl {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<std::uint64_t> ne;  // ggml order

  std::uint64_t numel() const {
    std::uint64_t n = 1;
    for (auto d : ne) n *= d;
    return n;
  }
  std::uint64_t nbytes() const { return ggml_row_bytes(type, numel()); }
};

// The bytes before the data section (header, metadata in the given order, tensor infos, padding)
// and where each tensor's data goes: each at the next multiple of the alignment
// (general.alignment when the metadata holds it, else 32), padded after the last one too, as
// gguf-py writes it. One layout serves the in-memory serializer and the streaming writer.
struct GgufLayout {
  std::vector<std::byte> head;
  std::vector<std::uint64_t> offsets;  // relative to the data section
  std::uint64_t data_bytes = 0;        // padding after the last tensor included
  std::uint64_t alignment = gguf_default_alignment;
};

inline GgufLayout gguf_layout(const std::vector<std::pair<std::string, GgufValue>>& metadata,
                              const std::vector<GgufTensorDecl>& tensors, std::uint32_t version = 3,
                              const std::string& source = "gguf writer") {
  using namespace detail_gguf;
  GgufLayout l;
  std::set<std::string> keys, names;
  for (const auto& [k, v] : metadata) {
    if (!keys.insert(k).second) throw Error(source + ": metadata key '" + k + "' given twice");
    if (k == "general.alignment") {
      if (v.type != GgufValueType::u32 || v.u == 0 || (v.u & (v.u - 1)) != 0)
        throw Error(source + ": general.alignment must be a uint32 power of two");
      l.alignment = v.u;
    }
  }
  std::vector<std::byte>& out = l.head;
  put(out, gguf_magic, 4);
  put(out, version, 4);
  put(out, tensors.size(), 8);
  put(out, metadata.size(), 8);
  for (const auto& [k, v] : metadata) {
    put_string(out, k);
    put(out, std::uint32_t(v.type), 4);
    put_value(out, v);
  }
  std::uint64_t at = 0;
  for (const auto& t : tensors) {
    const std::string what = source + ": tensor '" + t.name + "'";
    if (!names.insert(t.name).second) throw Error(what + ": declared twice");
    if (t.name.size() > gguf_max_name_bytes)
      throw Error(what + ": name longer than GGUF's " + std::to_string(gguf_max_name_bytes) + " bytes");
    if (t.ne.empty() || t.ne.size() > std::size_t(gguf_max_dims))
      throw Error(what + ": " + std::to_string(t.ne.size()) + " dimensions (ggml allows 1 to 4)");
    const GgmlTypeInfo& ti = ggml_type_info(t.type);
    if (t.ne[0] % std::uint64_t(ti.block_elems) != 0)
      throw Error(what + ": row length " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                  ti.name + " block size " + std::to_string(ti.block_elems));
    put_string(out, t.name);
    put(out, t.ne.size(), 4);
    for (auto d : t.ne) put(out, d, 8);
    put(out, std::uint32_t(t.type), 4);
    put(out, at, 8);
    l.offsets.push_back(at);
    at += t.nbytes();
    at += (l.alignment - at % l.alignment) % l.alignment;
  }
  out.resize(out.size() + (l.alignment - out.size() % l.alignment) % l.alignment);
  l.data_bytes = at;
  return l;
}

// A complete GGUF image in memory (tests, small files). Tensor bytes must match ne and type.
inline std::vector<std::byte> gguf_serialize(const std::vector<std::pair<std::string, GgufValue>>& metadata,
                                             const std::vector<GgufTensorData>& tensors,
                                             std::uint32_t version = 3) {
  std::vector<GgufTensorDecl> decls;
  for (const auto& t : tensors) {
    decls.push_back({t.name, t.type, t.ne});
    if (decls.back().nbytes() != t.bytes.size())
      throw Error("gguf_serialize: tensor '" + t.name + "': " + std::to_string(t.bytes.size()) +
                  " bytes, its dims and type " + ggml_type_name(t.type) + " need " +
                  std::to_string(decls.back().nbytes()));
  }
  const GgufLayout l = gguf_layout(metadata, decls, version, "gguf_serialize");
  std::vector<std::byte> out = l.head;
  const std::size_t data = out.size();
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    out.resize(data + l.offsets[i]);
    out.insert(out.end(), tensors[i].bytes.begin(), tensors[i].bytes.end());
  }
  out.resize(data + l.data_bytes);
  return out;
}

// Streams a GGUF file of any size: the header, metadata and tensor infos first (every size
// follows from ne and type), then each tensor's data in declared order at its aligned offset,
// one at a time, so memory holds one tensor at most. Data goes to PATH.tmp.PID; finish()
// checks every tensor was written, fsyncs and renames it onto PATH. Without finish() (an
// exception on the way) the temporary file is removed: a failure leaves no partial PATH.
class GgufWriter {
 public:
  GgufWriter(const std::filesystem::path& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
             std::vector<GgufTensorDecl> tensors, std::uint32_t version = 3)
      : path_(path), tensors_(std::move(tensors)) {
    layout_ = gguf_layout(metadata, tensors_, version, path_.string());
    tmp_ = path_;
    tmp_ += ".tmp." + std::to_string(::getpid());
    out_.open(tmp_, std::ios::binary | std::ios::trunc);
    if (!out_) throw Error(path_.string() + ": cannot create the file (" + tmp_.string() + " failed: directory missing or not writable?)");
    put(layout_.head.data(), layout_.head.size());
    data_start_ = layout_.head.size();
    layout_.head = {};
  }
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;
  ~GgufWriter() {
    if (!done_) {
      out_.close();
      std::error_code ec;
      std::filesystem::remove(tmp_, ec);
    }
  }

  const std::vector<GgufTensorDecl>& tensors() const { return tensors_; }
  const GgufTensorDecl* next() const { return next_ < tensors_.size() ? &tensors_[next_] : nullptr; }
  std::uint64_t file_bytes() const { return data_start_ + layout_.data_bytes; }

  // The next tensor's data, already in its type.
  void write(std::string_view name, std::span<const std::byte> bytes) {
    const GgufTensorDecl& t = begin(name);
    if (bytes.size() != t.nbytes())
      throw Error(path_.string() + ": tensor '" + t.name + "': got " + std::to_string(bytes.size()) +
                  " bytes, " + ggml_type_name(t.type) + " of its shape needs " + std::to_string(t.nbytes()));
    put(bytes.data(), bytes.size());
    end();
  }

  // The next tensor from float values (ggml order: row after row), converted to its type
  // (ggml_quantize) a few rows at a time, never a full copy.
  void write_float(std::string_view name, std::span<const float> values) {
    const GgufTensorDecl& t = begin(name);
    if (values.size() != t.numel())
      throw Error(path_.string() + ": tensor '" + t.name + "': got " + std::to_string(values.size()) +
                  " values, its shape has " + std::to_string(t.numel()));
    const std::size_t row = std::size_t(t.ne[0]);
    const std::size_t rows_per_chunk = row ? std::max<std::size_t>(1, (std::size_t(1) << 16) / row) : 1;
    std::vector<std::byte> buf;
    for (std::size_t i = 0; i < values.size(); i += rows_per_chunk * row) {
      const std::size_t n = std::min(rows_per_chunk * row, values.size() - i);
      buf.resize(std::size_t(ggml_row_bytes(t.type, n)));
      ggml_quantize(t.type, values.data() + i, n, buf.data());
      put(buf.data(), buf.size());
    }
    end();
  }

  void finish() {
    if (next_ != tensors_.size())
      throw Error(path_.string() + ": tensor '" + tensors_[next_].name + "' declared but never written");
    out_.flush();
    out_.close();
    if (!out_) throw Error(tmp_.string() + ": write failed (disk full?)");
    SafetensorsWriter::sync_file(tmp_);
    std::error_code ec;
    std::filesystem::rename(tmp_, path_, ec);
    if (ec) throw Error(path_.string() + ": cannot rename " + tmp_.string() + " onto it (" + ec.message() + ")");
    done_ = true;
  }

 private:
  void put(const std::byte* p, std::size_t n) {
    out_.write(reinterpret_cast<const char*>(p), std::streamsize(n));
    if (!out_) throw Error(tmp_.string() + ": write failed (disk full?)");
    pos_ += n;
  }
  void pad_to(std::uint64_t at) {
    static const std::byte zeros[256] = {};
    while (pos_ < at) put(zeros, std::size_t(std::min<std::uint64_t>(sizeof zeros, at - pos_)));
  }
  const GgufTensorDecl& begin(std::string_view name) {
    if (next_ >= tensors_.size())
      throw Error(path_.string() + ": tensor '" + std::string(name) + "' written after all declared tensors");
    const GgufTensorDecl& t = tensors_[next_];
    if (t.name != name)
      throw Error(path_.string() + ": tensor '" + std::string(name) + "' written out of order (next declared is '" +
                  t.name + "')");
    pad_to(data_start_ + layout_.offsets[next_]);
    return t;
  }
  void end() {
    ++next_;
    if (next_ == tensors_.size()) pad_to(data_start_ + layout_.data_bytes);
  }

  std::filesystem::path path_, tmp_;
  std::vector<GgufTensorDecl> tensors_;
  GgufLayout layout_;
  std::ofstream out_;
  std::uint64_t pos_ = 0, data_start_ = 0;
  std::size_t next_ = 0;
  bool done_ = false;
};

inline void write_gguf(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, GgufValue>>& metadata,
                       const std::vector<GgufTensorData>& tensors, std::uint32_t version = 3) {
  std::vector<GgufTensorDecl> decls;
  for (const auto& t : tensors) decls.push_back({t.name, t.type, t.ne});
  GgufWriter w(path, metadata, std::move(decls), version);
  for (const auto& t : tensors) w.write(t.name, t.bytes);
  w.finish();
}

}  // namespace lvt::io
