#pragma once
// Jinja2 3.1 lexer and parser into an AST. The lexer follows jinja2/lexer.py's rules with
// trim_blocks and lstrip_blocks on (transformers' environment): `{%-`/`-%}` strip all whitespace,
// `+` keeps it, a block or comment tag alone on its line loses its indentation, and the first
// newline after `%}` or `#}` is dropped. Operator precedence follows jinja2/parser.py.
#include <lvt/text/jinja_value.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace lvt::text::jinja {

[[noreturn]] inline void fail(int line, const std::string& what) {
  throw Error("chat template line " + std::to_string(line) + ": " + what);
}
[[noreturn]] inline void unsupported(int line, const std::string& feature) {
  fail(line, "unsupported Jinja feature: " + feature);
}

enum class Tok : std::uint8_t { data, var_begin, var_end, block_begin, block_end, name, string, integer, floating, op, eof };

struct Token {
  Tok type;
  std::string text;  // data, name, operator, or the decoded string literal
  int line;
  std::int64_t integer = 0;
  double floating = 0;
};

namespace detail {

inline bool space_at(std::string_view s, std::size_t i, std::size_t* len) {
  auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) { *len = 1; return is_space(c); }
  auto cps = decode_utf8(s.substr(i, std::min<std::size_t>(4, s.size() - i)));
  if (cps.empty() || cps[0] >= 0x110000u) { *len = 1; return false; }
  std::string one; append_utf8(one, cps[0]);
  *len = one.size();
  return is_space(cps[0]);
}
inline std::size_t skip_space(std::string_view s, std::size_t i) {
  std::size_t n;
  while (i < s.size() && space_at(s, i, &n)) i += n;
  return i;
}
inline std::string rstrip_space(std::string_view s) {
  auto cps = decode_utf8(s);
  std::size_t end = cps.size();
  while (end > 0 && is_space(cps[end - 1])) --end;
  return encode_utf8(cps, 0, end);
}
inline bool all_space(std::string_view s) {
  if (s.empty()) return false;
  for (auto c : decode_utf8(s)) if (!is_space(c)) return false;
  return true;
}

// Python's "unicode-escape" decoding of a string literal's body.
inline std::string unescape(std::string_view body, int line) {
  std::string out;
  for (std::size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (c != '\\' || i + 1 >= body.size()) { out += c; continue; }
    char e = body[++i];
    auto hex = [&](int n) -> std::uint32_t {
      if (i + n >= body.size() + 0 && i + n > body.size() - 0) {}
      std::uint32_t v = 0;
      for (int k = 0; k < n; ++k) {
        if (i + 1 >= body.size() || !std::isxdigit(static_cast<unsigned char>(body[i + 1])))
          fail(line, "truncated \\x/\\u/\\U escape in a string literal");
        char h = body[++i];
        v = v * 16 + (std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
      }
      return v;
    };
    switch (e) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'v': out += '\v'; break;
      case '\n': break;  // line continuation
      case 'x': append_utf8(out, hex(2)); break;
      case 'u': append_utf8(out, hex(4)); break;
      case 'U': { auto v = hex(8); if (v > 0x10ffff) fail(line, "illegal \\U escape"); append_utf8(out, v); break; }
      case 'N': unsupported(line, "\\N{...} escapes in string literals");
      default:
        if (e >= '0' && e <= '7') {
          int v = e - '0';
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7'; ++k) v = v * 8 + (body[++i] - '0');
          append_utf8(out, static_cast<std::uint32_t>(v));
        } else { out += '\\'; out += e; }
    }
  }
  return out;
}

}  // namespace detail

