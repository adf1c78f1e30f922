#pragma once
// safetensors: a memory-mapped reader with zero-copy tensor views, an atomic streaming writer,
// and sharded checkpoints (model.safetensors.index.json).
//
// The format (huggingface/safetensors): 8 bytes little-endian N, then N bytes of UTF-8 JSON
// {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"k": "v"}}, padded with spaces, then the data section. Offsets are relative
// to the data section; the tensors, sorted by offset, must tile it exactly: no gap, no overlap,
// the last one ending at the end of the file. The reader checks every one of these rules and
// names the file and the tensor when one fails; nothing is read outside the file.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "lvt/error.hpp"
#include "lvt/io/dtype.hpp"

namespace lvt::io {

// The reference implementation's limit on the JSON header (100 MB).
inline constexpr std::uint64_t safetensors_max_header_bytes = 100'000'000;

struct TensorInfo {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  // byte offsets relative to the data section
  std::uint64_t end = 0;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  std::uint64_t nbytes() const { return end - begin; }
};

inline std::string shape_str(std::span<const std::int64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  s += "]";
  return s;
}

// The validated header of a safetensors file: tensors sorted by offset, metadata, and where
// the data section starts (8 + N).
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  std::uint64_t data_offset = 0;
};

namespace detail_st {

[[noreturn]] inline void fail(const std::string& source, const std::string& what) {
  throw Error(source + ": " + what);
}
[[noreturn]] inline void fail_tensor(const std::string& source, const std::string& name,
                                     const std::string& what) {
  throw Error(source + ": tensor '" + name + "': " + what);
}

inline std::uint64_t read_u64_le(const std::byte* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | std::uint64_t(std::to_integer<unsigned>(p[i]));
  return v;
}

inline std::uint64_t checked_offset(const nlohmann::json& v, const std::string& source,
                                    const std::string& name, const char* field) {
  if (!v.is_number_unsigned())
    fail_tensor(source, name, std::string(field) + ": expected a non-negative integer, got " +
                                  v.dump());
  return v.get<std::uint64_t>();
}

}  // namespace detail_st

