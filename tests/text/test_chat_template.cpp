// The chat-template interpreter (lvt/text/jinja.hpp) and transformers' environment on top
// (lvt/text/chat_template.hpp): unit tests of the Jinja semantics, then every golden render of
// tools/peers/make_chat_goldens.py (transformers 5.23 + jinja2 3.1.6) byte for byte.
#include <lvt/text/chat_template.hpp>

#include <doctest/doctest.h>

#include <filesystem>
#include <ctime>
#include <fstream>
#include <sstream>

using lvt::text::jinja::Template;
using lvt::text::jinja::Value;

namespace {

std::string render(const std::string& src, std::vector<std::pair<std::string, Value>> vars = {}) {
  return Template(src).render(vars);
}
std::string error_of(const std::string& src, std::vector<std::pair<std::string, Value>> vars = {}) {
  try { render(src, vars); } catch (const lvt::Error& e) { return e.what(); }
  return "(no error)";
}

}  // namespace

TEST_CASE("jinja: whitespace control and trim/lstrip blocks") {
  CHECK(render("a  {{- 'b' -}}  c") == "abc");
  CHECK(render("a  {%- if true -%}  b  {%- endif -%}  c") == "abc");
  // lstrip_blocks: indentation before a block tag alone on its line goes; trim_blocks: the newline after it.
  CHECK(render("  {% if true %}\n  x\n  {% endif %}\ny") == "  x\ny");
  // not for {{ }}, and not when text precedes the tag on its line
  CHECK(render("  {{ 'x' }}\n") == "  x");  // one trailing newline of the template is dropped
  CHECK(render("a {% if true %}b{% endif %}") == "a b");
  CHECK(render("{% if true %}   {% endif %}|") == "   |");
  // `+` keeps the whitespace
  CHECK(render("  {%+ if true %}x{% endif +%}\ny") == "  x\ny");
  CHECK(render("{# comment #}\nx") == "x");
  CHECK(render("  {# c #}\nx") == "x");
  CHECK(render("x\r\ny") == "x\ny");
  CHECK(render("{% raw %}{{ not }}{% endraw %}") == "{{ not }}");
}

