#pragma once
// Reading tokenizer.json fields with errors that name the file and the JSON path
// ("tokenizer.json: /model/merges/3: expected a string").
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "lvt/error.hpp"

namespace lvt::text {

using Json = nlohmann::json;

// A JSON value with where it came from.
struct JsonAt {
  const Json& value;
  std::string path;        // JSON pointer, "" for the root
  const std::string& file; // file name for messages

  [[noreturn]] void fail(std::string_view what) const {
    throw Error(file + ": " + (path.empty() ? "/" : path) + ": " + std::string(what));
  }
  bool has(const char* key) const { return value.is_object() && value.contains(key) && !value[key].is_null(); }
  JsonAt operator[](const char* key) const {
    if (!value.is_object()) fail("expected an object");
    auto it = value.find(key);
    if (it == value.end()) JsonAt{value, path + "/" + key, file}.fail("missing field");
    return {*it, path + "/" + key, file};
  }
  JsonAt operator[](size_t i) const { return {value.at(i), path + "/" + std::to_string(i), file}; }
  size_t size() const {
    if (!value.is_array()) fail("expected an array");
    return value.size();
  }
  std::string str() const {
    if (!value.is_string()) fail("expected a string");
    return value.get<std::string>();
  }
  bool boolean() const {
    if (!value.is_boolean()) fail("expected true or false");
    return value.get<bool>();
  }
  int64_t integer() const {
    if (!value.is_number_integer()) fail("expected an integer");
    return value.get<int64_t>();
  }
  std::string str_or(const char* key, std::string dflt) const { return has(key) ? (*this)[key].str() : dflt; }
  bool bool_or(const char* key, bool dflt) const { return has(key) ? (*this)[key].boolean() : dflt; }
  std::string type() const { return (*this)["type"].str(); }
};

}  // namespace lvt::text