// Validates a whole file image (header and data section) held in `file`. `source` names the
// file in errors. Pure function of the bytes: the fuzzer calls it directly.
inline SafetensorsHeader parse_safetensors(std::span<const std::byte> file,
                                           const std::string& source) {
  using namespace detail_st;
  if (file.size() < 8)
    fail(source, "truncated: " + std::to_string(file.size()) +
                     " bytes, shorter than the 8-byte header length");
  const std::uint64_t n = read_u64_le(file.data());
  if (n > safetensors_max_header_bytes)
    fail(source, "header length " + std::to_string(n) + " exceeds the limit of " +
                     std::to_string(safetensors_max_header_bytes) + " bytes");
  if (n > file.size() - 8)
    fail(source, "header length " + std::to_string(n) + " runs beyond the end of the file (" +
                     std::to_string(file.size()) + " bytes): truncated file?");
  if (n < 2 || std::to_integer<char>(file[8]) != '{')
    fail(source, "header is not JSON: it must start with '{'");

  const char* text = reinterpret_cast<const char*>(file.data() + 8);
  // Duplicate tensor names would be silently merged by the JSON parser: catch them on the way.
  std::set<std::string> seen_keys;
  std::string duplicate;
  auto on_event = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    if (ev == nlohmann::json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!seen_keys.insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  nlohmann::json j = nlohmann::json::parse(text, text + n, on_event, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(source, "header is not JSON (parse error in the first " +
                                         std::to_string(n) + " bytes after the length)");
  if (!j.is_object()) fail(source, "header is not a JSON object");
  if (!duplicate.empty()) fail_tensor(source, duplicate, "appears twice in the header");

  SafetensorsHeader h;
  h.data_offset = 8 + n;
  const std::uint64_t data_bytes = file.size() - h.data_offset;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& e = it.value();
    if (name == "__metadata__") {
      if (!e.is_object()) fail(source, "__metadata__: expected an object of strings");
      for (auto m = e.begin(); m != e.end(); ++m) {
        if (!m.value().is_string())
          fail(source, "__metadata__['" + m.key() + "']: expected a string, got " +
                           std::string(m.value().type_name()));
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!e.is_object()) fail_tensor(source, name, "expected an object {dtype, shape, data_offsets}");
    TensorInfo t;
    t.name = name;
    auto d = e.find("dtype");
    if (d == e.end() || !d->is_string()) fail_tensor(source, name, "dtype: missing or not a string");
    if (!st_dtype_from_name(d->get_ref<const std::string&>(), t.dtype))
      fail_tensor(source, name, "unknown dtype '" + d->get<std::string>() + "'");
    auto s = e.find("shape");
    if (s == e.end() || !s->is_array()) fail_tensor(source, name, "shape: missing or not an array");
    std::uint64_t numel = 1;
    for (const auto& dim : *s) {
      if (!dim.is_number_unsigned())
        fail_tensor(source, name, "shape: expected non-negative integers, got " + s->dump());
      const std::uint64_t v = dim.get<std::uint64_t>();
      if (v > std::uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, v, &numel))
        fail_tensor(source, name, "shape " + s->dump() + " overflows");
      t.shape.push_back(std::int64_t(v));
    }
    auto o = e.find("data_offsets");
    if (o == e.end() || !o->is_array() || o->size() != 2)
      fail_tensor(source, name, "data_offsets: expected [begin, end]");
    t.begin = checked_offset((*o)[0], source, name, "data_offsets[0]");
    t.end = checked_offset((*o)[1], source, name, "data_offsets[1]");
    if (t.end < t.begin)
      fail_tensor(source, name, "data_offsets [" + std::to_string(t.begin) + ", " +
                                    std::to_string(t.end) + "]: end before begin");
    std::uint64_t expect = 0;
    if (__builtin_mul_overflow(numel, std::uint64_t(st_dtype_bytes(t.dtype)), &expect))
      fail_tensor(source, name, "shape " + s->dump() + " overflows");
    if (t.end - t.begin != expect)
      fail_tensor(source, name, "shape " + shape_str(t.shape) + " x " + st_dtype_name(t.dtype) +
                                    " needs " + std::to_string(expect) +
                                    " bytes but data_offsets span " +
                                    std::to_string(t.end - t.begin));
    if (t.end > data_bytes)
      fail_tensor(source, name, "data_offsets [" + std::to_string(t.begin) + ", " +
                                    std::to_string(t.end) + "] run beyond the end of the data "
                                    "section (" + std::to_string(data_bytes) +
                                    " bytes): truncated file?");
    h.tensors.push_back(std::move(t));
  }
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // Tiling: each tensor starts where the previous ended; the last ends at the end of the file.
  std::uint64_t at = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : h.tensors) {
    if (t.begin < at)
      fail_tensor(source, t.name, "data_offsets [" + std::to_string(t.begin) + ", " +
                                      std::to_string(t.end) + "] overlap tensor '" + prev->name +
                                      "'");
    if (t.begin > at)
      fail_tensor(source, t.name, "gap of " + std::to_string(t.begin - at) +
                                      " unused bytes before this tensor (data_offsets must be "
                                      "contiguous)");
    at = t.end;
    prev = &t;
  }
  if (at != data_bytes)
    fail(source, std::to_string(data_bytes - at) +
                     " bytes after the last tensor are not covered by any tensor");
  return h;
}

// A read-only memory map of a whole file. Move-only.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::filesystem::path& path) {
    const std::string src = path.string();
    const int fd = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(src + ": cannot open (" + std::strerror(errno) + ")");
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw Error(src + ": not a regular file");
    }
    size_ = std::size_t(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        throw Error(src + ": mmap failed (" + std::strerror(errno) + ")");
      }
      data_ = static_cast<const std::byte*>(p);
    }
    ::close(fd);
  }
  MappedFile(MappedFile&& o) noexcept : data_(o.data_), size_(o.size_) {
    o.data_ = nullptr;
    o.size_ = 0;
  }
  MappedFile& operator=(MappedFile&& o) noexcept {
    if (this != &o) {
      unmap();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() { unmap(); }

  std::span<const std::byte> bytes() const { return {data_, size_}; }

 private:
  void unmap() {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
  }
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// One safetensors file, memory-mapped and validated on open. Tensor bytes are views into the map.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path)
      : path_(path), map_(path), header_(parse_safetensors(map_.bytes(), path.string())) {
    for (std::size_t i = 0; i < header_.tensors.size(); ++i)
      index_.emplace(header_.tensors[i].name, i);
  }

  const std::filesystem::path& path() const { return path_; }
  // Sorted by offset (file order).
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }

  const TensorInfo* find(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &header_.tensors[it->second];
  }
  const TensorInfo& at(std::string_view name) const {
    if (const TensorInfo* t = find(name)) return *t;
    throw Error(path_.string() + ": tensor '" + std::string(name) + "' not found");
  }

  // Zero-copy view of a tensor's bytes (no alignment guarantee: use memcpy or convert).
  std::span<const std::byte> bytes(const TensorInfo& t) const {
    return map_.bytes().subspan(header_.data_offset + t.begin, t.nbytes());
  }

  // Tensor converted to float (F32/F16/BF16/F64), into `out` of numel() elements.
  void to_float(const TensorInfo& t, std::span<float> out) const {
    const std::string what = path_.string() + ": tensor '" + t.name + "'";
    if (std::int64_t(out.size()) != t.numel())
      throw Error(what + ": output holds " + std::to_string(out.size()) + " floats, tensor has " +
                  std::to_string(t.numel()));
    convert_to_float(t.dtype, bytes(t).data(), out.size(), out.data(), what);
  }
  std::vector<float> to_float(const TensorInfo& t) const {
    std::vector<float> v(std::size_t(t.numel()));
    to_float(t, v);
    return v;
  }

 private:
  std::filesystem::path path_;
  MappedFile map_;
  SafetensorsHeader header_;
  std::unordered_map<std::string, std::size_t> index_;
};

