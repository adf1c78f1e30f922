#!/usr/bin/env python3
"""Golden chat-template renders for tests/text/test_chat_template.cpp, made by transformers itself.

    $(bash tools/peers-venv)/bin/python tools/peers/make_chat_goldens.py

For every tests/text/templates/NAME.jinja this writes tests/text/goldens/chat_NAME.json: the
special tokens passed, and per conversation (conversations(), the same for every template, then
template_cases(NAME) for that template's own branches) the render (or the exception's message) of
transformers.utils.chat_template_utils.render_jinja_template with exactly the arguments
apply_chat_template(tokenize=False) passes: message keys whose value is None dropped,
{**special_tokens_map, **kwargs}, tools/documents. strftime_now is pinned to FIXED_NOW (the C++
test pins its clock the same way). For Qwen3 the real tokenizer folder is also loaded and
tokenizer.apply_chat_template(tokenize=False) must give the same string, which checks the
emulation of apply_chat_template's argument handling.
"""
import datetime as _dt
import json
import os
import sys

import transformers
import transformers.utils.chat_template_utils as ctu
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATES = os.path.join(ROOT, "tests", "text", "templates")
GOLDENS = os.path.join(ROOT, "tests", "text", "goldens")
QWEN3_DIR = "/work/shared/data/tokenizers/qwen3"
FIXED_NOW = _dt.datetime(2026, 3, 14, 15, 9, 26)


class FixedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED_NOW


ctu.datetime = FixedDatetime  # strftime_now reads the module's `datetime` at call time

# The named special tokens each model's tokenizer_config.json sets (those that are not null).
SPECIAL = {
    "smollm2": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>", "pad_token": "<|im_end|>"},
    "qwen2.5": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "qwen3": None,  # read from the real tokenizer_config.json
    "llama3.1": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama3.2": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "mistral_v0.1": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "mistral_v0.3": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "mixtral": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "phi4": {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|dummy_85|>"},
    "tinyllama": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"},
    "gemma2": {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"},
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}

TRICKY = 'Quotes "double" and \'single\', a backslash \\ , tabs\tand\nnewlines, unicode: héllo 日本語 🙂, JSON-ish: {"a": [1, 2.5, null]} {{ not a tag }} {% neither %}'


def conversations():
    sys_user = [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "Hello!"}]
    user = [{"role": "user", "content": "What is 2+2?"}]
    multi = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    assistant_last = multi + [{"role": "assistant", "content": "Why did the chicken cross the road?"}]
    tricky = [{"role": "user", "content": TRICKY}, {"role": "assistant", "content": "  padded answer  \n"}, {"role": "user", "content": " x "}]
    non_alternating = [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    system_multi = [{"role": "system", "content": "  Be brief.  "}] + multi
    cases = []
    for name, msgs in [("system_user", sys_user), ("user", user), ("multi_turn", multi), ("assistant_last", assistant_last),
                       ("tricky_content", tricky), ("non_alternating", non_alternating), ("system_multi", system_multi)]:
        for agp in (True, False):
            cases.append({"name": f"{name}_{'gen' if agp else 'nogen'}", "messages": msgs, "add_generation_prompt": agp, "extra": {}})
    tool_call_msgs = [
        {"role": "system", "content": "You can check the weather."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "get_current_weather", "arguments": {"location": "Paris, France", "unit": "celsius"}}}]},
        {"role": "tool", "content": "{\"temperature\": 18, \"sky\": \"clear\"}"},
    ]
    cases.append({"name": "tools_gen", "messages": [{"role": "user", "content": "Weather in Oslo?"}], "add_generation_prompt": True, "extra": {"tools": [WEATHER_TOOL]}})
    cases.append({"name": "tools_with_system", "messages": sys_user, "add_generation_prompt": True, "extra": {"tools": [WEATHER_TOOL]}})
    cases.append({"name": "tool_call_round", "messages": tool_call_msgs, "add_generation_prompt": True, "extra": {"tools": [WEATHER_TOOL]}})
    with_content = [dict(m) for m in tool_call_msgs]
    with_content[2]["content"] = ""
    with_content[2]["tool_calls"] = with_content[2]["tool_calls"] + [{"type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Lyon\"}"}}]
    cases.append({"name": "tool_calls_empty_content", "messages": with_content, "add_generation_prompt": False, "extra": {"tools": [WEATHER_TOOL]}})
    thinking = [
        {"role": "user", "content": "Solve x+1=2."},
        {"role": "assistant", "content": "<think>\nSubtract one.\n</think>\n\nx = 1"},
        {"role": "user", "content": "And x+2=2?"},
        {"role": "assistant", "content": "x = 0", "reasoning_content": "Subtract two."},
    ]
    cases.append({"name": "thinking_history", "messages": thinking, "add_generation_prompt": False, "extra": {}})
    cases.append({"name": "enable_thinking_false", "messages": user, "add_generation_prompt": True, "extra": {"enable_thinking": False}})
    cases.append({"name": "date_string_given", "messages": user, "add_generation_prompt": True, "extra": {"date_string": "01 Jan 2025"}})
    cases.append({"name": "content_none_dropped", "messages": [{"role": "user", "content": "hi", "name": None}], "add_generation_prompt": True, "extra": {}})
    return cases


