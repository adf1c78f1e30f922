#pragma once
// The values a chat template computes with, and how Python prints them: Jinja2 renders
// through Python's str()/repr() and transformers' tojson through json.dumps, so a byte-identical
// render needs the same spellings (True, None, 1.0, 1e+16, {'a': 1}, ...).
#include <lvt/error.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lvt::text::jinja {

enum class Kind : std::uint8_t { undefined, none, boolean, integer, floating, string, list, dict, function };

struct Value;
struct Dict;
struct CallArgs;
using Function = std::function<Value(CallArgs&)>;

struct Value {
  Kind kind = Kind::undefined;
  bool boolean = false;
  std::int64_t integer = 0;
  double floating = 0;
  std::string string;  // the string; for undefined, what was missing (for error messages)
  std::shared_ptr<std::vector<Value>> list;
  std::shared_ptr<Dict> dict;  // shared: a namespace() is mutated through every copy
  std::shared_ptr<Function> function;
  bool is_namespace = false;
  bool is_tuple = false;  // a list that prints as Python prints a tuple: (1, 2)

  static Value undefined(std::string what = {}) { Value v; v.string = std::move(what); return v; }
  static Value none() { Value v; v.kind = Kind::none; return v; }
  static Value from(bool b) { Value v; v.kind = Kind::boolean; v.boolean = b; return v; }
  static Value from(std::int64_t i) { Value v; v.kind = Kind::integer; v.integer = i; return v; }
  static Value from(int i) { return from(std::int64_t{i}); }
  static Value from(double f) { Value v; v.kind = Kind::floating; v.floating = f; return v; }
  static Value from(std::string s) { Value v; v.kind = Kind::string; v.string = std::move(s); return v; }
  static Value from(const char* s) { return from(std::string(s)); }
  static Value from(std::vector<Value> items);
  static Value new_dict();
  static Value tuple(std::vector<Value> items) { Value v = from(std::move(items)); v.is_tuple = true; return v; }
  static Value from(std::string name, Function f) {
    Value v; v.kind = Kind::function; v.string = std::move(name);
    v.function = std::make_shared<Function>(std::move(f)); return v;
  }

  bool is_undefined() const { return kind == Kind::undefined; }
  bool is_number() const { return kind == Kind::integer || kind == Kind::floating || kind == Kind::boolean; }
  double as_double() const { return kind == Kind::floating ? floating : double(kind == Kind::boolean ? boolean : integer); }
  std::int64_t as_int() const { return kind == Kind::boolean ? boolean : integer; }
};

// Insertion-ordered like a Python dict (tool schemas keep their key order through tojson).
struct Dict {
  std::vector<std::pair<Value, Value>> entries;
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(Value key, Value value);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  int line = 0;
  // Positional i, else keyword `name`, else nullptr.
  const Value* get(std::size_t i, std::string_view name) const {
    if (i < positional.size()) return &positional[i];
    for (auto& [k, v] : keyword) if (k == name) return &v;
    return nullptr;
  }
};

inline Value Value::from(std::vector<Value> items) {
  Value v; v.kind = Kind::list; v.list = std::make_shared<std::vector<Value>>(std::move(items)); return v;
}
inline Value Value::new_dict() { Value v; v.kind = Kind::dict; v.dict = std::make_shared<Dict>(); return v; }

bool equal(const Value& a, const Value& b);

inline const Value* Dict::find(const Value& key) const {
  for (auto& e : entries) if (equal(e.first, key)) return &e.second;
  return nullptr;
}
inline const Value* Dict::find(std::string_view key) const {
  for (auto& e : entries) if (e.first.kind == Kind::string && e.first.string == key) return &e.second;
  return nullptr;
}
inline void Dict::set(Value key, Value value) {
  for (auto& e : entries) if (equal(e.first, key)) { e.second = std::move(value); return; }
  entries.emplace_back(std::move(key), std::move(value));
}

// Python ==: numbers across int/float/bool, deep for lists and dicts.
inline bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != Kind::floating && b.kind != Kind::floating) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::undefined: case Kind::none: return true;
    case Kind::string: return a.string == b.string;
    case Kind::list:
      if (a.list->size() != b.list->size()) return false;
      for (std::size_t i = 0; i < a.list->size(); ++i) if (!equal((*a.list)[i], (*b.list)[i])) return false;
      return true;
    case Kind::dict:
      if (a.dict == b.dict) return true;
      if (a.dict->entries.size() != b.dict->entries.size()) return false;
      for (auto& [k, v] : a.dict->entries) { auto* o = b.dict->find(k); if (!o || !equal(v, *o)) return false; }
      return true;
    case Kind::function: return a.function == b.function;
    default: return false;
  }
}