// ---- writer -----------------------------------------------------------------------------------
struct TensorSpec {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<std::int64_t> shape;

  std::uint64_t nbytes() const {
    std::uint64_t n = std::uint64_t(st_dtype_bytes(dtype));
    for (auto d : shape) n *= std::uint64_t(d);
    return n;
  }
};

// Writes one safetensors file: all tensors are declared up front (the header holds every
// offset), then each tensor's bytes are written in the declared order, one at a time, so peak
// memory is one tensor. Data goes to PATH.tmp.PID; finish() flushes and renames it onto PATH,
// so a reader never sees a half-written file. Without finish() the temporary file is removed.
class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::filesystem::path& path, std::vector<TensorSpec> specs,
                    const std::map<std::string, std::string>& metadata = {})
      : path_(path), specs_(std::move(specs)) {
    const std::string src = path_.string();
    nlohmann::json h = nlohmann::json::object();
    if (!metadata.empty()) h["__metadata__"] = metadata;
    std::uint64_t at = 0;
    std::set<std::string> names;
    for (const auto& s : specs_) {
      if (s.name.empty() || s.name == "__metadata__")
        throw Error(src + ": tensor name '" + s.name + "' is reserved or empty");
      if (!names.insert(s.name).second)
        throw Error(src + ": tensor '" + s.name + "' declared twice");
      for (auto d : s.shape)
        if (d < 0) throw Error(src + ": tensor '" + s.name + "': negative dimension in shape " +
                               shape_str(s.shape));
      const std::uint64_t b = s.nbytes();
      h[s.name] = {{"dtype", st_dtype_name(s.dtype)},
                   {"shape", s.shape},
                   {"data_offsets", {at, at + b}}};
      at += b;
    }
    std::string text = h.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // data section starts 8-byte aligned
    tmp_ = path_;
    tmp_ += ".tmp." + std::to_string(::getpid());
    out_.open(tmp_, std::ios::binary | std::ios::trunc);
    if (!out_) throw Error(tmp_.string() + ": cannot create (for " + src + ")");
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(std::uint64_t(text.size()) >> (8 * i));
    out_.write(reinterpret_cast<const char*>(len), 8);
    out_.write(text.data(), std::streamsize(text.size()));
  }
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;
  ~SafetensorsWriter() {
    if (!done_) {
      out_.close();
      std::error_code ec;
      std::filesystem::remove(tmp_, ec);
    }
  }

  const std::vector<TensorSpec>& specs() const { return specs_; }
  // The spec the next write() must match.
  const TensorSpec* next() const { return next_ < specs_.size() ? &specs_[next_] : nullptr; }

  void write(std::string_view name, std::span<const std::byte> bytes) {
    const TensorSpec& s = expect(name);
    if (bytes.size() != s.nbytes())
      throw Error(path_.string() + ": tensor '" + s.name + "': got " +
                  std::to_string(bytes.size()) + " bytes, shape " + shape_str(s.shape) + " x " +
                  st_dtype_name(s.dtype) + " needs " + std::to_string(s.nbytes()));
    out_.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    if (!out_) throw Error(tmp_.string() + ": write failed (disk full?)");
    ++next_;
  }

  // Floats converted to the declared dtype (F32/F16/BF16) in chunks, never a full copy.
  void write_float(std::string_view name, std::span<const float> values) {
    const TensorSpec& s = expect(name);
    const std::string what = path_.string() + ": tensor '" + s.name + "'";
    const std::uint64_t numel = s.nbytes() / std::uint64_t(st_dtype_bytes(s.dtype));
    if (values.size() != numel)
      throw Error(what + ": got " + std::to_string(values.size()) + " values, shape " +
                  shape_str(s.shape) + " has " + std::to_string(numel));
    constexpr std::size_t chunk = 1 << 16;
    std::vector<std::byte> buf(chunk * std::size_t(st_dtype_bytes(s.dtype)));
    for (std::size_t i = 0; i < values.size(); i += chunk) {
      const std::size_t k = std::min(chunk, values.size() - i);
      convert_from_float(values.data() + i, k, s.dtype, buf.data(), what);
      out_.write(reinterpret_cast<const char*>(buf.data()),
                 std::streamsize(k * std::size_t(st_dtype_bytes(s.dtype))));
    }
    if (!out_) throw Error(tmp_.string() + ": write failed (disk full?)");
    ++next_;
  }

  void finish() {
    if (next_ != specs_.size())
      throw Error(path_.string() + ": tensor '" + specs_[next_].name +
                  "' declared but never written");
    out_.flush();
    out_.close();
    if (!out_) throw Error(tmp_.string() + ": write failed (disk full?)");
    sync_file(tmp_);
    std::error_code ec;
    std::filesystem::rename(tmp_, path_, ec);
    if (ec) throw Error(path_.string() + ": cannot rename " + tmp_.string() + " onto it (" +
                        ec.message() + ")");
    done_ = true;
  }

  // fsync a file by path, so a rename after it publishes complete data.
  static void sync_file(const std::filesystem::path& p) {
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
  }

 private:
  const TensorSpec& expect(std::string_view name) {
    if (next_ >= specs_.size())
      throw Error(path_.string() + ": tensor '" + std::string(name) +
                  "' written after all declared tensors");
    const TensorSpec& s = specs_[next_];
    if (s.name != name)
      throw Error(path_.string() + ": tensor '" + std::string(name) + "' written out of order (next "
                  "declared is '" + s.name + "')");
    return s;
  }

  std::filesystem::path path_, tmp_;
  std::vector<TensorSpec> specs_;
  std::ofstream out_;
  std::size_t next_ = 0;
  bool done_ = false;
};