TEST_CASE("jinja: literals, escapes and printing like Python") {
  CHECK(render(R"({{ 'a\nb\t\'c\x41\u00e9' }})") == "a\nb\t'cA\xc3\xa9");
  CHECK(render(R"({{ "x" "y" }})") == "xy");
  CHECK(render("{{ 1/2 }} {{ 4/2 }} {{ 7//2 }} {{ -7//2 }} {{ -7 % 3 }} {{ 2**10 }}") == "0.5 2.0 3 -4 2 1024");
  CHECK(render("{{ 1e20 }} {{ 0.1+0.2 }} {{ 1e16 }} {{ 1.5e-7 }} {{ 1_000 }}") == "1e+20 0.30000000000000004 1e+16 1.5e-07 1000");
  CHECK(render("{{ true }} {{ none }} {{ [1, 'a', none] }} {{ {'k': 'v'} }}") == "True None [1, 'a', None] {'k': 'v'}");
  CHECK(render(R"({{ ["a'b", 'c'] }})") == "[\"a'b\", 'c']");
  CHECK(render("{{ 'x' ~ 1 ~ none }} {{ 'ab' * 2 }} {{ 'a' if false else 'b' }}|{{ 'a' if false }}|") == "x1None abab b||");
}

TEST_CASE("jinja: undefined semantics") {
  CHECK(render("[{{ missing }}]{% if missing %}x{% endif %}{% for i in missing %}y{% endfor %}{{ missing|length }}") == "[]0");
  CHECK(render("{{ d.nothere }}|{{ d['nothere'] is defined }}|{{ none.x is undefined }}", {{"d", Value::new_dict()}}) == "|False|True");
  CHECK(error_of("{{ missing.attr }}").find("'missing' is undefined") != std::string::npos);
  CHECK(error_of("{{ missing + 1 }}").find("undefined") != std::string::npos);
  CHECK(render("{{ missing ~ 'x' }} {{ missing == missing }} {{ missing|default('dflt') }} {{ ''|default('e', true) }}") == "x True dflt e");
}

TEST_CASE("jinja: loops, scoping, namespace, break/continue") {
  CHECK(render("{% for x in [1,2,3] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}") ==
        "103TrueFalse3;212FalseFalse3;321FalseTrue3;");
  CHECK(render("{% for x in 'abc' %}{{ loop.previtem }}{{ x }}{{ loop.nextitem }}|{% endfor %}") == "ab|abc|bc|");
  CHECK(render("{% for x in [1,2,3] %}{{ loop.cycle('o','e') }}{% endfor %}") == "oeo");
  CHECK(render("{% for x in [1,2,3,4] if x is even %}{{ x }}{{ loop.length }}{% endfor %}") == "2242");
  CHECK(render("{% for x in [] %}a{% else %}empty{% endfor %}") == "empty");
  CHECK(render("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}") == "013");
  // a set inside a loop stays in its iteration; a namespace carries state out
  CHECK(render("{% set x = 0 %}{% for i in range(3) %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}") == "1110");
  CHECK(render("{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}") == "3");
  CHECK(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}") == "a=1;b=2;");
  CHECK(render("{% set a, b = [1, 2] %}{{ b }}{{ a }}") == "21");
  CHECK(render("{% set body %}x{{ 1 + 1 }}{% endset %}[{{ body }}]") == "[x2]");
  CHECK(render("{% macro greet(name, punct='!') %}hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', punct='?') }}") == "hi a! hi b?");
  CHECK(error_of("{% set ns = namespace() %}{% set ns._x = 1 %}").find("underscore-prefixed") != std::string::npos);
}

TEST_CASE("jinja: operators, tests, slicing") {
  CHECK(render("{{ 'b' in 'abc' }} {{ 2 not in [1] }} {{ 'k' in {'k': 1} }} {{ 1 < 2 < 3 }} {{ not 0 }}") == "True True True True True");
  CHECK(render("{{ 'héllo'[::-1] }} {{ [1,2,3][1:] }} {{ [1,2,3][-1] }} {{ 'abcdef'[1:5:2] }} {{ [1,2,3][:-1] }}") == "olléh [2, 3] 3 bd [1, 2]");
  CHECK(render("{{ x is string }}{{ x is mapping }}{{ [] is iterable }}{{ 1 is number }}{{ true is boolean }}{{ false is false }}{{ 3 is odd }}{{ 'a' is in 'ab' }}{{ 1 is equalto 1 }}{{ none is none }}",
               {{"x", Value::from("s")}}) == "TrueFalseTrueTrueTrueTrueTrueTrueTrueTrue");
  CHECK(render("{{ 'a' + 'b' }} {{ [1] + [2] }} {{ 10 % 3 }} {{ 2 ** 3 }} {{ -3|abs }}") == "ab [1, 2] 1 8 3");
}

TEST_CASE("jinja: filters and methods") {
  CHECK(render("{{ '  hi  '|trim }}|{{ 'a b-c'|title }}|{{ 'aB'|capitalize }}|{{ 'Ab'|lower }}{{ 'ab'|upper }}") == "hi|A B-C|Ab|abAB");
  CHECK(render("{{ [3,1,2]|sort|list }} {{ [3,1,2]|sort(reverse=true)|join(',') }} {{ [1,1,2]|unique|list }} {{ [1,2]|reverse|list }}") == "[1, 2, 3] 3,2,1 [1, 2] [2, 1]");
  CHECK(render("{{ [1,2]|first }}{{ [1,2]|last }}{{ [1,2]|length }}{{ 'abc'|count }}{{ 2.5|round }}{{ '42'|int + 1 }}{{ 3|string }}") == "12232.0433");
  CHECK(render("{{ [{'n': 'a', 'k': 1}, {'n': 'b'}]|selectattr('k', 'defined')|map(attribute='n')|list }}") == "['a']");
  CHECK(render("{{ [{'n': 'a', 'k': 1}, {'n': 'b'}]|rejectattr('k')|map(attribute='n')|join }}") == "b");
  CHECK(render("{{ [1, 2]|map('string')|join('-') }} {{ {'a': 1}|items|list }}") == "1-2 [('a', 1)]");
  CHECK(render("{{ 'a\nb'|indent(2) }}|{{ 'a\nb'|indent(2, true) }}") == "a\n  b|  a\n  b");
  CHECK(render("{{ {'a': [1, 2.0, 'é\"<'], 'b': none}|tojson }}") == "{\"a\": [1, 2.0, \"é\\\"<\"], \"b\": null}");
  CHECK(render("{{ {'a': 1, 'b': []}|tojson(indent=2) }}") == "{\n  \"a\": 1,\n  \"b\": []\n}");
  CHECK(render("{{ {'b': 1, 'a': 2}|tojson(separators=(',', ':'), sort_keys=true) }}") == "{\"a\":2,\"b\":1}");
  CHECK(render("{{ ' a b '.strip() }}|{{ 'xxa'.lstrip('x') }}|{{ 'a,b'.split(',') }}|{{ 'a b  c'.split() }}|{{ 'a</think>b'.split('</think>')[-1] }}") ==
        "a b|a|['a', 'b']|['a', 'b', 'c']|b");
  CHECK(render("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'aXa'.replace('a', 'b') }}{{ 'abc'.find('c') }}{{ 'x\ny'.splitlines() }}") ==
        "TrueTruebXb2['x', 'y']");
  CHECK(render("{{ '{} and {}'.format(1, 'b') }} {{ '%s-%d'|format('a', 3) }} {{ 'ab'.upper() }}{{ 'AB'.lower() }}{{ 'a b'.title() }}") == "1 and b a-3 ABabA B");
  CHECK(render("{% set d = {'a': 1} %}{{ d.get('a') }}{{ d.get('z', 0) }}{{ d.keys()|list }}{{ d.values()|list }}{{ d.items()|list }}") == "10['a'][1][('a', 1)]");
}

TEST_CASE("jinja: errors name the feature and the line") {
  CHECK(error_of("a\n{% call foo() %}x{% endcall %}") == "chat template line 2: unsupported Jinja feature: 'call' tag");
  CHECK(error_of("\n\n{{ x|wordcount }}") == "chat template line 3: unsupported Jinja feature: filter 'wordcount'");
  CHECK(error_of("{{ x is nosuchtest }}") == "chat template line 1: unsupported Jinja feature: test 'nosuchtest'");
  CHECK(error_of("{% for x in y recursive %}{% endfor %}") == "chat template line 1: unsupported Jinja feature: recursive for loops");
  CHECK(error_of("{% if x %}") == "chat template line 1: unexpected end of template, expected 'elif'");
  CHECK(error_of("{{ 'a' + 1 }}") == "chat template line 1: can only concatenate str (not \"int\") to str");
  CHECK(error_of("{{ [].append(1) }}").find("not safe") != std::string::npos);
}

TEST_CASE("jinja: rendering is bounded") {
  lvt::text::jinja::Limits lim;
  lim.max_steps = 10000;
  CHECK_THROWS_AS(Template("{% for i in range(100000) %}{% endfor %}").render({}, lim), lvt::Error);
  lim.max_output_bytes = 100;
  CHECK_THROWS_AS(Template("{{ 'x' * 1000 }}").render({}, lim), lvt::Error);
  CHECK_THROWS_AS(Template("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}").render({}, {}), lvt::Error);
  std::string deep(5000, '(');
  CHECK_THROWS_AS(Template("{{ " + deep + " }}"), lvt::Error);
}

TEST_CASE("chat template: raise_exception carries the message") {
  lvt::text::ChatTemplate t("{{ raise_exception('Only user and assistant roles are supported!') }}");
  try {
    t.render(std::vector<lvt::text::Message>{{"user", "hi"}}, false);
    FAIL("no exception");
  } catch (const lvt::text::jinja::TemplateRaised& e) {
    CHECK(std::string(e.what()) == "Only user and assistant roles are supported!");
  }
}

// ---------------- goldens from tools/peers/make_chat_goldens.py

namespace {

std::filesystem::path text_dir() { return std::filesystem::path(LVT_SOURCE_ROOT) / "tests" / "text"; }

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open " << p);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The golden script's FIXED_NOW, as the clock strftime_now reads.
std::tm fixed_now(const std::string& iso) {
  std::tm tm{};
  REQUIRE(std::sscanf(iso.c_str(), "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) == 6);
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  std::time_t t = timegm(&tm);  // fills weekday and day of year
  gmtime_r(&t, &tm);
  return tm;
}

void check_golden(const std::string& name, const lvt::text::ChatTemplate* from_config = nullptr) {
  using lvt::text::OrderedJson;
  auto golden = OrderedJson::parse(read_file(text_dir() / "goldens" / ("chat_" + name + ".json")));
  std::vector<std::pair<std::string, std::string>> special;
  for (auto& [k, v] : golden["special_tokens"].items()) special.emplace_back(k, v.get<std::string>());
  lvt::text::ChatTemplate t(read_file(text_dir() / "templates" / golden["template"].get<std::string>()), special);
  if (from_config) t = *from_config;
  std::tm now = fixed_now(golden["fixed_now"].get<std::string>());
  t.set_clock([now] { return now; });
  for (auto& c : golden["cases"]) {
    std::string case_name = c["name"].get<std::string>();
    CAPTURE(name);
    CAPTURE(case_name);
    if (c.contains("expected")) {
      std::string got;
      try {
        got = t.render(c["messages"], c["add_generation_prompt"].get<bool>(), c["extra"]);
      } catch (const lvt::Error& e) {
        FAIL_CHECK("unexpected error: " << e.what());
        continue;
      }
      CHECK(got == c["expected"].get<std::string>());
    } else {
      std::string want = c["error"].get<std::string>();
      bool raised = c["error_type"] == "TemplateError";
      try {
        t.render(c["messages"], c["add_generation_prompt"].get<bool>(), c["extra"]);
        FAIL_CHECK("no error; transformers raised " << want);
      } catch (const lvt::text::jinja::TemplateRaised& e) {
        CHECK(raised);
        CHECK(std::string(e.what()) == want);
      } catch (const lvt::Error& e) {
        CHECK_FALSE(raised);
        CHECK(std::string(e.what()).find(want) != std::string::npos);
      }
    }
  }
}

}  // namespace

TEST_CASE("chat template goldens: byte-identical to transformers") {
  for (const char* name : {"smollm2", "qwen2.5", "qwen3", "llama3.1", "llama3.2", "mistral_v0.1", "mistral_v0.3", "mixtral", "phi4", "tinyllama", "gemma2"}) {
    SUBCASE(name) { check_golden(name); }
  }
}

TEST_CASE("chat template: from_tokenizer_config reads Qwen3's template and special tokens") {
  auto path = text_dir() / "goldens" / "qwen3_tokenizer_config.json";
  auto t = lvt::text::ChatTemplate::from_tokenizer_config(path.string());
  CHECK(t.source() == read_file(text_dir() / "templates" / "qwen3.jinja"));
  check_golden("qwen3", &t);
}

TEST_CASE("chat template: tokenizer config errors name the file and field") {
  auto dir = std::filesystem::temp_directory_path() / "lvt_chat_template_test";
  std::filesystem::create_directories(dir);
  auto write = [&](const char* name, const std::string& text) {
    auto p = dir / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  };
  auto error_from = [](const std::string& path) -> std::string {
    try { lvt::text::ChatTemplate::from_tokenizer_config(path); } catch (const lvt::Error& e) { return e.what(); }
    return "(no error)";
  };
  auto none = write("none.json", R"({"eos_token": "</s>"})");
  CHECK(error_from(none) == none + ": no \"chat_template\" in the tokenizer config");
  auto nodefault = write("nodefault.json", R"({"chat_template": [{"name": "rag", "template": "x"}]})");
  CHECK(error_from(nodefault) == nodefault + ": chat_template has several templates and none named \"default\"");
  auto bad = write("bad.json", R"({"chat_template": "line one\n{% for x in y recursive %}{% endfor %}"})");
  CHECK(error_from(bad) == bad + ": chat template line 2: unsupported Jinja feature: recursive for loops");
  // a list of named templates: "default", and "tool_use" when tools are given
  auto named = write("named.json", R"({"chat_template": [{"name": "default", "template": "plain"}, {"name": "tool_use", "template": "tools:{{ tools|length }}"}], "bos_token": {"content": "<s>"}})");
  auto t = lvt::text::ChatTemplate::from_tokenizer_config(named);
  std::vector<lvt::text::Message> hi{{"user", "hi"}};
  CHECK(t.render(hi, false) == "plain");
  CHECK(t.render(hi, false, {{"tools", lvt::text::OrderedJson::array({1, 2})}}) == "tools:2");
  CHECK(t.special_tokens() == std::vector<std::pair<std::string, std::string>>{{"bos_token", "<s>"}});
  CHECK_THROWS_WITH_AS(t.render(std::vector<lvt::text::Message>{}, false), "Cannot apply chat template to an empty conversation. Provide at least one message.", lvt::Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("jinja snippets: each construct renders as jinja2 3.1.6 in transformers' environment") {
  using lvt::text::OrderedJson;
  auto golden = OrderedJson::parse(read_file(text_dir() / "goldens" / "chat_snippets.json"));
  std::tm now = fixed_now(golden["fixed_now"].get<std::string>());
  for (auto& c : golden["cases"]) {
    std::string src = c["template"].get<std::string>();
    CAPTURE(src);
    std::string got, error;
    bool raised = false;
    try {
      lvt::text::ChatTemplate t(src);
      t.set_clock([now] { return now; });
      got = t.render(golden["messages"], true, golden["vars"]);
    } catch (const lvt::text::jinja::TemplateRaised& e) {
      raised = true;
      error = e.what();
    } catch (const lvt::Error& e) {
      error = e.what();
    }
    if (c.contains("expected")) {
      CHECK(error == "");
      CHECK(got == c["expected"].get<std::string>());
    } else {
      CHECK(raised == (c["error_type"] == "TemplateError"));
      CHECK(error.find(c["error"].get<std::string>()) != std::string::npos);
    }
  }
}