// Python truthiness; undefined is false.
inline bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::undefined: case Kind::none: return false;
    case Kind::boolean: return v.boolean;
    case Kind::integer: return v.integer != 0;
    case Kind::floating: return v.floating != 0;
    case Kind::string: return !v.string.empty();
    case Kind::list: return !v.list->empty();
    case Kind::dict: return !v.dict->entries.empty();
    case Kind::function: return true;
  }
  return false;
}

// ---- UTF-8: Python indexes strings by code point. Invalid bytes round-trip as 0x110000 + byte.
inline std::vector<std::uint32_t> decode_utf8(std::string_view s) {
  std::vector<std::uint32_t> out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    std::uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
    bool ok = n > 0 && i + n <= s.size();
    for (int k = 1; ok && k < n; ++k) {
      auto d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 2) ok = false; else cp = (cp << 6) | (d & 0x3f);
    }
    if (!ok) { out.push_back(0x110000u + c); ++i; continue; }
    out.push_back(cp);
    i += n;
  }
  return out;
}
inline void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp >= 0x110000u) { out += static_cast<char>(cp - 0x110000u); return; }
  if (cp < 0x80) { out += static_cast<char>(cp); return; }
  if (cp < 0x800) { out += static_cast<char>(0xc0 | (cp >> 6)); }
  else if (cp < 0x10000) { out += static_cast<char>(0xe0 | (cp >> 12)); out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f)); }
  else { out += static_cast<char>(0xf0 | (cp >> 18)); out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
         out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f)); }
  out += static_cast<char>(0x80 | (cp & 0x3f));
}
inline std::string encode_utf8(const std::vector<std::uint32_t>& cps, std::size_t from = 0, std::size_t to = SIZE_MAX) {
  std::string out;
  for (std::size_t i = from; i < cps.size() && i < to; ++i) append_utf8(out, cps[i]);
  return out;
}
// Python's str.isspace() (and the `\s` of Jinja's lexer).
inline bool is_space(std::uint32_t c) {
  return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

// ---- Python float repr: shortest round-trip digits, exponent form outside 1e-4 <= |x| < 1e16.
inline std::string python_float(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, f, std::chars_format::scientific);
  std::string sci(buf, r.ptr);  // like -1.2345e+05
  std::string sign;
  if (sci[0] == '-') { sign = "-"; sci.erase(0, 1); }
  auto e = sci.find('e');
  int exp = std::stoi(sci.substr(e + 1));
  std::string digits;
  for (char c : sci.substr(0, e)) if (c != '.') digits += c;
  int decpt = exp + 1;
  if (decpt > -4 && decpt <= 16) {
    std::string s;
    if (decpt <= 0) s = "0." + std::string(-decpt, '0') + digits;
    else if (decpt >= int(digits.size())) s = digits + std::string(decpt - digits.size(), '0') + ".0";
    else s = digits.substr(0, decpt) + "." + digits.substr(decpt);
    return sign + s;
  }
  std::string mant = digits.size() > 1 ? digits.substr(0, 1) + "." + digits.substr(1) : digits;
  std::string es = std::to_string(exp < 0 ? -exp : exp);
  if (es.size() < 2) es = "0" + es;
  return sign + mant + (exp < 0 ? "e-" : "e+") + es;
}

inline std::string python_repr(const Value& v);

// Python str(): what `{{ x }}` prints.
inline std::string python_str(const Value& v) {
  switch (v.kind) {
    case Kind::undefined: return "";
    case Kind::none: return "None";
    case Kind::boolean: return v.boolean ? "True" : "False";
    case Kind::integer: return std::to_string(v.integer);
    case Kind::floating: return python_float(v.floating);
    case Kind::string: return v.string;
    default: return python_repr(v);
  }
}