// Writes a small string atomically (temp file + fsync + rename): config and index JSON files.
inline void write_text_atomic(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(tmp.string() + ": cannot create (for " + path.string() + ")");
    f.write(text.data(), std::streamsize(text.size()));
    f.close();
    if (!f) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      throw Error(tmp.string() + ": write failed (disk full?)");
    }
  }
  SafetensorsWriter::sync_file(tmp);
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw Error(path.string() + ": cannot rename " + tmp.string() + " onto it (" +
                      ec.message() + ")");
}

// ---- sharded checkpoints --------------------------------------------------------------------

// The weights of a Hugging Face folder: model.safetensors.index.json and its shards, or a single
// model.safetensors. Every shard is mapped (address space only; pages load when read).
class SafetensorsSet {
 public:
  struct Ref {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };

  // `dir` holding model.safetensors.index.json or model.safetensors.
  static SafetensorsSet open_dir(const std::filesystem::path& dir) {
    if (std::filesystem::exists(dir / "model.safetensors.index.json"))
      return open_index(dir / "model.safetensors.index.json");
    if (std::filesystem::exists(dir / "model.safetensors")) {
      SafetensorsSet s;
      s.files_.push_back(std::make_unique<SafetensorsFile>(dir / "model.safetensors"));
      for (const auto& t : s.files_[0]->tensors()) s.map_.emplace(t.name, Ref{s.files_[0].get(), &t});
      return s;
    }
    throw Error(dir.string() + ": no model.safetensors.index.json or model.safetensors");
  }

