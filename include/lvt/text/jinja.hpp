#pragma once
// A Jinja2 3.1 template interpreter for chat templates: parse once (jinja_parse.hpp), render
// many times over Values. Semantics follow Jinja2 with Python's: undefined prints as nothing
// and is false, a missing attribute is undefined, an attribute of undefined is an error; a
// for-loop iteration is its own scope (a `set` inside does not leave it; use namespace()).
// Rendering is bounded (steps, call depth, output bytes) so any input template terminates.
#include <lvt/text/jinja_parse.hpp>

#include <map>
#include <optional>
#include <cstring>
#include <unordered_map>

namespace lvt::text::jinja {

// A template's raise_exception('msg'): what() is msg, as transformers' TemplateError prints it.
struct TemplateRaised : Error {
  using Error::Error;
};

struct Limits {
  std::size_t max_output_bytes = std::size_t{64} << 20;
  std::uint64_t max_steps = 50'000'000;  // statements + expressions evaluated
  int max_call_depth = 100;              // macro recursion
  std::size_t max_items = std::size_t{1} << 22;  // one list or string built by range / * / join
};

struct Scope {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;
  const Value* find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent.get()) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};

inline const std::vector<std::string>& filter_names() {
  static const std::vector<std::string> names = {
      "trim", "length", "count", "tojson", "string", "lower", "upper", "title", "capitalize", "replace", "join",
      "first", "last", "default", "d", "selectattr", "rejectattr", "select", "reject", "map", "list", "items",
      "indent", "int", "float", "safe", "sort", "unique", "reverse", "round", "abs", "e", "escape", "dictsort",
      "sum", "min", "max", "format", "batch", "wordcount", "center", "truncate", "attr", "striptags"};
  return names;
}
inline const std::vector<std::string>& test_names() {
  static const std::vector<std::string> names = {
      "defined", "undefined", "none", "string", "mapping", "iterable", "sequence", "number", "integer", "float",
      "boolean", "true", "false", "in", "equalto", "eq", "==", "ne", "!=", "lt", "le", "gt", "ge", "lessthan",
      "greaterthan", "odd", "even", "divisibleby", "callable", "lower", "upper", "sameas"};
  return names;
}
inline bool known_filter(const std::string& n) { auto& v = filter_names(); return std::find(v.begin(), v.end(), n) != v.end(); }
inline bool known_test(const std::string& n) { auto& v = test_names(); return std::find(v.begin(), v.end(), n) != v.end(); }

// Jinja's own globals that chat templates use: range, namespace, dict.
inline void add_default_globals(Scope& root, const Limits& limits) {
  std::size_t max_items = limits.max_items;
  root.vars["range"] = Value::from("range", [max_items](CallArgs& a) -> Value {
    if (a.positional.empty() || a.positional.size() > 3 || !a.keyword.empty()) fail(a.line, "range expects 1 to 3 integer arguments");
    for (auto& x : a.positional) if (x.kind != Kind::integer && x.kind != Kind::boolean) fail(a.line, "range() arguments must be integers");
    std::int64_t start = 0, stop, stride = 1;
    if (a.positional.size() == 1) stop = a.positional[0].as_int();
    else { start = a.positional[0].as_int(); stop = a.positional[1].as_int(); if (a.positional.size() == 3) stride = a.positional[2].as_int(); }
    if (stride == 0) fail(a.line, "range() arg 3 must not be zero");
    std::vector<Value> r;
    for (std::int64_t i = start; stride > 0 ? i < stop : i > stop; i += stride) {
      if (r.size() >= max_items) fail(a.line, "range() too large");
      r.push_back(Value::from(i));
      if ((stride > 0 && i > INT64_MAX - stride) || (stride < 0 && i < INT64_MIN - stride)) break;
    }
    return Value::from(std::move(r));
  });
  auto make_dict = [](CallArgs& a, bool ns) -> Value {
    Value d = Value::new_dict();
    d.is_namespace = ns;
    if (a.positional.size() > 1) fail(a.line, "expected at most 1 positional argument");
    if (!a.positional.empty()) {
      const Value& src = a.positional[0];
      if (src.kind == Kind::dict) for (auto& [k, v] : src.dict->entries) d.dict->set(k, v);
      else if (src.kind == Kind::list) {
        for (auto& p : *src.list) {
          if (p.kind != Kind::list || p.list->size() != 2) fail(a.line, "dictionary update sequence element has wrong length");
          d.dict->set((*p.list)[0], (*p.list)[1]);
        }
      } else fail(a.line, "cannot convert to a dictionary");
    }
    for (auto& [k, v] : a.keyword) d.dict->set(Value::from(k), v);
    if (ns)
      for (auto& [k, v] : d.dict->entries)
        if (k.kind == Kind::string && !k.string.empty() && k.string[0] == '_')
          fail(a.line, "Chat templates cannot store underscore-prefixed attributes on a namespace, but got '" + k.string + "'. Please rename the attribute.");
    return d;
  };
  root.vars["namespace"] = Value::from("namespace", [make_dict](CallArgs& a) { return make_dict(a, true); });
  root.vars["dict"] = Value::from("dict", [make_dict](CallArgs& a) { return make_dict(a, false); });
}

class Template {
 public:
  explicit Template(std::string source)
      : body_(std::make_shared<const Body>(Parser(tokenize(std::move(source))).parse_template())) {}

  // Renders with `globals` (name -> value) visible to the template.
  std::string render(const std::vector<std::pair<std::string, Value>>& globals, const Limits& limits = {}) const {
    Render r(limits);
    auto root = std::make_shared<Scope>();
    add_default_globals(*root, limits);
    for (auto& [k, v] : globals) root->vars[k] = v;
    auto top = std::make_shared<Scope>();
    top->parent = root;
    r.exec(*body_, top);
    return std::move(r.out);
  }

 private:
  std::shared_ptr<const Body> body_;  // shared: a Template copies cheaply, the AST is immutable

  enum class Flow { normal, break_, continue_ };

  struct Render {
    Limits lim;
    std::string out;
    std::uint64_t steps = 0;
    int depth = 0;
    explicit Render(const Limits& l) : lim(l) {}

    void step(int line) { if (++steps > lim.max_steps) fail(line, "template exceeded " + std::to_string(lim.max_steps) + " evaluation steps"); }
    void emit(std::string& dst, const std::string& s, int line) {
      if (dst.size() + s.size() > lim.max_output_bytes) fail(line, "output exceeds " + std::to_string(lim.max_output_bytes) + " bytes");
      dst += s;
    }

    // ---------------- statements
    Flow exec(const Body& body, const std::shared_ptr<Scope>& sc) { return exec_into(out, body, sc); }

    Flow exec_into(std::string& dst, const Body& body, const std::shared_ptr<Scope>& sc) {
      for (auto& st : body) {
        Flow f = exec_one(dst, *st, sc);
        if (f != Flow::normal) return f;
      }
      return Flow::normal;
    }