inline std::vector<Token> tokenize(std::string src) {
  // Newlines normalized to \n and one trailing newline dropped (keep_trailing_newline=False).
  {
    std::string n;
    n.reserve(src.size());
    for (std::size_t i = 0; i < src.size(); ++i) {
      if (src[i] == '\r') { n += '\n'; if (i + 1 < src.size() && src[i + 1] == '\n') ++i; }
      else n += src[i];
    }
    if (!n.empty() && n.back() == '\n') n.pop_back();
    src = std::move(n);
  }
  std::vector<Token> out;
  std::string_view s = src;
  int line = 1;
  std::size_t pos = 0;
  bool line_starting = true;
  auto count_nl = [](std::string_view t) { return static_cast<int>(std::count(t.begin(), t.end(), '\n')); };
  auto emit_data = [&](std::string text, char sign, bool lstrip_ok) {
    if (sign == '-') text = detail::rstrip_space(text);
    else if (sign != '+' && lstrip_ok) {
      std::size_t l_pos = text.rfind('\n');
      l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
      if ((l_pos > 0 || line_starting) && detail::all_space(std::string_view(text).substr(l_pos))) text.resize(l_pos);
    }
    if (!text.empty()) out.push_back({Tok::data, text, line});
  };
  // A block end: `+%}`, `-%}` plus whitespace, or `%}` plus one newline (trim_blocks). Returns the end, or npos.
  auto block_end_at = [&](std::size_t i, std::string_view close) -> std::size_t {
    if (s.substr(i, 1 + close.size()) == std::string("+") + std::string(close)) return i + 1 + close.size();
    if (s.substr(i, 1 + close.size()) == std::string("-") + std::string(close)) return detail::skip_space(s, i + 1 + close.size());
    if (s.substr(i, close.size()) == close) {
      std::size_t e = i + close.size();
      if (close != "}}" && e < s.size() && s[e] == '\n') ++e;
      return e;
    }
    return std::string_view::npos;
  };
  while (pos < s.size()) {
    std::size_t start = s.find('{', pos);
    while (start != std::string_view::npos && start + 1 < s.size() && s[start + 1] != '{' && s[start + 1] != '%' && s[start + 1] != '#')
      start = s.find('{', start + 1);
    if (start == std::string_view::npos || start + 1 >= s.size()) {
      std::string rest(s.substr(pos));
      out.push_back({Tok::data, rest, line});
      line += count_nl(rest);
      break;
    }
    char kind = s[start + 1];
    char sign = start + 2 < s.size() && (s[start + 2] == '-' || s[start + 2] == '+') ? s[start + 2] : 0;
    std::string text(s.substr(pos, start - pos));
    int text_lines = count_nl(text);
    std::size_t after = start + 2 + (sign ? 1 : 0);
    if (kind == '#') {
      emit_data(text, sign, true);
      line += text_lines;
      std::size_t i = after, end = std::string_view::npos;
      for (; i + 1 < s.size(); ++i) if ((end = block_end_at(i, "#}")) != std::string_view::npos) break;
      if (end == std::string_view::npos) fail(line, "missing end of comment tag");
      line += count_nl(s.substr(after, end - after));
      line_starting = s[end - 1] == '\n';
      pos = end;
      continue;
    }
    if (kind == '%') {  // {% raw %} ... {% endraw %}
      std::size_t i = detail::skip_space(s, after);
      if (s.substr(i, 3) == "raw") {
        // `{% raw %}` ends with `-%}` (plus whitespace) or plain `%}`: no trim_blocks newline here
        std::size_t j = detail::skip_space(s, i + 3), e = std::string_view::npos;
        if (s.substr(j, 3) == "-%}") e = detail::skip_space(s, j + 3);
        else if (s.substr(j, 2) == "%}") e = j + 2;
        if (j > i + 3 || s.substr(i + 3, 1) == "-" || s.substr(i + 3, 1) == "%" || s.substr(i + 3, 1) == "+") {
          if (e != std::string_view::npos && s.substr(j, 1) != "+") {
            emit_data(text, sign, true);
            line += text_lines + count_nl(s.substr(start, e - start));
            // find {% endraw %}
            std::size_t k = e;
            while (true) {
              std::size_t b = s.find("{%", k);
              if (b == std::string_view::npos) fail(line, "missing end of raw directive");
              char rs = b + 2 < s.size() && (s[b + 2] == '-' || s[b + 2] == '+') ? s[b + 2] : 0;
              std::size_t q = detail::skip_space(s, b + 2 + (rs ? 1 : 0));
              if (s.substr(q, 6) == "endraw") {
                std::size_t q2 = detail::skip_space(s, q + 6), e2 = block_end_at(q2, "%}");
                if (e2 != std::string_view::npos) {
                  line_starting = false;
                  std::string body(s.substr(e, b - e));
                  emit_data(body, rs, true);
                  line += count_nl(s.substr(e, e2 - e));
                  line_starting = s[e2 - 1] == '\n';
                  pos = e2;
                  break;
                }
              }
              k = b + 2;
            }
            continue;
          }
        }
      }
    }
    emit_data(text, sign, kind == '%');
    line += text_lines;
    bool is_block = kind == '%';
    out.push_back({is_block ? Tok::block_begin : Tok::var_begin, "", line});
    std::string_view close = is_block ? "%}" : "}}";
    std::size_t i = after;
    std::vector<char> balance;
    while (true) {
      if (i >= s.size()) fail(line, is_block ? "unexpected end of template, expected '%}'" : "unexpected end of template, expected '}}'");
      if (balance.empty()) {
        std::size_t e = block_end_at(i, close);
        if (e != std::string_view::npos) {
          out.push_back({is_block ? Tok::block_end : Tok::var_end, "", line});
          line += count_nl(s.substr(i, e - i));
          line_starting = s[e - 1] == '\n';
          pos = e;
          break;
        }
      }
      std::size_t n;
      if (detail::space_at(s, i, &n)) { if (s[i] == '\n') ++line; i += n; continue; }
      char c = s[i];
      auto isdig = [&](std::size_t k) { return k < s.size() && std::isdigit(static_cast<unsigned char>(s[k])); };
      if (std::isdigit(static_cast<unsigned char>(c))) {
        std::size_t j = i;
        auto digits = [&](std::size_t k) {  // (\d+_)*\d+
          if (!isdig(k)) return k;
          while (isdig(k) || (k < s.size() && s[k] == '_' && isdig(k + 1))) ++k;
          return k;
        };
        if (c == '0' && i + 1 < s.size() && std::strchr("xXoObB", s[i + 1]) && s[i + 1] != 0) {
          int base = std::tolower(s[i + 1]) == 'x' ? 16 : std::tolower(s[i + 1]) == 'o' ? 8 : 2;
          std::size_t k = i + 2;
          std::string num;
          while (k < s.size() && (std::isxdigit(static_cast<unsigned char>(s[k])) || s[k] == '_')) { if (s[k] != '_') num += s[k]; ++k; }
          if (num.empty()) fail(line, "invalid integer literal");
          Token t{Tok::integer, std::string(s.substr(i, k - i)), line};
          auto r = std::from_chars(num.data(), num.data() + num.size(), t.integer, base);
          if (r.ec != std::errc() || r.ptr != num.data() + num.size()) fail(line, "integer literal out of range or invalid: " + t.text);
          out.push_back(t);
          i = k;
          continue;
        }
        j = digits(i);
        bool is_float = false;
        std::size_t k = j;
        if (k < s.size() && s[k] == '.' && isdig(k + 1)) { k = digits(k + 1); is_float = true; }
        if (k < s.size() && (s[k] == 'e' || s[k] == 'E')) {
          std::size_t m = k + 1;
          if (m < s.size() && (s[m] == '+' || s[m] == '-')) ++m;
          if (isdig(m)) { k = digits(m); is_float = true; }
        }
        std::string num;
        for (std::size_t q = i; q < k; ++q) if (s[q] != '_') num += s[q];
        Token t{is_float ? Tok::floating : Tok::integer, num, line};
        if (is_float) t.floating = std::strtod(num.c_str(), nullptr);
        else {
          auto r = std::from_chars(num.data(), num.data() + num.size(), t.integer);
          if (r.ec != std::errc()) unsupported(line, "integer literals beyond 64 bits");
        }
        out.push_back(t);
        i = k;
        continue;
      }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        std::size_t j = i;
        while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
        out.push_back({Tok::name, std::string(s.substr(i, j - i)), line});
        i = j;
        continue;
      }
      if (c == '\'' || c == '"') {
        std::size_t j = i + 1;
        while (j < s.size() && s[j] != c) { if (s[j] == '\\') ++j; ++j; }
        if (j >= s.size()) fail(line, "unterminated string literal");
        std::string_view body = s.substr(i + 1, j - i - 1);
        out.push_back({Tok::string, detail::unescape(body, line), line});
        line += count_nl(body);
        i = j + 1;
        continue;
      }
      static const char* ops[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(", ")",
                                  "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"};
      std::string op;
      for (const char* o : ops) if (s.substr(i, std::strlen(o)) == o) { op = o; break; }
      if (op.empty()) fail(line, std::string("unexpected character '") + c + "'");
      if (op == "(" || op == "[" || op == "{") balance.push_back(op == "(" ? ')' : op == "[" ? ']' : '}');
      else if (op == ")" || op == "]" || op == "}") {
        if (balance.empty()) fail(line, "unexpected '" + op + "'");
        if (balance.back() != op[0]) fail(line, "unexpected '" + op + "', expected '" + std::string(1, balance.back()) + "'");
        balance.pop_back();
      }
      out.push_back({Tok::op, op, line});
      i += op.size();
    }
  }
  out.push_back({Tok::eof, "", line});
  return out;
}