  static SafetensorsSet open_index(const std::filesystem::path& index_json) {
    const std::string src = index_json.string();
    std::ifstream f(index_json, std::ios::binary);
    if (!f) throw Error(src + ": cannot open");
    std::stringstream ss;
    ss << f.rdbuf();
    const nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
    if (j.is_discarded()) throw Error(src + ": not JSON (parse error)");
    if (!j.is_object()) throw Error(src + ": expected a JSON object");
    auto wm = j.find("weight_map");
    if (wm == j.end() || !wm->is_object())
      throw Error(src + ": field 'weight_map': missing or not an object");
    SafetensorsSet s;
    std::map<std::string, const SafetensorsFile*> shards;
    const auto dir = index_json.parent_path();
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string())
        throw Error(src + ": weight_map['" + it.key() + "']: expected a file name string");
      const std::string shard = it.value().get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
        throw Error(src + ": weight_map['" + it.key() + "']: '" + shard +
                    "' is not a file name in this folder");
      auto sh = shards.find(shard);
      if (sh == shards.end()) {
        s.files_.push_back(std::make_unique<SafetensorsFile>(dir / shard));
        sh = shards.emplace(shard, s.files_.back().get()).first;
      }
      const TensorInfo* t = sh->second->find(it.key());
      if (!t)
        throw Error(src + ": tensor '" + it.key() + "' is mapped to " + shard +
                    " but that file does not contain it");
      s.map_.emplace(it.key(), Ref{sh->second, t});
    }
    return s;
  }

  const Ref* find(std::string_view name) const {
    auto it = map_.find(std::string(name));
    return it == map_.end() ? nullptr : &it->second;
  }
  const std::map<std::string, Ref>& tensors() const { return map_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Ref> map_;
};

// Writes a sharded checkpoint: shards of at most `max_shard_bytes` (a larger tensor gets a shard
// of its own) named model-00001-of-0000N.safetensors plus model.safetensors.index.json, or a
// single model.safetensors when everything fits one shard (as transformers' save_pretrained).
// Tensors are written in the declared order, one at a time.
class ShardedWriter {
 public:
  ShardedWriter(const std::filesystem::path& dir, std::vector<TensorSpec> specs,
                std::uint64_t max_shard_bytes = 5'000'000'000ull,
                std::map<std::string, std::string> metadata = {{"format", "pt"}})
      : dir_(dir), metadata_(std::move(metadata)) {
    std::uint64_t cur = 0;
    for (auto& s : specs) {
      total_ += s.nbytes();
      if (groups_.empty() || (cur + s.nbytes() > max_shard_bytes && cur > 0)) {
        groups_.emplace_back();
        cur = 0;
      }
      cur += s.nbytes();
      groups_.back().push_back(std::move(s));
    }
    if (groups_.empty()) groups_.emplace_back();
    for (std::size_t i = 0; i < groups_.size(); ++i) {
      names_.push_back(groups_.size() == 1 ? std::string("model.safetensors")
                                           : shard_name(i + 1, groups_.size()));
      for (const auto& s : groups_[i]) weight_map_[s.name] = names_.back();
    }
    open_next();
  }

  static std::string shard_name(std::size_t i, std::size_t n) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i, n);
    return buf;
  }

  void write(std::string_view name, std::span<const std::byte> bytes) {
    advance();
    cur_->write(name, bytes);
  }
  void write_float(std::string_view name, std::span<const float> values) {
    advance();
    cur_->write_float(name, values);
  }
  const TensorSpec* next() {
    advance();
    return cur_ ? cur_->next() : nullptr;
  }

  void finish() {
    advance();
    if (cur_) cur_->finish();  // reports the first unwritten tensor
    if (groups_.size() > 1) {
      nlohmann::json idx = {{"metadata", {{"total_size", total_}}}, {"weight_map", weight_map_}};
      write_text_atomic(dir_ / "model.safetensors.index.json", idx.dump(2) + "\n");
    }
  }

 private:
  void open_next() {
    cur_ = std::make_unique<SafetensorsWriter>(dir_ / names_[shard_], groups_[shard_], metadata_);
  }
  // Closes a complete shard and opens the next one.
  void advance() {
    while (cur_ && cur_->next() == nullptr && shard_ + 1 < groups_.size()) {
      cur_->finish();
      ++shard_;
      open_next();
    }
  }

  std::filesystem::path dir_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::vector<TensorSpec>> groups_;
  std::vector<std::string> names_;
  std::map<std::string, std::string> weight_map_;
  std::uint64_t total_ = 0;
  std::size_t shard_ = 0;
  std::unique_ptr<SafetensorsWriter> cur_;
};

// Small convenience: write every tensor at once from memory (tests, adapters).
struct TensorData {
  TensorSpec spec;
  std::vector<std::byte> bytes;
};
inline void write_safetensors(const std::filesystem::path& path, const std::vector<TensorData>& ts,
                              const std::map<std::string, std::string>& metadata = {}) {
  std::vector<TensorSpec> specs;
  for (const auto& t : ts) specs.push_back(t.spec);
  SafetensorsWriter w(path, std::move(specs), metadata);
  for (const auto& t : ts) w.write(t.spec.name, t.bytes);
  w.finish();
}

}  // namespace lvt::io