    Flow exec_one(std::string& dst, const Stmt& st, const std::shared_ptr<Scope>& sc) {
      step(st.line);
      switch (st.kind) {
        case S::text: emit(dst, st.text, st.line); return Flow::normal;
        case S::print: emit(dst, python_str(eval(*st.expr, sc)), st.line); return Flow::normal;
        case S::body: return exec_into(dst, st.body, sc);
        case S::if_:
          for (auto& [cond, b] : st.branches) if (truthy(eval(*cond, sc))) return exec_into(dst, b, sc);
          return exec_into(dst, st.else_body, sc);
        case S::for_: return exec_for(dst, st, sc);
        case S::set: {
          Value v = eval(*st.expr, sc);
          if (st.targets.size() == 1) { sc->vars[st.targets[0]] = std::move(v); return Flow::normal; }
          auto items = iterate(v, st.line);
          if (items.size() != st.targets.size()) fail(st.line, "cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(st.targets.size()) + " names");
          for (std::size_t i = 0; i < items.size(); ++i) sc->vars[st.targets[i]] = items[i];
          return Flow::normal;
        }
        case S::set_attr: {
          const Value* ns = sc->find(st.text);
          if (!ns || ns->kind != Kind::dict || !ns->is_namespace) fail(st.line, "cannot assign attribute on non-namespace object '" + st.text + "'");
          if (!st.attr.empty() && st.attr[0] == '_') fail(st.line, "Chat templates cannot store underscore-prefixed attributes on a namespace, but got '" + st.attr + "'. Please rename the attribute.");
          ns->dict->set(Value::from(st.attr), eval(*st.expr, sc));
          return Flow::normal;
        }
        case S::set_block: {
          std::string captured;
          auto inner = std::make_shared<Scope>();
          inner->parent = sc;
          exec_into(captured, st.body, inner);
          Value v = Value::from(std::move(captured));
          for (auto& [name, fargs] : st.block_filters) {
            CallArgs a; a.line = st.line;
            for (auto& e : fargs) a.positional.push_back(eval(*e, sc));
            v = apply_filter(name, v, a, sc);
          }
          sc->vars[st.text] = std::move(v);
          return Flow::normal;
        }
        case S::macro: {
          const Stmt* m = &st;
          std::weak_ptr<Scope> where = sc;  // weak: the macro lives in this scope, no cycle
          Render* self = this;
          sc->vars[st.text] = Value::from(st.text, [m, where, self](CallArgs& a) -> Value {
            auto def = where.lock();
            if (!def) fail(m->line, "macro '" + m->text + "' called after its scope ended");
            if (++self->depth > self->lim.max_call_depth) { --self->depth; fail(a.line, "macro recursion deeper than " + std::to_string(self->lim.max_call_depth)); }
            struct Dec { int& d; ~Dec() { --d; } } dec{self->depth};
            auto local = std::make_shared<Scope>();
            local->parent = def;
            if (a.positional.size() > m->params.size()) fail(a.line, "macro '" + m->text + "' takes not more than " + std::to_string(m->params.size()) + " argument(s)");
            std::size_t first_default = m->params.size() - m->defaults.size();
            for (std::size_t i = 0; i < m->params.size(); ++i) {
              const Value* given = a.get(i, m->params[i]);
              if (given) local->vars[m->params[i]] = *given;
              else if (i >= first_default) local->vars[m->params[i]] = self->eval(*m->defaults[i - first_default], local);
              else local->vars[m->params[i]] = Value::undefined("parameter '" + m->params[i] + "' was not provided");
            }
            for (auto& [k, v] : a.keyword)
              if (std::find(m->params.begin(), m->params.end(), k) == m->params.end()) fail(a.line, "macro '" + m->text + "' takes no keyword argument '" + k + "'");
            std::string captured;
            self->exec_into(captured, m->body, local);
            return Value::from(std::move(captured));
          });
          return Flow::normal;
        }
        case S::break_: return Flow::break_;
        case S::continue_: return Flow::continue_;
      }
      return Flow::normal;
    }

    Flow exec_for(std::string& dst, const Stmt& st, const std::shared_ptr<Scope>& sc) {
      Value seq = eval(*st.expr, sc);
      std::vector<Value> items = iterate(seq, st.line);
      auto bind = [&](Scope& s, const Value& item) {
        if (st.targets.size() == 1) { s.vars[st.targets[0]] = item; return; }
        auto parts = iterate(item, st.line);
        if (parts.size() != st.targets.size()) fail(st.line, "cannot unpack " + std::to_string(parts.size()) + " values into " + std::to_string(st.targets.size()) + " loop variables");
        for (std::size_t i = 0; i < parts.size(); ++i) s.vars[st.targets[i]] = parts[i];
      };
      if (st.filter) {  // `for x in xs if cond`: the loop runs over the kept items only
        std::vector<Value> kept;
        for (auto& it : items) {
          step(st.line);
          auto f = std::make_shared<Scope>(); f->parent = sc; bind(*f, it);
          if (truthy(eval(*st.filter, f))) kept.push_back(it);
        }
        items = std::move(kept);
      }
      if (items.empty()) {
        auto e = std::make_shared<Scope>(); e->parent = sc;
        return exec_into(dst, st.else_body, e) == Flow::normal ? Flow::normal : Flow::normal;
      }
      auto last_changed = std::make_shared<std::vector<Value>>();
      const std::int64_t n = static_cast<std::int64_t>(items.size());
      for (std::int64_t i = 0; i < n; ++i) {
        step(st.line);
        auto it = std::make_shared<Scope>();
        it->parent = sc;
        bind(*it, items[i]);
        Value loop = Value::new_dict();
        auto& d = *loop.dict;
        d.set(Value::from("index"), Value::from(i + 1));
        d.set(Value::from("index0"), Value::from(i));
        d.set(Value::from("revindex"), Value::from(n - i));
        d.set(Value::from("revindex0"), Value::from(n - i - 1));
        d.set(Value::from("first"), Value::from(i == 0));
        d.set(Value::from("last"), Value::from(i == n - 1));
        d.set(Value::from("length"), Value::from(n));
        d.set(Value::from("depth"), Value::from(1));
        d.set(Value::from("depth0"), Value::from(0));
        d.set(Value::from("previtem"), i > 0 ? items[i - 1] : Value::undefined("there is no previous item"));
        d.set(Value::from("nextitem"), i + 1 < n ? items[i + 1] : Value::undefined("there is no next item"));
        d.set(Value::from("cycle"), Value::from("loop.cycle", [i](CallArgs& a) -> Value {
          if (a.positional.empty()) fail(a.line, "no items for cycling given");
          return a.positional[static_cast<std::size_t>(i) % a.positional.size()];
        }));
        d.set(Value::from("changed"), Value::from("loop.changed", [last_changed](CallArgs& a) -> Value {
          bool same = last_changed->size() == a.positional.size();
          for (std::size_t k = 0; same && k < a.positional.size(); ++k) same = equal((*last_changed)[k], a.positional[k]);
          *last_changed = a.positional;
          return Value::from(!same);
        }));
        it->vars["loop"] = std::move(loop);
        Flow f = exec_into(dst, st.body, it);
        if (f == Flow::break_) break;
      }
      return Flow::normal;
    }

    // ---------------- values
    std::vector<Value> iterate(const Value& v, int line) {
      switch (v.kind) {
        case Kind::undefined: return {};
        case Kind::list: return *v.list;
        case Kind::dict: { std::vector<Value> keys; for (auto& e : v.dict->entries) keys.push_back(e.first); return keys; }
        case Kind::string: {
          std::vector<Value> chars;
          for (auto c : decode_utf8(v.string)) { std::string s; append_utf8(s, c); chars.push_back(Value::from(std::move(s))); }
          return chars;
        }
        default: fail(line, "'" + type_name(v) + "' object is not iterable");
      }
    }
    static std::string type_name(const Value& v) {
      switch (v.kind) {
        case Kind::undefined: return "Undefined";
        case Kind::none: return "NoneType";
        case Kind::boolean: return "bool";
        case Kind::integer: return "int";
        case Kind::floating: return "float";
        case Kind::string: return "str";
        case Kind::list: return "list";
        case Kind::dict: return v.is_namespace ? "Namespace" : "dict";
        case Kind::function: return "function";
      }
      return "?";
    }
    [[noreturn]] static void undefined_error(const Value& u, int line) {
      fail(line, u.string.empty() ? std::string("value is undefined") : u.string);
    }
    static std::string missing(const Value& obj, const std::string& name) {
      return obj.kind == Kind::dict ? "'" + type_name(obj) + " object' has no attribute '" + name + "'"
                                    : "'" + type_name(obj) + " object' has no attribute '" + name + "'";
    }

    Value getattr(const Value& obj, const std::string& name, int line) {
      if (obj.is_undefined()) undefined_error(obj, line);
      if (obj.kind == Kind::dict) {
        if (!obj.is_namespace) {
          if (Value m = method(obj, name, line); !m.is_undefined()) return m;
        }
        if (const Value* v = obj.dict->find(name)) return *v;
        return Value::undefined(missing(obj, name));
      }
      if (Value m = method(obj, name, line); !m.is_undefined()) return m;
      return Value::undefined(missing(obj, name));
    }

    Value getitem(const Value& obj, const Value& key, int line) {
      if (obj.is_undefined()) undefined_error(obj, line);
      if (obj.kind == Kind::dict) {
        if (const Value* v = obj.dict->find(key)) return *v;
        if (key.kind == Kind::string && !obj.is_namespace) return getattr(obj, key.string, line);
        return Value::undefined("'" + type_name(obj) + " object' has no attribute " + python_repr(key));
      }
      if ((obj.kind == Kind::list || obj.kind == Kind::string) && (key.kind == Kind::integer || key.kind == Kind::boolean)) {
        std::int64_t i = key.as_int();
        if (obj.kind == Kind::list) {
          auto n = static_cast<std::int64_t>(obj.list->size());
          if (i < 0) i += n;
          if (i < 0 || i >= n) return Value::undefined("list object has no element " + std::to_string(key.as_int()));
          return (*obj.list)[static_cast<std::size_t>(i)];
        }
        auto cps = decode_utf8(obj.string);
        auto n = static_cast<std::int64_t>(cps.size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value::undefined("str object has no element " + std::to_string(key.as_int()));
        std::string s; append_utf8(s, cps[static_cast<std::size_t>(i)]);
        return Value::from(std::move(s));
      }
      if (key.kind == Kind::string) return getattr(obj, key.string, line);
      return Value::undefined("'" + type_name(obj) + " object' has no attribute " + python_repr(key));
    }

    Value slice(const Value& obj, const Value* a, const Value* b, const Value* c, int line) {
      if (obj.is_undefined()) undefined_error(obj, line);
      auto num = [&](const Value* v, const char* what) -> std::optional<std::int64_t> {
        if (!v || v->kind == Kind::none || v->is_undefined()) return std::nullopt;
        if (v->kind != Kind::integer && v->kind != Kind::boolean) fail(line, std::string("slice ") + what + " must be an integer");
        return v->as_int();
      };
      auto start = num(a, "start"), stop = num(b, "stop"), stride = num(c, "step");
      std::int64_t st = stride.value_or(1);
      if (st == 0) fail(line, "slice step cannot be zero");
      std::vector<std::uint32_t> cps;
      std::int64_t n;
      if (obj.kind == Kind::list) n = static_cast<std::int64_t>(obj.list->size());
      else if (obj.kind == Kind::string) { cps = decode_utf8(obj.string); n = static_cast<std::int64_t>(cps.size()); }
      else return Value::undefined("'" + type_name(obj) + "' object is not subscriptable");  // Jinja: undefined, not an error
      auto clamp = [&](std::optional<std::int64_t> v, std::int64_t dflt) {  // Python's PySlice_AdjustIndices
        if (!v) return dflt;
        std::int64_t x = *v;
        if (x < 0) { x += n; if (x < 0) x = st < 0 ? -1 : 0; }
        else if (x >= n) x = st < 0 ? n - 1 : n;
        return x;
      };
      std::int64_t lo = clamp(start, st < 0 ? n - 1 : 0), hi = clamp(stop, st < 0 ? -1 : n);
      std::vector<std::int64_t> idx;
      if (st > 0) for (std::int64_t i = lo; i < hi; i += st) idx.push_back(i);
      else for (std::int64_t i = lo; i > hi; i += st) idx.push_back(i);
      if (obj.kind == Kind::list) {
        std::vector<Value> r;
        for (auto i : idx) r.push_back((*obj.list)[static_cast<std::size_t>(i)]);
        return obj.is_tuple ? Value::tuple(std::move(r)) : Value::from(std::move(r));
      }
      std::string r;
      for (auto i : idx) append_utf8(r, cps[static_cast<std::size_t>(i)]);
      return Value::from(std::move(r));
    }

    // Bound methods of str and dict that chat templates call.
    Value method(const Value& obj, const std::string& name, int line);

    Value call(const Value& fn, CallArgs& a, int line) {
      if (fn.is_undefined()) undefined_error(fn, line);
      if (fn.kind != Kind::function) fail(line, "'" + type_name(fn) + "' object is not callable");
      a.line = line;
      return (*fn.function)(a);
    }

    CallArgs eval_args(const Expr& e, std::size_t skip, const std::shared_ptr<Scope>& sc) {
      CallArgs a;
      a.line = e.line;
      for (std::size_t i = skip; i < e.args.size(); ++i) a.positional.push_back(eval(*e.args[i], sc));
      for (auto& [k, v] : e.kwargs) a.keyword.emplace_back(k, eval(*v, sc));
      return a;
    }

    Value eval(const Expr& e, const std::shared_ptr<Scope>& sc) {
      step(e.line);
      switch (e.kind) {
        case E::constant: return e.value;
        case E::name: {
          const Value* v = sc->find(e.name);
          return v ? *v : Value::undefined("'" + e.name + "' is undefined");
        }
        case E::getattr: return getattr(eval(*e.args[0], sc), e.name, e.line);
        case E::getitem: { Value o = eval(*e.args[0], sc); return getitem(o, eval(*e.args[1], sc), e.line); }
        case E::slice: {
          Value o = eval(*e.args[0], sc);
          Value p[3];
          for (int i = 0; i < 3; ++i) if (e.args[i + 1]) p[i] = eval(*e.args[i + 1], sc);
          return slice(o, e.args[1] ? &p[0] : nullptr, e.args[2] ? &p[1] : nullptr, e.args[3] ? &p[2] : nullptr, e.line);
        }
        case E::call: {
          Value fn = eval(*e.args[0], sc);
          CallArgs a = eval_args(e, 1, sc);
          return call(fn, a, e.line);
        }
        case E::filter: {
          Value v = eval(*e.args[0], sc);
          CallArgs a = eval_args(e, 1, sc);
          return apply_filter(e.name, v, a, sc);
        }
        case E::test: {
          Value v = eval(*e.args[0], sc);
          CallArgs a = eval_args(e, 1, sc);
          bool r = apply_test(e.name, v, a);
          return Value::from(e.negated ? !r : r);
        }
        case E::neg: case E::pos: {
          Value v = eval(*e.args[0], sc);
          if (!v.is_number()) fail(e.line, "bad operand type for unary " + std::string(e.kind == E::neg ? "-" : "+") + ": '" + type_name(v) + "'");
          if (e.kind == E::pos) return v.kind == Kind::boolean ? Value::from(v.as_int()) : v;
          if (v.kind == Kind::floating) return Value::from(-v.floating);
          if (v.as_int() == INT64_MIN) unsupported(e.line, "integers beyond 64 bits");
          return Value::from(-v.as_int());
        }
        case E::binary: {
          Value a = eval(*e.args[0], sc), b = eval(*e.args[1], sc);
          return binary(e.name, a, b, e.line);
        }
        case E::compare: {
          Value left = eval(*e.args[0], sc);
          for (std::size_t i = 0; i < e.ops.size(); ++i) {
            Value right = eval(*e.args[i + 1], sc);
            if (!compare(e.ops[i], left, right, e.line)) return Value::from(false);
            left = std::move(right);
          }
          return Value::from(true);
        }
        case E::and_: { Value a = eval(*e.args[0], sc); return truthy(a) ? eval(*e.args[1], sc) : a; }
        case E::or_: { Value a = eval(*e.args[0], sc); return truthy(a) ? a : eval(*e.args[1], sc); }
        case E::not_: return Value::from(!truthy(eval(*e.args[0], sc)));
        case E::cond:
          if (truthy(eval(*e.args[0], sc))) return eval(*e.args[1], sc);
          return e.args[2] ? eval(*e.args[2], sc) : Value::undefined("the inline if-expression evaluated to false and no else section was defined");
        case E::list: case E::tuple: {
          std::vector<Value> items;
          for (auto& x : e.args) items.push_back(eval(*x, sc));
          return e.kind == E::tuple ? Value::tuple(std::move(items)) : Value::from(std::move(items));
        }
        case E::dict: {
          Value d = Value::new_dict();
          for (std::size_t i = 0; i + 1 < e.args.size(); i += 2) {
            Value k = eval(*e.args[i], sc);
            if (k.kind == Kind::list || k.kind == Kind::dict || k.is_undefined()) fail(e.line, "unhashable dict key: " + type_name(k));
            d.dict->set(std::move(k), eval(*e.args[i + 1], sc));
          }
          return d;
        }
      }
      return {};
    }

    static bool contains(const Value& hay, const Value& needle, int line) {
      switch (hay.kind) {
        case Kind::undefined: return false;
        case Kind::string:
          if (needle.kind != Kind::string) fail(line, "'in <string>' requires string as left operand, not " + type_name(needle));
          return hay.string.find(needle.string) != std::string::npos;
        case Kind::list:
          for (auto& x : *hay.list) if (equal(x, needle)) return true;
          return false;
        case Kind::dict: return hay.dict->find(needle) != nullptr;
        default: fail(line, "argument of type '" + type_name(hay) + "' is not iterable");
      }
    }

    // Python ordering (<): numbers, strings, lists lexicographically.
    static int order(const Value& a, const Value& b, int line) {
      if (a.is_number() && b.is_number()) {
        if (a.kind != Kind::floating && b.kind != Kind::floating) return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int();
        double x = a.as_double(), y = b.as_double();
        return x < y ? -1 : x > y ? 1 : 0;
      }
      if (a.kind == Kind::string && b.kind == Kind::string) return a.string < b.string ? -1 : a.string > b.string;
      if (a.kind == Kind::list && b.kind == Kind::list) {
        for (std::size_t i = 0; i < a.list->size() && i < b.list->size(); ++i) {
          if (equal((*a.list)[i], (*b.list)[i])) continue;
          return order((*a.list)[i], (*b.list)[i], line);
        }
        return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size();
      }
      if (a.is_undefined()) undefined_error(a, line);
      if (b.is_undefined()) undefined_error(b, line);
      fail(line, "'<' not supported between instances of '" + type_name(a) + "' and '" + type_name(b) + "'");
    }

    static bool compare(const std::string& op, const Value& a, const Value& b, int line) {
      if (op == "==") return equal(a, b);
      if (op == "!=") return !equal(a, b);
      if (op == "in") return contains(b, a, line);
      if (op == "not in") return !contains(b, a, line);
      int c = order(a, b, line);
      if (op == "<") return c < 0;
      if (op == ">") return c > 0;
      if (op == "<=") return c <= 0;
      return c >= 0;
    }

    Value repeat(const Value& seq, std::int64_t times, int line) {
      if (times <= 0) return seq.kind == Kind::string ? Value::from("") : Value::from(std::vector<Value>{});
      std::size_t unit = seq.kind == Kind::string ? seq.string.size() : seq.list->size();
      if (unit && static_cast<std::uint64_t>(times) > lim.max_items / unit) fail(line, "repetition result too large");
      if (seq.kind == Kind::string) { std::string r; for (std::int64_t i = 0; i < times; ++i) r += seq.string; return Value::from(std::move(r)); }
      std::vector<Value> r;
      for (std::int64_t i = 0; i < times; ++i) r.insert(r.end(), seq.list->begin(), seq.list->end());
      return Value::from(std::move(r));
    }

    Value binary(const std::string& op, const Value& a, const Value& b, int line) {
      if (op == "~") {
        std::string r = python_str(a) + python_str(b);
        if (r.size() > lim.max_output_bytes) fail(line, "string too large");
        return Value::from(std::move(r));
      }
      if (a.is_undefined() && !(op == "*" && false)) undefined_error(a, line);
      if (b.is_undefined()) undefined_error(b, line);
      auto type_error = [&]() -> Value {
        fail(line, "unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
      };
      if (op == "+") {
        if (a.kind == Kind::string && b.kind == Kind::string) {
          if (a.string.size() + b.string.size() > lim.max_output_bytes) fail(line, "string too large");
          return Value::from(a.string + b.string);
        }
        if (a.kind == Kind::list && b.kind == Kind::list) {
          if (a.list->size() + b.list->size() > lim.max_items) fail(line, "list too large");
          std::vector<Value> r = *a.list; r.insert(r.end(), b.list->begin(), b.list->end()); return Value::from(std::move(r));
        }
        if (a.kind == Kind::string || a.kind == Kind::list)
          fail(line, "can only concatenate " + type_name(a) + " (not \"" + type_name(b) + "\") to " + type_name(a));
      }
      if (op == "*") {
        if ((a.kind == Kind::string || a.kind == Kind::list) && (b.kind == Kind::integer || b.kind == Kind::boolean)) return repeat(a, b.as_int(), line);
        if ((b.kind == Kind::string || b.kind == Kind::list) && (a.kind == Kind::integer || a.kind == Kind::boolean)) return repeat(b, a.as_int(), line);
      }
      if (op == "%" && a.kind == Kind::string) {
        CallArgs args; args.line = line;
        if (b.kind == Kind::list && b.is_tuple) args.positional = *b.list; else args.positional.push_back(b);
        return Value::from(percent_format(a.string, args));
      }
      if (!a.is_number() || !b.is_number()) return type_error();
      bool ints = a.kind != Kind::floating && b.kind != Kind::floating;
      std::int64_t x = a.as_int(), y = b.as_int();
      double fx = a.as_double(), fy = b.as_double();
      auto overflow = [&]() -> Value { unsupported(line, "integers beyond 64 bits"); };
      if (op == "+") { if (!ints) return Value::from(fx + fy); std::int64_t r; if (__builtin_add_overflow(x, y, &r)) return overflow(); return Value::from(r); }
      if (op == "-") { if (!ints) return Value::from(fx - fy); std::int64_t r; if (__builtin_sub_overflow(x, y, &r)) return overflow(); return Value::from(r); }
      if (op == "*") { if (!ints) return Value::from(fx * fy); std::int64_t r; if (__builtin_mul_overflow(x, y, &r)) return overflow(); return Value::from(r); }
      if (op == "/") { if (fy == 0) fail(line, "division by zero"); return Value::from(fx / fy); }
      if (op == "//" || op == "%") {
        if (ints) {
          if (y == 0) fail(line, "integer division or modulo by zero");
          if (x == INT64_MIN && y == -1) return overflow();
          std::int64_t q = x / y, r = x % y;
          if (r != 0 && ((r < 0) != (y < 0))) { q -= 1; r += y; }
          return Value::from(op == "//" ? q : r);
        }
        if (fy == 0) fail(line, "float division by zero");
        double r = std::fmod(fx, fy);
        if (r != 0 && ((r < 0) != (fy < 0))) r += fy;
        if (op == "%") return Value::from(r);
        return Value::from(std::floor((fx - r) / fy + 0.0));
      }
      if (op == "**") {
        if (ints && y >= 0) {
          std::int64_t r = 1;
          for (std::int64_t i = 0; i < y; ++i) { if (__builtin_mul_overflow(r, x, &r)) return overflow(); if (r == 0 || r == 1) break; }
          if (x == -1) r = (y % 2) ? -1 : 1;
          return Value::from(r);
        }
        return Value::from(std::pow(fx, fy));
      }
      return type_error();
    }

    // Python's printf-style formatting: %s %r %d %i %f %.Nf %%.
    std::string percent_format(const std::string& fmt, const CallArgs& a) {
      std::string r;
      std::size_t k = 0;
      for (std::size_t i = 0; i < fmt.size(); ++i) {
        if (fmt[i] != '%') { r += fmt[i]; continue; }
        if (++i >= fmt.size()) fail(a.line, "incomplete format");
        if (fmt[i] == '%') { r += '%'; continue; }
        std::string spec = "%";
        while (i < fmt.size() && std::strchr("-+ #0123456789.", fmt[i])) spec += fmt[i++];
        if (i >= fmt.size()) fail(a.line, "incomplete format");
        char c = fmt[i];
        if (k >= a.positional.size()) fail(a.line, "not enough arguments for format string");
        const Value& v = a.positional[k++];
        char buf[512];
        if (c == 's' || c == 'r') {
          std::string s = c == 's' ? python_str(v) : python_repr(v);
          if (spec.size() > 1) { std::snprintf(buf, sizeof buf, (spec + "s").c_str(), s.c_str()); r += buf; } else r += s;
        } else if (c == 'd' || c == 'i') {
          if (!v.is_number()) fail(a.line, "%d format: a real number is required, not " + type_name(v));
          std::snprintf(buf, sizeof buf, (spec + "lld").c_str(), static_cast<long long>(v.kind == Kind::floating ? static_cast<std::int64_t>(v.floating) : v.as_int()));
          r += buf;
        } else if (c == 'f' || c == 'e' || c == 'g') {
          if (!v.is_number()) fail(a.line, "%f format: a real number is required, not " + type_name(v));
          if (spec.size() > 20) fail(a.line, "format spec too long");
          std::snprintf(buf, sizeof buf, (spec + c).c_str(), v.as_double());
          r += buf;
        } else unsupported(a.line, std::string("format conversion '%") + c + "'");
      }
      if (k < a.positional.size()) fail(a.line, "not all arguments converted during string formatting");
      return r;
    }

    // str.format with {} / {0} / {name} fields (no format specs).
    std::string brace_format(const std::string& fmt, const CallArgs& a) {
      std::string r;
      std::size_t auto_idx = 0;
      for (std::size_t i = 0; i < fmt.size(); ++i) {
        char c = fmt[i];
        if (c == '{' && i + 1 < fmt.size() && fmt[i + 1] == '{') { r += '{'; ++i; continue; }
        if (c == '}' && i + 1 < fmt.size() && fmt[i + 1] == '}') { r += '}'; ++i; continue; }
        if (c == '}') fail(a.line, "Single '}' encountered in format string");
        if (c != '{') { r += c; continue; }
        auto close = fmt.find('}', i);
        if (close == std::string::npos) fail(a.line, "Single '{' encountered in format string");
        std::string field = fmt.substr(i + 1, close - i - 1);
        if (field.find_first_of(":!.[") != std::string::npos) unsupported(a.line, "str.format conversions and format specs");
        const Value* v = nullptr;
        if (field.empty()) v = auto_idx < a.positional.size() ? &a.positional[auto_idx++] : nullptr;
        else if (std::all_of(field.begin(), field.end(), [](char d) { return std::isdigit(static_cast<unsigned char>(d)); })) {
          std::size_t n = std::stoul(field.substr(0, 6));
          v = n < a.positional.size() ? &a.positional[n] : nullptr;
        } else {
          for (auto& [k, x] : a.keyword) if (k == field) v = &x;
        }
        if (!v) fail(a.line, "str.format: no argument for field {" + field + "}");
        r += python_str(*v);
        i = close;
      }
      return r;
    }

    Value apply_filter(const std::string& name, const Value& v, CallArgs& a, const std::shared_ptr<Scope>& sc);
    bool apply_test(const std::string& name, const Value& v, CallArgs& a);
  };
};

// ---- string helpers shared by methods and filters
namespace detail {
inline std::string strip(const std::string& s, const Value* chars, bool left, bool right) {
  auto cps = decode_utf8(s);
  std::vector<std::uint32_t> set;
  bool ws = !chars || chars->kind == Kind::none;
  if (!ws) set = decode_utf8(chars->string);
  auto strip_it = [&](std::uint32_t c) { return ws ? is_space(c) : std::find(set.begin(), set.end(), c) != set.end(); };
  std::size_t b = 0, e = cps.size();
  if (left) while (b < e && strip_it(cps[b])) ++b;
  if (right) while (e > b && strip_it(cps[e - 1])) --e;
  return encode_utf8(cps, b, e);
}
// ASCII case mapping (Python maps all of Unicode; templates apply these to role names and keywords).
inline std::string lower(std::string s) { for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c))); return s; }
inline std::string upper(std::string s) { for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c))); return s; }
inline bool is_alpha(char c) { return std::isalpha(static_cast<unsigned char>(c)) || static_cast<unsigned char>(c) >= 0x80; }
// Python str.title(): a letter after a non-letter is upper-cased, others lower-cased.
inline std::string py_title(const std::string& s) {
  std::string r; bool prev = false;
  for (char c : s) { r += prev ? static_cast<char>(std::tolower(static_cast<unsigned char>(c))) : static_cast<char>(std::toupper(static_cast<unsigned char>(c))); prev = is_alpha(c); }
  return r;
}
inline std::string capitalize(const std::string& s) {
  std::string r = lower(s);
  if (!r.empty()) r[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(r[0])));
  return r;
}
inline std::string replace(const std::string& s, const std::string& from, const std::string& to, std::int64_t count, std::size_t max_bytes) {
  std::string r;
  if (from.empty()) {  // Python inserts `to` between every code point
    auto cps = decode_utf8(s);
    std::int64_t done = 0;
    for (std::size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) { r += to; ++done; }
      if (i < cps.size()) append_utf8(r, cps[i]);
      if (r.size() > max_bytes) throw Error("replace: result too large");
    }
    return r;
  }
  std::size_t pos = 0;
  std::int64_t done = 0;
  while (count < 0 || done < count) {
    auto f = s.find(from, pos);
    if (f == std::string::npos) break;
    r.append(s, pos, f - pos);
    r += to;
    if (r.size() > max_bytes) throw Error("replace: result too large");
    pos = f + from.size();
    ++done;
  }
  r.append(s, pos);
  return r;
}
}  // namespace detail