// ---- AST
struct Expr;
using ExprPtr = std::unique_ptr<Expr>;
enum class E : std::uint8_t { constant, name, getattr, getitem, slice, call, filter, test, neg, pos, binary, compare, and_, or_, not_, cond, list, tuple, dict };

struct Expr {
  E kind;
  int line;
  Value value;          // constant
  std::string name;     // name, attribute, filter / test name, binary operator
  std::vector<ExprPtr> args;  // operands; call / filter / test positional args
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // compare operators
  bool negated = false;  // `is not`
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;
enum class S : std::uint8_t { text, print, if_, for_, set, set_attr, set_block, macro, break_, continue_, body };

struct Stmt {
  S kind;
  int line;
  std::string text;  // text; set / set_block / macro name; set_attr namespace name
  std::string attr;  // set_attr attribute
  std::vector<std::string> targets;  // for / set targets (several: tuple unpacking)
  ExprPtr expr;      // print, set value, for iterable
  ExprPtr filter;    // for ... if filter
  std::vector<std::pair<ExprPtr, Body>> branches;  // if / elif
  Body body, else_body;
  std::vector<std::string> params;  // macro
  std::vector<ExprPtr> defaults;    // macro, aligned to the last params
  std::vector<std::pair<std::string, std::vector<ExprPtr>>> block_filters;  // set_block `| f`
};

// Names of the filters and tests the evaluator implements; others are errors at parse time, as in Jinja.
bool known_filter(const std::string& name);
bool known_test(const std::string& name);

class Parser {
 public:
  explicit Parser(std::vector<Token> toks, int max_depth = 200) : t_(std::move(toks)), max_depth_(max_depth) {}

