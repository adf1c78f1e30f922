#!/usr/bin/env python3
"""Differential check of lvt's Jinja lexer/whitespace rules against jinja2 3.1.6 (transformers' env).

    g++ -std=c++20 -O1 -Iinclude tools/peers/jinja_render_many.cpp -o /tmp/jinja_render_many
    $(bash tools/peers-venv)/bin/python tools/peers/diff_jinja_random.py SEED [/tmp/jinja_render_many]

Generates 3000 random templates from whitespace-control atoms ({%- -%} {%+ +%} {#- -#} {{- -}},
raw blocks, nested if/for, \r\n) and prints every template whose render differs.
"""
import random, json, subprocess, sys
import transformers.utils.chat_template_utils as ctu
random.seed(int(sys.argv[1]))
atoms = ["  ", "\n", "\t", "x", " \n ", "{{ 'v' }}", "{{- 'v' -}}", "{{- 'v' }}", "{# c #}", "{#- c -#}", "{#+ c #}", "{% set a = 1 %}", "{%- set a = 1 -%}", "{%+ set a = 1 %}", "{% set a = 1 +%}", "{{ s[::-1] }}", "{{ l|join(',') }}", "{{ loop.index if loop is defined else '' }}", "\r\n"]
opens = [("{% if true %}", "{% endif %}"), ("{%- if l %}", "{%- endif %}"), ("{% for i in l %}", "{% endfor %}"), ("{% for i in l -%}", "{%- endfor %}"), ("{%+ if true +%}", "{%+ endif +%}"), ("{% raw %}", "{% endraw %}")]
def gen(d=0):
    out = []
    for _ in range(random.randint(1, 6)):
        if d < 3 and random.random() < 0.25:
            o, c = random.choice(opens)
            inner = gen(d + 1)
            if o == "{% raw %}": inner = inner.replace("{% endraw %}", "")
            out.append(o + inner + c)
        else:
            out.append(random.choice(atoms))
    return "".join(out)
cases = [gen() for _ in range(3000)]
json.dump(cases, open("/tmp/cases.json", "w"))
got = json.loads(subprocess.run([sys.argv[2] if len(sys.argv) > 2 else "/tmp/jinja_render_many", "/tmp/cases.json"], capture_output=True, text=True).stdout)
bad = 0
for src, g in zip(cases, got):
    try:
        out, _ = ctu.render_jinja_template(conversations=[[{"role": "user", "content": "Hi"}]], chat_template=src, add_generation_prompt=True, l=[1,2,3], s="ab c")
        want = out[0]
    except Exception as e:
        want = None
    if want != g:
        bad += 1
        if bad <= 5: print(repr(src), "\n  want", repr(want), "\n  got ", repr(g))
print("mismatches", bad, "of", len(cases))