inline Value Template::Render::method(const Value& obj, const std::string& name, int line) {
  (void)line;
  Render* self = this;
  auto bind = [&](auto fn) { Value o = obj; return Value::from(name, [o, fn, self](CallArgs& a) -> Value { return fn(*self, o, a); }); };
  auto str_arg = [](const CallArgs& a, std::size_t i, const char* n, const char* fn) -> const std::string& {
    const Value* v = a.get(i, n);
    if (!v || v->kind != Kind::string) fail(a.line, std::string(fn) + "() argument must be str");
    return v->string;
  };
  if (obj.kind == Kind::string) {
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      bool l = name != "rstrip", r = name != "lstrip";
      return bind([l, r](Render&, const Value& o, CallArgs& a) {
        const Value* c = a.get(0, "chars");
        if (c && c->kind != Kind::string && c->kind != Kind::none) fail(a.line, "strip arg must be None or str");
        return Value::from(detail::strip(o.string, c, l, r));
      });
    }
    if (name == "lower") return bind([](Render&, const Value& o, CallArgs&) { return Value::from(detail::lower(o.string)); });
    if (name == "upper") return bind([](Render&, const Value& o, CallArgs&) { return Value::from(detail::upper(o.string)); });
    if (name == "title") return bind([](Render&, const Value& o, CallArgs&) { return Value::from(detail::py_title(o.string)); });
    if (name == "capitalize") return bind([](Render&, const Value& o, CallArgs&) { return Value::from(detail::capitalize(o.string)); });
    if (name == "startswith" || name == "endswith") {
      bool start = name == "startswith";
      return bind([start](Render&, const Value& o, CallArgs& a) {
        const Value* p = a.get(0, "prefix");
        if (!p) fail(a.line, "startswith/endswith takes at least 1 argument");
        std::vector<Value> opts = p->kind == Kind::list ? *p->list : std::vector<Value>{*p};
        for (auto& x : opts) {
          if (x.kind != Kind::string) fail(a.line, "startswith/endswith first arg must be str or a tuple of str");
          const std::string& s = o.string;
          if (start ? s.compare(0, x.string.size(), x.string) == 0 && s.size() >= x.string.size()
                    : s.size() >= x.string.size() && s.compare(s.size() - x.string.size(), x.string.size(), x.string) == 0)
            return Value::from(true);
        }
        return Value::from(false);
      });
    }
    if (name == "split" || name == "rsplit") {
      bool rs = name == "rsplit";
      return bind([rs](Render& R, const Value& o, CallArgs& a) {
        const Value* sep = a.get(0, "sep");
        const Value* mx = a.get(1, "maxsplit");
        std::int64_t maxsplit = mx && mx->kind != Kind::none ? mx->as_int() : -1;
        std::vector<Value> parts;
        if (!sep || sep->kind == Kind::none) {  // runs of whitespace, no empty parts
          if (rs && maxsplit >= 0) unsupported(a.line, "rsplit() with maxsplit and no separator");
          auto cps = decode_utf8(o.string);
          std::size_t i = 0;
          while (i < cps.size()) {
            while (i < cps.size() && is_space(cps[i])) ++i;
            if (i >= cps.size()) break;
            if (maxsplit >= 0 && static_cast<std::int64_t>(parts.size()) == maxsplit) {
              std::size_t e = cps.size();
              while (e > i && is_space(cps[e - 1])) --e;
              parts.push_back(Value::from(encode_utf8(cps, i, e)));
              break;
            }
            std::size_t j = i;
            while (j < cps.size() && !is_space(cps[j])) ++j;
            parts.push_back(Value::from(encode_utf8(cps, i, j)));
            i = j;
          }
          return Value::from(std::move(parts));
        }
        if (sep->kind != Kind::string) fail(a.line, "split() separator must be str or None");
        if (sep->string.empty()) fail(a.line, "empty separator");
        const std::string& s = o.string; const std::string& p = sep->string;
        if (!rs) {
          std::size_t pos = 0;
          while (maxsplit < 0 || static_cast<std::int64_t>(parts.size()) < maxsplit) {
            auto f = s.find(p, pos);
            if (f == std::string::npos) break;
            parts.push_back(Value::from(s.substr(pos, f - pos)));
            pos = f + p.size();
            R.step(a.line);
          }
          parts.push_back(Value::from(s.substr(pos)));
        } else {
          std::size_t end = s.size();
          std::vector<Value> rev;
          while (maxsplit < 0 || static_cast<std::int64_t>(rev.size()) < maxsplit) {
            if (end < p.size()) break;
            auto f = s.rfind(p, end - p.size());
            if (f == std::string::npos) break;
            rev.push_back(Value::from(s.substr(f + p.size(), end - f - p.size())));
            end = f;
            R.step(a.line);
          }
          rev.push_back(Value::from(s.substr(0, end)));
          parts.assign(rev.rbegin(), rev.rend());
        }
        return Value::from(std::move(parts));
      });
    }
    if (name == "splitlines") {
      return bind([](Render&, const Value& o, CallArgs& a) {
        const Value* keep = a.get(0, "keepends");
        bool keepends = keep && truthy(*keep);
        auto cps = decode_utf8(o.string);
        std::vector<Value> lines;
        std::size_t start = 0;
        for (std::size_t i = 0; i < cps.size(); ++i) {
          std::uint32_t c = cps[i];
          bool br = c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e || c == 0x85 || c == 0x2028 || c == 0x2029;
          if (!br) continue;
          std::size_t end = i;
          if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
          lines.push_back(Value::from(encode_utf8(cps, start, keepends ? i + 1 : end)));
          start = i + 1;
        }
        if (start < cps.size()) lines.push_back(Value::from(encode_utf8(cps, start)));
        return Value::from(std::move(lines));
      });
    }
    if (name == "replace") {
      return bind([str_arg](Render& R, const Value& o, CallArgs& a) {
        const Value* n = a.get(2, "count");
        return Value::from(detail::replace(o.string, str_arg(a, 0, "old", "replace"), str_arg(a, 1, "new", "replace"),
                                           n ? n->as_int() : -1, R.lim.max_output_bytes));
      });
    }
    if (name == "find" || name == "rfind" || name == "count" || name == "index") {
      std::string nm = name;
      return bind([nm, str_arg](Render&, const Value& o, CallArgs& a) {
        const std::string& sub = str_arg(a, 0, "sub", nm.c_str());
        if (a.positional.size() > 1) unsupported(a.line, "str." + nm + "() start/end arguments");
        if (nm == "count") {
          if (sub.empty()) return Value::from(static_cast<std::int64_t>(decode_utf8(o.string).size() + 1));
          std::int64_t n = 0; std::size_t p = 0;
          while ((p = o.string.find(sub, p)) != std::string::npos) { ++n; p += sub.size(); }
          return Value::from(n);
        }
        std::size_t f = nm == "rfind" ? o.string.rfind(sub) : o.string.find(sub);
        if (f == std::string::npos) { if (nm == "index") fail(a.line, "substring not found"); return Value::from(-1); }
        return Value::from(static_cast<std::int64_t>(decode_utf8(o.string.substr(0, f)).size()));
      });
    }
    if (name == "format") return bind([](Render& R, const Value& o, CallArgs& a) { return Value::from(R.brace_format(o.string, a)); });
    if (name == "join") {
      return bind([](Render& R, const Value& o, CallArgs& a) {
        const Value* it = a.get(0, "iterable");
        if (!it) fail(a.line, "join() takes exactly one argument");
        std::string r;
        bool first = true;
        for (auto& x : R.iterate(*it, a.line)) {
          if (x.kind != Kind::string) fail(a.line, "sequence item: expected str instance, " + type_name(x) + " found");
          if (!first) r += o.string;
          first = false;
          r += x.string;
          if (r.size() > R.lim.max_output_bytes) fail(a.line, "join: result too large");
        }
        return Value::from(std::move(r));
      });
    }
    if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum" || name == "isupper" || name == "islower") {
      std::string nm = name;
      return bind([nm](Render&, const Value& o, CallArgs&) {
        const std::string& s = o.string;
        if (s.empty()) return Value::from(false);
        if (nm == "isspace") { for (auto c : decode_utf8(s)) if (!is_space(c)) return Value::from(false); return Value::from(true); }
        if (nm == "isupper" || nm == "islower") {
          bool any = false;
          for (unsigned char c : s) {
            if (std::isalpha(c)) { any = true; if (nm == "isupper" ? std::islower(c) : std::isupper(c)) return Value::from(false); }
          }
          return Value::from(any);
        }
        for (unsigned char c : s) {
          bool ok = nm == "isdigit" ? std::isdigit(c) : nm == "isalpha" ? std::isalpha(c) : std::isalnum(c);
          if (!ok) return Value::from(false);
        }
        return Value::from(true);
      });
    }
    return Value::undefined();
  }
  if (obj.kind == Kind::dict) {
    if (name == "items" || name == "keys" || name == "values") {
      std::string nm = name;
      return bind([nm](Render&, const Value& o, CallArgs&) {
        std::vector<Value> r;
        for (auto& [k, v] : o.dict->entries) {
          if (nm == "items") r.push_back(Value::tuple(std::vector<Value>{k, v}));
          else r.push_back(nm == "keys" ? k : v);
        }
        return Value::from(std::move(r));
      });
    }
    if (name == "get") {
      return bind([](Render&, const Value& o, CallArgs& a) {
        const Value* k = a.get(0, "key");
        if (!k) fail(a.line, "get expected at least 1 argument");
        if (const Value* v = o.dict->find(*k)) return *v;
        const Value* d = a.get(1, "default");
        return d ? *d : Value::none();
      });
    }
    if (name == "pop" || name == "update" || name == "setdefault" || name == "clear" || name == "popitem" || name == "copy")
      return bind([name](Render&, const Value&, CallArgs& a) -> Value { fail(a.line, "access to dict." + name + "() is not safe in the sandbox (immutable)"); });
    return Value::undefined();
  }
  if (obj.kind == Kind::list) {
    if (name == "append" || name == "pop" || name == "extend" || name == "insert" || name == "remove" || name == "sort" || name == "reverse" || name == "clear")
      return bind([name](Render&, const Value&, CallArgs& a) -> Value { fail(a.line, "access to list." + name + "() is not safe in the sandbox (immutable)"); });
    if (name == "index" || name == "count") {
      std::string nm = name;
      return bind([nm](Render&, const Value& o, CallArgs& a) {
        const Value* x = a.get(0, "value");
        if (!x) fail(a.line, "list." + nm + "() takes exactly one argument");
        std::int64_t n = 0;
        for (std::size_t i = 0; i < o.list->size(); ++i) {
          if (!equal((*o.list)[i], *x)) continue;
          if (nm == "index") return Value::from(static_cast<std::int64_t>(i));
          ++n;
        }
        if (nm == "index") fail(a.line, python_repr(*x) + " is not in list");
        return Value::from(n);
      });
    }
  }
  return Value::undefined();
}