  Body parse_template() {
    Body b = parse_body({});
    if (cur().type != Tok::eof) fail(cur().line, "unexpected '" + cur().text + "'");
    return b;
  }

 private:
  std::vector<Token> t_;
  std::size_t p_ = 0;
  int depth_ = 0, max_depth_;
  std::string end_tag_;  // the tag name that ended the last parse_body

  struct Guard {
    Parser& p;
    explicit Guard(Parser& parser) : p(parser) { if (++p.depth_ > p.max_depth_) fail(p.cur().line, "template nested too deeply"); }
    ~Guard() { --p.depth_; }
  };

  const Token& cur() const { return t_[p_]; }
  const Token& peek(std::size_t k = 1) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  bool is_op(const char* o) const { return cur().type == Tok::op && cur().text == o; }
  bool is_name(const char* n) const { return cur().type == Tok::name && cur().text == n; }
  void expect_op(const char* o) {
    if (!is_op(o)) fail(cur().line, std::string("expected '") + o + "', got " + describe());
    ++p_;
  }
  std::string describe() const {
    switch (cur().type) {
      case Tok::eof: return "end of template";
      case Tok::block_end: return "end of statement block";
      case Tok::var_end: return "end of print statement";
      case Tok::data: return "template data";
      default: return "'" + cur().text + "'";
    }
  }
  std::string expect_name() {
    if (cur().type != Tok::name) fail(cur().line, "expected a name, got " + describe());
    return t_[p_++].text;
  }
  void expect_block_end() {
    if (cur().type != Tok::block_end) fail(cur().line, "expected end of statement block, got " + describe());
    ++p_;
  }