inline std::string python_string_repr(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  for (std::uint32_t c : decode_utf8(s)) {
    if (c == static_cast<std::uint32_t>(q) || c == '\\') { out += '\\'; out += static_cast<char>(c); }
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) || c >= 0x110000u) {
      char b[16]; std::snprintf(b, sizeof b, "\\x%02x", c >= 0x110000u ? c - 0x110000u : c); out += b;
    } else append_utf8(out, c);
  }
  return out + q;
}

inline std::string python_repr(const Value& v) {
  switch (v.kind) {
    case Kind::string: return python_string_repr(v.string);
    case Kind::list: {
      std::string out = v.is_tuple ? "(" : "[";
      for (std::size_t i = 0; i < v.list->size(); ++i) { if (i) out += ", "; out += python_repr((*v.list)[i]); }
      if (v.is_tuple && v.list->size() == 1) out += ",";
      return out + (v.is_tuple ? ")" : "]");
    }
    case Kind::dict: {
      std::string out = v.is_namespace ? "<Namespace {" : "{";
      bool first = true;
      for (auto& [k, x] : v.dict->entries) {
        if (!first) out += ", ";
        first = false;
        out += python_repr(k) + ": " + python_repr(x);
      }
      return out + (v.is_namespace ? "}>" : "}");
    }
    case Kind::function: return "<function " + v.string + ">";
    default: return python_str(v);
  }
}

// ---- json.dumps(x, ensure_ascii=False, indent=..., separators=..., sort_keys=...) as transformers' tojson.
struct JsonStyle {
  bool indent_on = false;
  std::string indent;  // one level
  std::string item_sep = ", ", key_sep = ": ";
  bool sort_keys = false;
};

inline void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (std::uint32_t c : decode_utf8(s)) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) { char b[16]; std::snprintf(b, sizeof b, "\\u%04x", c); out += b; }
        else append_utf8(out, c);
    }
  }
  out += '"';
}

inline std::string json_key(const Value& k) {
  switch (k.kind) {
    case Kind::string: return k.string;
    case Kind::boolean: return k.boolean ? "true" : "false";
    case Kind::none: return "null";
    case Kind::integer: return std::to_string(k.integer);
    case Kind::floating: return python_float(k.floating);
    default: throw Error("tojson: keys must be str, int, float, bool or None, not " + python_repr(k));
  }
}

inline void json_dump(std::string& out, const Value& v, const JsonStyle& st, int level, std::size_t max_bytes) {
  if (out.size() > max_bytes) throw Error("tojson: output exceeds " + std::to_string(max_bytes) + " bytes");
  auto newline = [&](int lv) {
    if (!st.indent_on) return;
    out += '\n';
    for (int i = 0; i < lv; ++i) out += st.indent;
  };
  switch (v.kind) {
    case Kind::none: out += "null"; return;
    case Kind::boolean: out += v.boolean ? "true" : "false"; return;
    case Kind::integer: out += std::to_string(v.integer); return;
    case Kind::floating:
      if (std::isnan(v.floating)) out += "NaN";
      else if (std::isinf(v.floating)) out += v.floating > 0 ? "Infinity" : "-Infinity";
      else out += python_float(v.floating);
      return;
    case Kind::string: json_string(out, v.string); return;
    case Kind::list:
      if (v.list->empty()) { out += "[]"; return; }
      out += '[';
      for (std::size_t i = 0; i < v.list->size(); ++i) {
        if (i) out += st.item_sep;
        newline(level + 1);
        json_dump(out, (*v.list)[i], st, level + 1, max_bytes);
      }
      newline(level);
      out += ']';
      return;
    case Kind::dict: {
      if (v.dict->entries.empty()) { out += "{}"; return; }
      std::vector<std::pair<std::string, const Value*>> items;
      for (auto& [k, x] : v.dict->entries) items.emplace_back(json_key(k), &x);
      if (st.sort_keys) std::stable_sort(items.begin(), items.end(), [](auto& a, auto& b) { return a.first < b.first; });
      out += '{';
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += st.item_sep;
        newline(level + 1);
        json_string(out, items[i].first);
        out += st.key_sep;
        json_dump(out, *items[i].second, st, level + 1, max_bytes);
      }
      newline(level);
      out += '}';
      return;
    }
    case Kind::undefined: throw Error("tojson: Object of type Undefined is not JSON serializable");
    case Kind::function: throw Error("tojson: Object of type function is not JSON serializable");
  }
}

}  // namespace lvt::text::jinja