inline bool Template::Render::apply_test(const std::string& name, const Value& v, CallArgs& a) {
  auto arg = [&]() -> const Value& {
    if (a.positional.empty()) fail(a.line, "test '" + name + "' needs an argument");
    return a.positional[0];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.kind == Kind::none;
  if (name == "string") return v.kind == Kind::string;
  if (name == "mapping") return v.kind == Kind::dict;
  if (name == "iterable") return v.kind == Kind::list || v.kind == Kind::dict || v.kind == Kind::string || v.is_undefined();
  if (name == "sequence") return v.kind == Kind::list || v.kind == Kind::dict || v.kind == Kind::string || v.is_undefined();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.kind == Kind::integer;
  if (name == "float") return v.kind == Kind::floating;
  if (name == "boolean") return v.kind == Kind::boolean;
  if (name == "true") return v.kind == Kind::boolean && v.boolean;
  if (name == "false") return v.kind == Kind::boolean && !v.boolean;
  if (name == "callable") return v.kind == Kind::function;
  if (name == "lower") return v.kind == Kind::string && detail::lower(v.string) == v.string;
  if (name == "upper") return v.kind == Kind::string && detail::upper(v.string) == v.string;
  if (name == "in") return contains(arg(), v, a.line);
  if (name == "equalto" || name == "eq" || name == "==") return equal(v, arg());
  if (name == "ne" || name == "!=") return !equal(v, arg());
  if (name == "sameas") {
    const Value& o = arg();
    if (v.kind != o.kind) return false;
    if (v.kind == Kind::none || v.kind == Kind::undefined) return true;
    if (v.kind == Kind::boolean) return v.boolean == o.boolean;
    if (v.kind == Kind::list) return v.list == o.list;
    if (v.kind == Kind::dict) return v.dict == o.dict;
    return equal(v, o);
  }
  if (name == "lt" || name == "lessthan") return order(v, arg(), a.line) < 0;
  if (name == "le") return order(v, arg(), a.line) <= 0;
  if (name == "gt" || name == "greaterthan") return order(v, arg(), a.line) > 0;
  if (name == "ge") return order(v, arg(), a.line) >= 0;
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (v.is_undefined()) undefined_error(v, a.line);
    if (!v.is_number()) fail(a.line, "test '" + name + "' needs a number, not " + type_name(v));
    if (v.kind == Kind::floating) {  // Python: value % 2 == 1 (odd) / == 0 (even), floats too
      double m = std::fmod(v.floating, 2.0);
      if (m < 0) m += 2.0;
      if (name == "odd") return m == 1.0;
      if (name == "even") return m == 0.0;
      unsupported(a.line, "divisibleby on floats");
    }
    std::int64_t x = v.as_int();
    if (name == "odd") return x % 2 != 0;
    if (name == "even") return x % 2 == 0;
    const Value& d = arg();
    if (d.kind != Kind::integer || d.integer == 0) fail(a.line, "divisibleby needs a non-zero integer");
    return x % d.integer == 0;
  }
  unsupported(a.line, "test '" + name + "'");
}