  // Statements until a block tag whose name is in `ends`; leaves p_ after that name.
  Body parse_body(const std::vector<std::string>& ends) {
    Guard g(*this);
    Body body;
    while (true) {
      const Token& tk = cur();
      if (tk.type == Tok::eof) {
        if (!ends.empty()) fail(tk.line, "unexpected end of template, expected '" + ends[0] + "'");
        return body;
      }
      if (tk.type == Tok::data) {
        auto s = std::make_unique<Stmt>(); s->kind = S::text; s->line = tk.line; s->text = tk.text;
        body.push_back(std::move(s)); ++p_; continue;
      }
      if (tk.type == Tok::var_begin) {
        ++p_;
        auto s = std::make_unique<Stmt>(); s->kind = S::print; s->line = tk.line; s->expr = parse_tuple(true);
        if (cur().type != Tok::var_end) fail(cur().line, "expected end of print statement, got " + describe());
        ++p_;
        body.push_back(std::move(s));
        continue;
      }
      if (tk.type == Tok::block_begin) {
        const Token& nm = peek();
        if (nm.type == Tok::name && std::find(ends.begin(), ends.end(), nm.text) != ends.end()) {
          p_ += 2;
          end_tag_ = nm.text;
          return body;
        }
        ++p_;
        body.push_back(parse_statement());
        continue;
      }
      fail(tk.line, "unexpected " + describe());
    }
  }