def call(name, arguments, call_id=None):
    c = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        c["id"] = call_id
    return c


# Conversations for one template's own branches, on top of conversations() (which every template gets).
def template_cases(name):
    def case(case_name, messages, add_generation_prompt=True, **extra):
        return {"name": case_name, "messages": messages, "add_generation_prompt": add_generation_prompt, "extra": extra}

    sys_user = [{"role": "system", "content": "You can check the weather."}, {"role": "user", "content": "Weather in Paris?"}]
    if name == "llama3.1":
        paris = call("get_current_weather", {"location": "Paris, France", "unit": "celsius"})
        search = call("brave_search", {"query": "Menlo Park weather"})
        return [
            case("tools_in_system_message", sys_user, tools=[WEATHER_TOOL], tools_in_user_message=False),
            case("custom_tools_kwarg", [{"role": "user", "content": "Weather in Oslo?"}], custom_tools=[WEATHER_TOOL]),
            case("tools_without_user_raises", [{"role": "system", "content": "Only a system prompt."}], tools=[WEATHER_TOOL]),
            case("tool_call_ipython_response", sys_user + [
                {"role": "assistant", "content": "", "tool_calls": [paris]},
                {"role": "ipython", "content": "{\"temperature\": 18}"},
                {"role": "assistant", "content": "It is 18 degrees in Paris."},
                {"role": "user", "content": "Thanks!"}], tools=[WEATHER_TOOL], tools_in_user_message=False),
            case("tool_response_mapping", sys_user + [
                {"role": "assistant", "tool_calls": [paris]},
                {"role": "tool", "content": {"temperature": 18, "sky": "clear"}}], tools=[WEATHER_TOOL]),
            case("builtin_tools", [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Search the weather in Menlo Park."}],
                 builtin_tools=["brave_search", "wolfram_alpha", "code_interpreter"]),
            case("builtin_tool_call", [{"role": "user", "content": "Search the weather in Menlo Park."},
                                       {"role": "assistant", "tool_calls": [search]},
                                       {"role": "ipython", "content": "Sunny, 22 C"}], builtin_tools=["brave_search", "wolfram_alpha"]),
            case("builtin_and_custom_tools", sys_user + [{"role": "assistant", "tool_calls": [paris]}, {"role": "tool", "content": "18 C"}],
                 builtin_tools=["brave_search"], tools=[WEATHER_TOOL], tools_in_user_message=False, date_string="02 Feb 2025"),
            case("builtin_tool_call_int_argument_raises", [{"role": "user", "content": "Top 3 results?"},
                                                           {"role": "assistant", "tool_calls": [call("brave_search", {"query": "x", "count": 3})]}],
                 builtin_tools=["brave_search"]),
        ]
    if name == "mistral_v0.3":
        paris = call("get_current_weather", {"location": "Paris, France", "unit": "celsius"}, "abcDEF123")
        lyon = call("get_current_weather", {"location": "Lyon"}, "9zY8xW7vU")
        with_return = {"type": "function", "function": dict(WEATHER_TOOL["function"], name="get_temperature", **{"return": {"type": "number"}})}
        return [
            case("tool_call_ids", sys_user + [
                {"role": "assistant", "content": None, "tool_calls": [paris]},
                {"role": "tool", "tool_call_id": "abcDEF123", "name": "get_current_weather", "content": "{\"temperature\": 18}"},
                {"role": "assistant", "content": " It is 18 degrees in Paris. "},
                {"role": "user", "content": "And in Lyon?"}], tools=[WEATHER_TOOL]),
            case("parallel_tool_calls", sys_user + [
                {"role": "assistant", "tool_calls": [paris, lyon]},
                {"role": "tool", "tool_call_id": "abcDEF123", "content": "18"},
                {"role": "tool_results", "tool_call_id": "9zY8xW7vU", "content": {"content": {"temperature": 16, "sky": "rain"}}}],
                 add_generation_prompt=False, tools=[WEATHER_TOOL]),
            case("tool_with_return_key", [{"role": "user", "content": "Weather in Rome?"}], tools=[with_return, WEATHER_TOOL]),
            case("bad_tool_call_id_raises", sys_user + [{"role": "assistant", "tool_calls": [call("get_current_weather", {"location": "Paris"}, "call_1")]}]),
            case("bad_tool_result_id_raises", sys_user + [{"role": "assistant", "tool_calls": [paris]},
                                                          {"role": "tool", "tool_call_id": "abcDEF12", "content": "18"}]),
            case("assistant_first_raises", [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Hello"}]),
            case("system_then_two_assistants_raises", sys_user + [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]),
            case("unknown_role_raises", [{"role": "user", "content": "Hi"}, {"role": "developer", "content": "Be brief."}]),
        ]
    return []


def render(template, special, case):
    msgs = [{k: v for k, v in m.items() if v is not None} for m in case["messages"]]
    extra = dict(case["extra"])
    tools = extra.pop("tools", None)
    documents = extra.pop("documents", None)
    kwargs = {**special, **extra}
    out, _ = ctu.render_jinja_template(conversations=[msgs], tools=tools, documents=documents, chat_template=template,
                                       add_generation_prompt=case["add_generation_prompt"], **kwargs)
    return out[0]


# Single constructs, rendered in the same environment with SNIPPET_VARS (and messages = SNIPPET_MESSAGES).
SNIPPET_MESSAGES = [{"role": "system", "content": " sys "}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo", "reasoning_content": "r"}]
SNIPPET_VARS = {"s": "Hello, World", "l": [3, 1, 2], "d": {"b": 1, "a": [1, 2.5, None, True]}, "u": "héllo wörld 日本",
                "n": None, "f": 2.5, "i": -7, "e": "", "people": [{"name": "Ann", "age": 30}, {"name": "bob"}, {"name": "Cy", "age": 5}]}
SNIPPETS = [
    "{{ s }}|{{ l }}|{{ d }}|{{ n }}|{{ f }}|{{ i }}|{{ true }}|{{ missing }}|",
    "{{ s[::-1] }} {{ s[1:] }} {{ s[:-1] }} {{ s[-3:] }} {{ s[1:8:3] }} {{ l[::-1] }} {{ l[5:] }} {{ u[1:4] }} {{ u[::-1] }} {{ u|length }}",
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 2 ** 0.5 }} {{ 10 / 4 }} {{ 1e300 * 1e10 }} {{ 0.1 * 3 }} {{ 123456789.0 * 1e8 }} {{ 1 / 3 }} {{ 1e-5 }} {{ 0.0001 }}",
    "{{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'ell' in s }} {{ 4 not in l }} {{ 'b' in d }}",
    "{{ s|lower }} {{ s|upper }} {{ 'hello wORLD-x(y'|title }} {{ 'hELLO'|capitalize }} {{ '  a b  '|trim }}|{{ 'xxaxx'|trim('x') }} {{ s|replace('l', 'L') }} {{ s|replace('l', 'L', 2) }}",
    "{{ l|sort }} {{ l|sort(reverse=true) }} {{ ['b', 'A', 'c']|sort }} {{ ['b', 'A', 'c']|sort(case_sensitive=true) }} {{ people|sort(attribute='name')|map(attribute='name')|join(',') }}",
    "{{ l|first }} {{ l|last }} {{ l|length }} {{ l|sum }} {{ l|min }} {{ l|max }} {{ [1, 1, 2, 1]|unique|list }} {{ l|reverse|list }} {{ s|reverse }} {{ l|join('-') }}",
    "{{ people|selectattr('age', 'defined')|map(attribute='name')|list }} {{ people|rejectattr('age', 'defined')|map(attribute='name')|list }} {{ people|selectattr('age', 'gt', 10)|list|length }} {{ people|map(attribute='age', default=0)|list }}",
    "{{ [0, 1, '', 'x', none]|select|list }} {{ [1, 2, 3, 4]|reject('odd')|list }} {{ [1, 2, 3]|map('string')|list }} {{ ['a', 'b']|map('upper')|join }}",
    r"""{{ d|tojson }} {{ d|tojson(indent=2) }} {{ u|tojson }} {{ 'tab\there "q" \\ </script>'|tojson }} {{ [1.0, 1e16, -0.0]|tojson }} {{ d|tojson(sort_keys=true) }} {{ d|tojson(separators=(',', ':')) }} {{ {}|tojson(indent=4) }}""",
    "{{ d|items|list }} {{ d.items()|list }} {{ d.keys()|list }} {{ d.values()|list }} {{ d.get('b') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }} {{ d['a'][1] }} {{ d.a.0 }} {{ d|dictsort }}",
    "{{ missing|default('x') }} {{ e|default('empty', true) }} {{ n|default('y') }} {{ missing|d }} {{ missing is defined }} {{ n is none }} {{ n is defined }} {{ d.nothere is defined }}",
    "{{ s is string }} {{ l is sequence }} {{ d is mapping }} {{ d is iterable }} {{ 1 is number }} {{ 1.5 is float }} {{ 1 is integer }} {{ true is boolean }} {{ true is true }} {{ 0 is false }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 'a' is in 'abc' }} {{ 2 is equalto 2 }} {{ 'ab' is lower }}",
    "{{ ' a b '.strip() }}|{{ 'xya'.lstrip('xy') }}|{{ 'ayx'.rstrip('xy') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a\nb\r\nc'.splitlines() }}|{{ s.startswith('He') }}|{{ s.endswith(('x', 'ld')) }}|{{ s.find('o') }}|{{ s.rfind('o') }}|{{ s.count('l') }}|{{ u.find('w') }}",
    "{{ '{}-{}'.format(1, 'a') }} {{ '{1}{0}'.format('a', 'b') }} {{ '{x}!'.format(x=3) }} {{ '%s and %d'|format('a', 4) }} {{ 'x %s' % 'y' }} {{ s.upper() }} {{ s.lower() }} {{ 'ab cd'.title() }} {{ 'aBc'.capitalize() }} {{ ','.join(['a', 'b']) }}",
    "{{ 'a\nb\n\nc'|indent }}|{{ 'a\nb'|indent(2, true) }}|{{ 'a\n\nb'|indent(2, blank=true) }}|{{ '42'|int }} {{ 'x'|int(7) }} {{ 3.9|int }} {{ '2.5'|float }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.7|round(method='floor') }} {{ -3|abs }} {{ 2.5|string }}",
    "{% for x in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }}{{ loop.cycle('a', 'b') }};{% endfor %}",
    "{% for x in l if x > 1 %}{{ x }}{{ loop.length }}{% else %}none{% endfor %}|{% for x in [] %}a{% else %}empty{% endfor %}|{% for k, v in d.items() %}{{ k }}{% endfor %}|{% for c in 'ab' %}{{ c }}{% endfor %}|{% for k in d %}{{ k }}{% endfor %}",
    "{% for x in range(10) %}{% if x is odd %}{% continue %}{% endif %}{% if x > 6 %}{% break %}{% endif %}{{ x }}{% endfor %}|{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }}",
    "{% set x = 1 %}{% for i in l %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}|{% set ns = namespace(t=0, items=[]) %}{% for i in l %}{% set ns.t = ns.t + i %}{% set ns.items = ns.items + [i] %}{% endfor %}{{ ns.t }}{{ ns.items }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = (1, 2) %}{{ t }}{% set blk %}  in {{ s }}  {% endset %}[{{ blk }}]{% set up | upper %}shout{% endset %}{{ up }}",
    "{% macro m(a, b='B') %}<{{ a }}{{ b }}>{% endmacro %}{{ m(1) }}{{ m(1, 2) }}{{ m(b=3, a=4) }}{% macro rec(n) %}{% if n > 0 %}{{ n }}{{ rec(n - 1) }}{% endif %}{% endmacro %}{{ rec(3) }}",
    "  {% if true %}\n  indented\n  {% endif %}\n{% for x in l %}\n    {{ x }}\n{% endfor %}\n{#- comment -#}\n  tail  {{- ' end' }}\n{%+ if true %}plus{% endif +%}\nnext",
    "a {%- if true %} b {% endif -%} c {# x #} d\n  {# own line #}\ne {{ 'f' -}}\n\n   g{% raw %} {{ raw }} {% endraw %}h",
    "{{ 'a' ~ 1 ~ none ~ missing ~ [1] }} {{ 'ab' * 3 }} {{ [1] * 2 }} {{ 'a' if n else 'b' }} {{ 'a' if n }}| {{ n or 'x' }} {{ s and 'y' }} {{ not s }} {{ -f }} {{ +i }} {{ (1, 2)|list }}",
    r"""{{ '\u00e9\x41\101\t|\q' }} {{ "it's" }} {{ 'say "hi"' }} {{ 'a' 'b' "c" }} {{ ["it's", 'x'] }} {{ {'k': "it's"} }} {{ '\n' }}""",
    "{% for m in messages %}{{ m.role }}:{{ m.content|trim }}:{{ m.thinking }}:{{ m.reasoning_content }}:{{ m|length }};{% endfor %}{{ messages[-1].role }} {{ messages|selectattr('role', 'equalto', 'user')|list|length }} {{ messages[::-1]|map(attribute='role')|join(',') }}",
    "{{ tools }} {{ documents }} {{ add_generation_prompt }} {{ strftime_now('%Y-%m-%d %H:%M:%S %a %A %b %B %d %j %p %I') }} {{ dict(a=1, b=2) }} {{ namespace(x=1).x }}",
    "{{ d.nope.deeper }}",
    "{{ l + 'x' }}",
    "{{ 1 / 0 }}",
    "{{ raise_exception('custom failure: ' ~ s) }}",
    "{% set ns = namespace() %}{% set ns._hidden = 1 %}",
    "{{ s.nomethod() }}",
]


def make_snippets():
    results = []
    for src in SNIPPETS:

        entry = {"template": src}
        try:
            out, _ = ctu.render_jinja_template(conversations=[SNIPPET_MESSAGES], chat_template=src, add_generation_prompt=True,
                                               **SNIPPET_VARS)
            entry["expected"] = out[0]
        except Exception as e:
            entry["error"] = str(e)
            entry["error_type"] = type(e).__name__
        results.append(entry)
    golden = {"made_by": "tools/peers/make_chat_goldens.py", "fixed_now": FIXED_NOW.isoformat(), "messages": SNIPPET_MESSAGES,
              "vars": SNIPPET_VARS, "cases": results}
    path = os.path.join(GOLDENS, "chat_snippets.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{path}: {len(results)} snippets, {sum('error' in r for r in results)} raise", file=sys.stderr)


def main():
    os.makedirs(GOLDENS, exist_ok=True)
    make_snippets()
    qwen3_tok = AutoTokenizer.from_pretrained(QWEN3_DIR)
    for fname in sorted(os.listdir(TEMPLATES)):
        if not fname.endswith(".jinja"):
            continue
        name = fname[: -len(".jinja")]
        with open(os.path.join(TEMPLATES, fname), encoding="utf-8") as f:
            template = f.read()
        special = SPECIAL[name]
        if special is None:
            special = dict(qwen3_tok.special_tokens_map)
            assert template == qwen3_tok.chat_template, "qwen3.jinja differs from the tokenizer config's template"
        results = []
        for case in conversations() + template_cases(name):
            entry = {k: case[k] for k in ("name", "messages", "add_generation_prompt", "extra")}
            try:
                entry["expected"] = render(template, special, case)
            except Exception as e:  # the template's raise_exception, or a Jinja error
                entry["error"] = str(e)
                entry["error_type"] = type(e).__name__
            if name == "qwen3":
                try:
                    via_tok = qwen3_tok.apply_chat_template(case["messages"], tools=case["extra"].get("tools"), tokenize=False,
                                                            add_generation_prompt=case["add_generation_prompt"],
                                                            **{k: v for k, v in case["extra"].items() if k != "tools"})
                    assert via_tok == entry.get("expected"), f"apply_chat_template differs for {case['name']}"
                except Exception as e:
                    assert "error" in entry and str(e) == entry["error"], f"{case['name']}: {e}"
            results.append(entry)
        golden = {
            "template": fname,
            "made_by": f"tools/peers/make_chat_goldens.py (transformers {transformers.__version__}, jinja2 {__import__('jinja2').__version__})",
            "fixed_now": FIXED_NOW.isoformat(),
            "special_tokens": special,
            "cases": results,
        }
        path = os.path.join(GOLDENS, f"chat_{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(golden, f, ensure_ascii=False, indent=1)
            f.write("\n")
        n_err = sum("error" in r for r in results)
        print(f"{path}: {len(results)} cases, {n_err} raise", file=sys.stderr)


if __name__ == "__main__":
    main()