inline Value Template::Render::apply_filter(const std::string& name, const Value& v, CallArgs& a, const std::shared_ptr<Scope>& sc) {
  const int line = a.line;
  auto str_of = [&](const Value& x) { return python_str(x); };
  auto flag = [&](std::size_t i, const char* n, bool dflt) { const Value* x = a.get(i, n); return x ? truthy(*x) : dflt; };
  // attribute="a.b" or an integer index, as Jinja's make_attrgetter.
  auto attr_of = [&](const Value& item, const Value& attr) {
    if (attr.kind == Kind::integer) return getitem(item, attr, line);
    std::string path = python_str(attr);
    Value cur = item;
    std::size_t p = 0;
    while (true) {
      auto dot = path.find('.', p);
      std::string part = path.substr(p, dot == std::string::npos ? std::string::npos : dot - p);
      bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
      cur = digits ? getitem(cur, Value::from(static_cast<std::int64_t>(std::stoll(part.substr(0, 18)))), line) : getitem(cur, Value::from(part), line);
      if (dot == std::string::npos) return cur;
      p = dot + 1;
    }
  };
  if (name == "safe" || name == "string") return name == "safe" ? v : Value::from(str_of(v));
  if (name == "trim") return Value::from(detail::strip(str_of(v), a.get(0, "chars"), true, true));
  if (name == "lower") return Value::from(detail::lower(str_of(v)));
  if (name == "upper") return Value::from(detail::upper(str_of(v)));
  if (name == "capitalize") return Value::from(detail::capitalize(str_of(v)));
  if (name == "title") {  // Jinja's own: words split at [-\s({\[<]+
    auto cps = decode_utf8(str_of(v));
    std::string r;
    bool word_start = true;
    for (auto c : cps) {
      bool sep = is_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
      if (sep) { append_utf8(r, c); word_start = true; continue; }
      if (c < 0x80) r += static_cast<char>(word_start ? std::toupper(static_cast<int>(c)) : std::tolower(static_cast<int>(c)));
      else append_utf8(r, c);
      word_start = false;
    }
    return Value::from(std::move(r));
  }
  if (name == "e" || name == "escape") {
    if (v.kind == Kind::undefined) return Value::from("");
    std::string r;
    for (char c : str_of(v)) {
      switch (c) { case '&': r += "&amp;"; break; case '<': r += "&lt;"; break; case '>': r += "&gt;"; break;
                   case '"': r += "&#34;"; break; case '\'': r += "&#39;"; break; default: r += c; }
    }
    return Value::from(std::move(r));
  }
  if (name == "replace") {
    const Value* from = a.get(0, "old");
    const Value* to = a.get(1, "new");
    const Value* n = a.get(2, "count");
    if (!from || !to) fail(line, "replace filter needs old and new");
    return Value::from(detail::replace(str_of(v), str_of(*from), str_of(*to), n && n->kind != Kind::none ? n->as_int() : -1, lim.max_output_bytes));
  }
  if (name == "length" || name == "count") {
    switch (v.kind) {
      case Kind::undefined: return Value::from(0);
      case Kind::string: return Value::from(static_cast<std::int64_t>(decode_utf8(v.string).size()));
      case Kind::list: return Value::from(static_cast<std::int64_t>(v.list->size()));
      case Kind::dict: return Value::from(static_cast<std::int64_t>(v.dict->entries.size()));
      default: fail(line, "object of type '" + type_name(v) + "' has no len()");
    }
  }
  if (name == "tojson") {
    JsonStyle st;
    const Value* ind = a.get(1, "indent");
    if (a.positional.size() >= 1 || a.get(99, "ensure_ascii")) {
      const Value* ea = a.get(0, "ensure_ascii");
      if (ea && truthy(*ea)) unsupported(line, "tojson(ensure_ascii=True)");
    }
    if (ind && ind->kind != Kind::none) {
      st.indent_on = true;
      if (ind->kind == Kind::string) st.indent = ind->string;
      else if (ind->kind == Kind::integer) st.indent = std::string(static_cast<std::size_t>(std::clamp<std::int64_t>(ind->integer, 0, 64)), ' ');
      else fail(line, "tojson indent must be an integer or a string");
      st.item_sep = ",";
    }
    if (const Value* sep = a.get(2, "separators"); sep && sep->kind != Kind::none) {
      if (sep->kind != Kind::list || sep->list->size() != 2 || (*sep->list)[0].kind != Kind::string || (*sep->list)[1].kind != Kind::string)
        fail(line, "tojson separators must be an (item_separator, key_separator) pair of strings");
      st.item_sep = (*sep->list)[0].string;
      st.key_sep = (*sep->list)[1].string;
    }
    st.sort_keys = flag(3, "sort_keys", false);
    std::string r;
    try { json_dump(r, v, st, 0, lim.max_output_bytes); } catch (const Error& e) { fail(line, e.what()); }
    return Value::from(std::move(r));
  }
  if (name == "join") {
    const Value* sep = a.get(0, "d");
    const Value* attr = a.get(1, "attribute");
    std::string r, s = sep ? str_of(*sep) : "";
    bool first = true;
    for (auto& x : iterate(v, line)) {
      if (!first) r += s;
      first = false;
      r += str_of(attr ? attr_of(x, *attr) : x);
      if (r.size() > lim.max_output_bytes) fail(line, "join: result too large");
    }
    return Value::from(std::move(r));
  }
  if (name == "first" || name == "last") {
    if (v.kind == Kind::list && !v.list->empty()) return name == "first" ? v.list->front() : v.list->back();
    auto items = iterate(v, line);
    if (items.empty()) return Value::undefined("No first item, sequence was empty.");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "default" || name == "d") {
    const Value* dv = a.get(0, "default_value");
    bool boolean = flag(1, "boolean", false);
    if (v.is_undefined() || (boolean && !truthy(v))) return dv ? *dv : Value::from("");
    return v;
  }
  if (name == "list") return Value::from(iterate(v, line));  // a tuple becomes a list
  if (name == "items") {
    if (v.is_undefined()) return Value::from(std::vector<Value>{});
    if (v.kind != Kind::dict) fail(line, "items filter: can only get item pairs from a mapping");
    std::vector<Value> r;
    for (auto& [k, x] : v.dict->entries) r.push_back(Value::tuple(std::vector<Value>{k, x}));
    return Value::from(std::move(r));
  }
  if (name == "dictsort") {
    if (v.kind != Kind::dict) fail(line, "dictsort: a mapping is required");
    bool by_value = false;
    if (const Value* b = a.get(2, "by"); b && str_of(*b) == "value") by_value = true;
    std::vector<Value> r;
    for (auto& [k, x] : v.dict->entries) r.push_back(Value::tuple(std::vector<Value>{k, x}));
    std::stable_sort(r.begin(), r.end(), [&](const Value& p, const Value& q) { return order((*p.list)[by_value], (*q.list)[by_value], line) < 0; });
    if (flag(3, "reverse", false)) std::reverse(r.begin(), r.end());
    return Value::from(std::move(r));
  }
  if (name == "reverse") {
    if (v.kind == Kind::string) { auto cps = decode_utf8(v.string); std::reverse(cps.begin(), cps.end()); return Value::from(encode_utf8(cps)); }
    auto items = iterate(v, line);
    std::reverse(items.begin(), items.end());
    return Value::from(std::move(items));
  }
  if (name == "sort" || name == "unique" || name == "min" || name == "max") {
    bool reverse = name == "sort" && flag(0, "reverse", false);
    bool case_sensitive = flag(name == "sort" ? 1 : 0, "case_sensitive", false);
    const Value* attr = a.get(name == "sort" ? 2 : 1, "attribute");
    auto items = iterate(v, line);
    auto key = [&](const Value& x) {
      Value k = attr ? attr_of(x, *attr) : x;
      if (!case_sensitive && k.kind == Kind::string) k.string = detail::lower(k.string);
      return k;
    };
    if (name == "unique") {
      std::vector<Value> r, seen;
      for (auto& x : items) {
        Value k = key(x);
        bool dup = false;
        for (auto& s : seen) if (equal(s, k)) { dup = true; break; }
        if (!dup) { seen.push_back(k); r.push_back(x); }
      }
      return Value::from(std::move(r));
    }
    if (name == "min" || name == "max") {
      if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
      std::size_t best = 0;
      for (std::size_t i = 1; i < items.size(); ++i) {
        int c = order(key(items[i]), key(items[best]), line);
        if (name == "min" ? c < 0 : c > 0) best = i;
      }
      return items[best];
    }
    std::vector<Value> keys;
    for (auto& x : items) keys.push_back(key(x));
    std::vector<std::size_t> idx(items.size());
    for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::stable_sort(idx.begin(), idx.end(), [&](std::size_t p, std::size_t q) {
      return reverse ? order(keys[q], keys[p], line) < 0 : order(keys[p], keys[q], line) < 0;
    });
    std::vector<Value> r;
    for (auto i : idx) r.push_back(items[i]);
    return Value::from(std::move(r));
  }
  if (name == "sum") {
    const Value* attr = a.get(0, "attribute");
    const Value* start = a.get(1, "start");
    Value total = start ? *start : Value::from(0);
    for (auto& x : iterate(v, line)) total = binary("+", total, attr ? attr_of(x, *attr) : x, line);
    return total;
  }
  if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
    bool by_attr = name == "selectattr" || name == "rejectattr";
    bool keep_true = name == "selectattr" || name == "select";
    std::size_t ti = by_attr ? 1 : 0;
    if (by_attr && a.positional.empty()) fail(line, name + " needs an attribute name");
    std::string test = a.positional.size() > ti ? str_of(a.positional[ti]) : "";
    if (!test.empty() && !known_test(test)) unsupported(line, "test '" + test + "'");
    CallArgs targs;
    targs.line = line;
    for (std::size_t i = ti + 1; i < a.positional.size(); ++i) targs.positional.push_back(a.positional[i]);
    std::vector<Value> r;
    if (!truthy(v)) return Value::from(std::move(r));  // jinja2's select_or_reject: `if value:`
    for (auto& x : iterate(v, line)) {
      step(line);
      Value subject = by_attr ? attr_of(x, a.positional[0]) : x;
      bool ok = test.empty() ? truthy(subject) : apply_test(test, subject, targs);
      if (ok == keep_true) r.push_back(x);
    }
    return Value::from(std::move(r));
  }
  if (name == "map") {
    std::vector<Value> r;
    const Value* attr = nullptr;
    for (auto& [k, x] : a.keyword) if (k == "attribute") attr = &x;
    if (attr) {
      const Value* dflt = nullptr;
      for (auto& [k, x] : a.keyword) if (k == "default") dflt = &x;
      for (auto& x : iterate(v, line)) {
        Value y = attr_of(x, *attr);
        r.push_back(y.is_undefined() && dflt ? *dflt : y);
      }
      return Value::from(std::move(r));
    }
    if (a.positional.empty()) fail(line, "map needs a filter name or attribute=");
    std::string f = str_of(a.positional[0]);
    if (!known_filter(f) || f == "map") unsupported(line, "filter '" + f + "' in map()");
    CallArgs fargs;
    fargs.line = line;
    fargs.positional.assign(a.positional.begin() + 1, a.positional.end());
    fargs.keyword = a.keyword;
    for (auto& x : iterate(v, line)) { CallArgs c = fargs; r.push_back(apply_filter(f, x, c, sc)); }
    return Value::from(std::move(r));
  }
  if (name == "format") {  // Jinja's format filter is Python's printf-style `s % args`
    if (!a.keyword.empty()) unsupported(line, "format filter with keyword arguments");
    return Value::from(percent_format(str_of(v), a));
  }
  if (name == "attr") {
    const Value* n = a.get(0, "name");
    if (!n) fail(line, "attr needs a name");
    return getattr(v, str_of(*n), line);
  }
  if (name == "indent") {
    const Value* w = a.get(0, "width");
    std::string pad = !w ? "    " : w->kind == Kind::string ? w->string : std::string(static_cast<std::size_t>(std::clamp<std::int64_t>(w->as_int(), 0, 256)), ' ');
    bool first = flag(1, "first", false), blank = flag(2, "blank", false);
    if (v.kind != Kind::string) fail(line, "indent: can only indent a string, not " + type_name(v));
    std::string s = v.string + "\n";  // Jinja appends a newline, splits lines, and drops it again
    std::vector<std::string> lines;
    {
      std::string cur;
      auto cps = decode_utf8(s);
      for (std::size_t i = 0; i < cps.size(); ++i) {
        std::uint32_t c = cps[i];
        bool br = c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e || c == 0x85 || c == 0x2028 || c == 0x2029;
        if (!br) { append_utf8(cur, c); continue; }
        if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
        lines.push_back(cur);
        cur.clear();
      }
      if (!cur.empty()) lines.push_back(cur);
    }
    std::string r;
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (i) r += "\n";
      bool indent_it = i == 0 ? first : (blank || !lines[i].empty());
      if (i == 0 && first && !blank && lines[i].empty()) indent_it = false;
      if (indent_it) r += pad;
      r += lines[i];
      if (r.size() > lim.max_output_bytes) fail(line, "indent: result too large");
    }
    return Value::from(std::move(r));
  }
  if (name == "int" || name == "float") {
    const Value* d = a.get(0, "default");
    Value dflt = d ? *d : (name == "int" ? Value::from(0) : Value::from(0.0));
    if (v.kind == Kind::integer || v.kind == Kind::boolean) return name == "int" ? Value::from(v.as_int()) : Value::from(v.as_double());
    if (v.kind == Kind::floating) {
      if (name == "float") return v;
      if (!std::isfinite(v.floating) || std::fabs(v.floating) > 9.2e18) return dflt;
      return Value::from(static_cast<std::int64_t>(v.floating));
    }
    if (v.kind == Kind::string) {
      std::string s = detail::strip(v.string, nullptr, true, true);
      if (name == "int") {
        std::int64_t x; auto r = std::from_chars(s.data(), s.data() + s.size(), x);
        if (r.ec == std::errc() && r.ptr == s.data() + s.size()) return Value::from(x);
      }
      char* end = nullptr;
      double f = s.empty() ? 0 : std::strtod(s.c_str(), &end);
      if (!s.empty() && end == s.c_str() + s.size()) {
        if (name == "float") return Value::from(f);
        if (std::isfinite(f) && std::fabs(f) < 9.2e18) return Value::from(static_cast<std::int64_t>(f));
      }
    }
    return dflt;
  }
  if (name == "abs") {
    if (v.kind == Kind::floating) return Value::from(std::fabs(v.floating));
    if (v.kind == Kind::integer || v.kind == Kind::boolean) { if (v.as_int() == INT64_MIN) unsupported(line, "integers beyond 64 bits"); return Value::from(v.as_int() < 0 ? -v.as_int() : v.as_int()); }
    fail(line, "bad operand type for abs(): '" + type_name(v) + "'");
  }
  if (name == "round") {
    const Value* p = a.get(0, "precision");
    const Value* m = a.get(1, "method");
    std::int64_t prec = p ? std::clamp<std::int64_t>(p->as_int(), -300, 300) : 0;
    std::string method = m ? str_of(*m) : "common";
    if (!v.is_number()) fail(line, "round filter needs a number");
    if (v.kind != Kind::floating && method == "common" && prec >= 0) return Value::from(v.as_int());  // round(int) is the int
    double x = v.as_double(), scale = std::pow(10.0, static_cast<double>(prec));
    double r;
    if (method == "common") {
      // Python's round(): exact half-to-even; for precision 0 that is nearbyint in the default mode.
      if (prec != 0) unsupported(line, "round(precision != 0) (Python's correctly rounded decimal round)");
      r = std::nearbyint(x);
    } else if (method == "ceil") r = std::ceil(x * scale) / scale;
    else if (method == "floor") r = std::floor(x * scale) / scale;
    else fail(line, "round method must be common, ceil or floor");
    return Value::from(r);
  }
  if (name == "center" || name == "wordcount" || name == "truncate" || name == "striptags" || name == "batch")
    unsupported(line, "filter '" + name + "'");
  (void)sc;
  unsupported(line, "filter '" + name + "'");
}

}  // namespace lvt::text::jinja