  std::unique_ptr<Stmt> parse_statement() {
    int line = cur().line;
    if (cur().type != Tok::name) fail(line, "tag name expected");
    std::string tag = t_[p_++].text;
    auto s = std::make_unique<Stmt>();
    s->line = line;
    if (tag == "if") {
      s->kind = S::if_;
      ExprPtr cond = parse_tuple(false);
      expect_block_end();
      while (true) {
        Body b = parse_body({"elif", "else", "endif"});
        s->branches.emplace_back(std::move(cond), std::move(b));
        if (end_tag_ == "elif") { cond = parse_tuple(false); expect_block_end(); continue; }
        if (end_tag_ == "else") { expect_block_end(); s->else_body = parse_body({"endif"}); }
        break;
      }
      expect_block_end();
    } else if (tag == "for") {
      s->kind = S::for_;
      s->targets.push_back(expect_name());
      while (is_op(",")) { ++p_; if (is_name("in")) break; s->targets.push_back(expect_name()); }
      if (!is_name("in")) fail(cur().line, "expected 'in', got " + describe());
      ++p_;
      s->expr = parse_tuple(false);
      if (is_name("if")) { ++p_; s->filter = parse_expression(); }
      if (is_name("recursive")) unsupported(cur().line, "recursive for loops");
      expect_block_end();
      s->body = parse_body({"endfor", "else"});
      if (end_tag_ == "else") { expect_block_end(); s->else_body = parse_body({"endfor"}); }
      expect_block_end();
    } else if (tag == "set") {
      std::string first = expect_name();
      if (is_op(".")) {
        ++p_;
        s->kind = S::set_attr; s->text = first; s->attr = expect_name();
        expect_op("=");
        s->expr = parse_tuple(true);
        expect_block_end();
      } else {
        s->targets.push_back(first);
        while (is_op(",")) { ++p_; s->targets.push_back(expect_name()); }
        if (is_op("=")) {
          ++p_;
          s->kind = S::set;
          s->expr = parse_tuple(true);
          expect_block_end();
        } else {
          if (s->targets.size() != 1) fail(line, "expected '='");
          s->kind = S::set_block; s->text = first;
          while (is_op("|")) {
            ++p_;
            std::string f = expect_name();
            if (!known_filter(f)) unsupported(line, "filter '" + f + "'");
            std::vector<ExprPtr> fargs;
            if (is_op("(")) { std::vector<std::pair<std::string, ExprPtr>> kw; parse_call_args(fargs, kw); if (!kw.empty()) unsupported(line, "keyword arguments to block set filters"); }
            s->block_filters.emplace_back(f, std::move(fargs));
          }
          expect_block_end();
          s->body = parse_body({"endset"});
          expect_block_end();
        }
      }
    } else if (tag == "macro") {
      s->kind = S::macro;
      s->text = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        if (!s->params.empty()) expect_op(",");
        if (is_op(")")) break;
        s->params.push_back(expect_name());
        if (is_op("=")) { ++p_; s->defaults.push_back(parse_expression()); }
        else if (!s->defaults.empty()) fail(cur().line, "non-default macro argument follows default argument");
      }
      ++p_;
      expect_block_end();
      s->body = parse_body({"endmacro"});
      if (cur().type == Tok::name) ++p_;  // {% endmacro name %}
      expect_block_end();
    } else if (tag == "break" || tag == "continue") {
      s->kind = tag == "break" ? S::break_ : S::continue_;
      expect_block_end();
    } else if (tag == "generation") {
      // transformers' AssistantTracker extension: renders its body unchanged.
      s->kind = S::body;
      expect_block_end();
      s->body = parse_body({"endgeneration"});
      expect_block_end();
    } else if (tag == "call" || tag == "filter" || tag == "include" || tag == "import" || tag == "from" ||
               tag == "extends" || tag == "block" || tag == "with" || tag == "autoescape" || tag == "do" || tag == "trans") {
      unsupported(line, "'" + tag + "' tag");
    } else {
      fail(line, "unknown tag '" + tag + "'");
    }
    return s;
  }

  ExprPtr node(E kind, int line) { auto e = std::make_unique<Expr>(); e->kind = kind; e->line = line; return e; }

  ExprPtr parse_tuple(bool with_condexpr) {
    int line = cur().line;
    std::vector<ExprPtr> items;
    bool comma = false;
    while (true) {
      if (!items.empty()) { if (!is_op(",")) break; ++p_; comma = true; }
      if (cur().type == Tok::var_end || cur().type == Tok::block_end || is_op(")") || is_name("in") || is_name("if") ||
          is_name("recursive")) {
        if (items.empty()) fail(cur().line, "expected an expression, got " + describe());
        break;
      }
      items.push_back(with_condexpr ? parse_expression() : parse_or());
    }
    if (!comma) return std::move(items[0]);
    auto t = node(E::tuple, line);
    t->args = std::move(items);
    return t;
  }

  ExprPtr parse_expression() {
    Guard g(*this);
    ExprPtr e = parse_or();
    while (is_name("if")) {
      int line = cur().line;
      ++p_;
      auto c = node(E::cond, line);
      ExprPtr test = parse_or();
      ExprPtr other = is_name("else") ? (++p_, parse_expression()) : nullptr;
      c->args.push_back(std::move(test));
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(other));
      e = std::move(c);
    }
    return e;
  }
  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (is_name("or")) { auto n = node(E::or_, cur().line); ++p_; n->args.push_back(std::move(e)); n->args.push_back(parse_and()); e = std::move(n); }
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (is_name("and")) { auto n = node(E::and_, cur().line); ++p_; n->args.push_back(std::move(e)); n->args.push_back(parse_not()); e = std::move(n); }
    return e;
  }
  ExprPtr parse_not() {
    Guard g(*this);
    if (is_name("not")) { auto n = node(E::not_, cur().line); ++p_; n->args.push_back(parse_not()); return n; }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    int line = cur().line;
    ExprPtr e = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == Tok::op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == ">" ||
                                    cur().text == "<=" || cur().text == ">=")) { op = cur().text; ++p_; }
      else if (is_name("in")) { op = "in"; ++p_; }
      else if (is_name("not") && peek().type == Tok::name && peek().text == "in") { op = "not in"; p_ += 2; }
      else break;
      if (!cmp) { cmp = node(E::compare, line); cmp->args.push_back(std::move(e)); }
      cmp->ops.push_back(op);
      cmp->args.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(e);
  }
  ExprPtr binary(std::string op, ExprPtr a, ExprPtr b, int line) {
    auto n = node(E::binary, line); n->name = std::move(op); n->args.push_back(std::move(a)); n->args.push_back(std::move(b)); return n;
  }
  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) { std::string op = cur().text; int l = cur().line; ++p_; e = binary(op.c_str(), std::move(e), parse_concat(), l); }
    return e;
  }
  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (is_op("~")) { int l = cur().line; ++p_; e = binary("~", std::move(e), parse_math2(), l); }
    return e;
  }
  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) { std::string op = cur().text; int l = cur().line; ++p_; e = binary(op.c_str(), std::move(e), parse_pow(), l); }
    return e;
  }
  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (is_op("**")) { int l = cur().line; ++p_; e = binary("**", std::move(e), parse_unary(true), l); }
    return e;
  }
  ExprPtr parse_unary(bool with_filter) {
    Guard g(*this);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      auto n = node(is_op("-") ? E::neg : E::pos, cur().line);
      ++p_;
      n->args.push_back(parse_unary(false));
      e = std::move(n);
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }
  ExprPtr parse_primary() {
    const Token& tk = cur();
    int line = tk.line;
    if (tk.type == Tok::name) {
      ++p_;
      auto c = node(E::constant, line);
      if (tk.text == "true" || tk.text == "True") { c->value = Value::from(true); return c; }
      if (tk.text == "false" || tk.text == "False") { c->value = Value::from(false); return c; }
      if (tk.text == "none" || tk.text == "None") { c->value = Value::none(); return c; }
      auto n = node(E::name, line); n->name = tk.text; return n;
    }
    if (tk.type == Tok::string) {
      std::string s;
      while (cur().type == Tok::string) s += t_[p_++].text;  // adjacent literals concatenate
      auto c = node(E::constant, line); c->value = Value::from(std::move(s)); return c;
    }
    if (tk.type == Tok::integer) { ++p_; auto c = node(E::constant, line); c->value = Value::from(tk.integer); return c; }
    if (tk.type == Tok::floating) { ++p_; auto c = node(E::constant, line); c->value = Value::from(tk.floating); return c; }
    if (is_op("(")) {
      ++p_;
      if (is_op(")")) { ++p_; return node(E::tuple, line); }
      ExprPtr e = parse_tuple(true);
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      ++p_;
      auto l = node(E::list, line);
      while (!is_op("]")) {
        if (!l->args.empty()) expect_op(",");
        if (is_op("]")) break;
        l->args.push_back(parse_expression());
      }
      ++p_;
      return l;
    }
    if (is_op("{")) {
      ++p_;
      auto d = node(E::dict, line);
      while (!is_op("}")) {
        if (!d->args.empty()) expect_op(",");
        if (is_op("}")) break;
        d->args.push_back(parse_expression());
        expect_op(":");
        d->args.push_back(parse_expression());
      }
      ++p_;
      return d;
    }
    fail(line, "unexpected " + describe());
  }
  void parse_call_args(std::vector<ExprPtr>& args, std::vector<std::pair<std::string, ExprPtr>>& kwargs) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) unsupported(cur().line, "*args / **kwargs in calls");
      if (cur().type == Tok::name && peek().type == Tok::op && peek().text == "=") {
        std::string k = t_[p_].text;
        p_ += 2;
        kwargs.emplace_back(k, parse_expression());
      } else {
        if (!kwargs.empty()) fail(cur().line, "positional argument follows keyword argument");
        args.push_back(parse_expression());
      }
    }
    ++p_;
  }
  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      int line = cur().line;
      if (is_op(".")) {
        ++p_;
        if (cur().type == Tok::name) { auto n = node(E::getattr, line); n->name = t_[p_++].text; n->args.push_back(std::move(e)); e = std::move(n); }
        else if (cur().type == Tok::integer) {
          auto n = node(E::getitem, line); auto c = node(E::constant, line); c->value = Value::from(t_[p_++].integer);
          n->args.push_back(std::move(e)); n->args.push_back(std::move(c)); e = std::move(n);
        } else fail(line, "expected a name after '.'");
      } else if (is_op("[")) {
        ++p_;
        ExprPtr parts[3];
        bool slice = false;
        int idx = 0;
        while (!is_op("]")) {
          if (is_op(":")) { slice = true; ++p_; if (++idx > 2) fail(line, "invalid slice"); continue; }
          if (parts[idx]) fail(line, "expected ']'");
          parts[idx] = parse_expression();
          if (is_op(",")) unsupported(line, "tuple subscripts");
        }
        ++p_;
        if (slice) {
          auto n = node(E::slice, line); n->args.push_back(std::move(e));
          for (auto& part : parts) n->args.push_back(std::move(part));
          e = std::move(n);
        } else {
          if (!parts[0]) fail(line, "expected a subscript");
          auto n = node(E::getitem, line); n->args.push_back(std::move(e)); n->args.push_back(std::move(parts[0])); e = std::move(n);
        }
      } else if (is_op("(")) {
        auto n = node(E::call, line);
        n->args.push_back(std::move(e));
        parse_call_args(n->args, n->kwargs);
        e = std::move(n);
      } else {
        return e;
      }
    }
  }
  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      int line = cur().line;
      if (is_op("|")) {
        ++p_;
        auto n = node(E::filter, line);
        n->name = expect_name();
        while (is_op(".")) { ++p_; n->name += '.'; n->name += expect_name(); }
        if (!known_filter(n->name)) unsupported(line, "filter '" + n->name + "'");
        n->args.push_back(std::move(e));
        if (is_op("(")) parse_call_args(n->args, n->kwargs);
        e = std::move(n);
      } else if (is_name("is")) {
        ++p_;
        auto n = node(E::test, line);
        if (is_name("not")) { ++p_; n->negated = true; }
        n->name = expect_name();
        while (is_op(".")) { ++p_; n->name += '.'; n->name += expect_name(); }
        if (!known_test(n->name)) unsupported(line, "test '" + n->name + "'");
        n->args.push_back(std::move(e));
        if (is_op("(")) parse_call_args(n->args, n->kwargs);
        else if ((cur().type == Tok::name || cur().type == Tok::string || cur().type == Tok::integer ||
                  cur().type == Tok::floating || is_op("[") || is_op("{") || is_op("(")) &&
                 !(is_name("else") || is_name("or") || is_name("and"))) {
          if (is_name("is")) fail(line, "you cannot chain multiple tests with is");
          n->args.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(n);
      } else if (is_op("(")) {
        auto n = node(E::call, line);
        n->args.push_back(std::move(e));
        parse_call_args(n->args, n->kwargs);
        e = std::move(n);
      } else {
        return e;
      }
    }
  }
};

}  // namespace lvt::text::jinja
