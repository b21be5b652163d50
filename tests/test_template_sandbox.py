"""Untrusted templates: every attack ends in a one-line error within the time limit, and others keep working."""

import threading
import time

import pytest

from shared.chat_templates import official_template, render_family
from shared.template_sandbox import TIME_LIMIT_S, TemplateError, render_template, render_untrusted

MESSAGES = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
# The limit plus room for killing the child and this 2-core machine being busy with other work.
DEADLINE_S = TIME_LIMIT_S + 3.0

ATTACKS = {
    "attribute escape": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    "globals of a function": ("{{ raise_exception.__globals__ }}", "unsafe"),
    "globals via lipsum": ("{{ lipsum.__globals__['os'] }}", "unsafe"),
    "format trick": ("{{ '{0.__class__.__mro__}'.format('') }}", "unsafe"),
    "format_map trick": ("{{ '{x.__class__}'.format_map({'x': ''}) }}", "unsafe"),
    "namespace dunder": ("{% set ns = namespace(__class__=1) %}", "underscore"),
    "mutating a list": ("{% set items = [] %}{{ items.append(1) }}", "unsafe"),
    "runaway recursion": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion"),
    "giant repetition": ("{{ 'a' * 10 ** 9 }}", "output cap"),
    "giant power": ("{{ 2 ** (2 ** 40) }}", "too large"),
    "giant padding": ("{{ 'a' | center(10 ** 9) }}", "memory"),
    "many small writes": ("{% for i in range(100000) %}{{ 'xxxxxxxxxx' }}{% endfor %}", "output cap"),
    "endless loop": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "did not finish",
    ),
    "syntax error": ("{% for %}", "syntax error on line 1"),
}


def _render(source):
    results = render_untrusted(source, [{"messages": MESSAGES}])
    if "error" in results[0]:
        raise TemplateError(results[0]["error"])
    return results[0]["text"]


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_is_refused_quickly_with_one_line(name):
    source, expected = ATTACKS[name]
    started = time.monotonic()
    with pytest.raises(TemplateError) as refused:
        _render(source)
    assert time.monotonic() - started < DEADLINE_S
    message = str(refused.value)
    assert expected in message.lower() and "\n" not in message


def test_others_stay_served_while_an_endless_loop_runs():
    endless = ATTACKS["endless loop"][0]
    errors = []
    attacker = threading.Thread(target=lambda: errors.append(pytest.raises(TemplateError, _render, endless)))
    attacker.start()
    time.sleep(0.2)  # the endless loop is now running in its own child
    started = time.monotonic()
    assert _render("{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}") == "user:Hi;assistant:Hello!;"
    assert time.monotonic() - started < 1.5  # not queued behind the loop
    attacker.join(DEADLINE_S)
    assert not attacker.is_alive() and errors


def test_sandboxed_rendering_equals_in_process_rendering():
    # The child runs the very same code: an official template renders identically there, spans included.
    template = official_template("gemma3", training=True)
    [child] = render_untrusted(template, [{"messages": MESSAGES}], {"bos_token": "<bos>"})
    text, spans = render_template(template, MESSAGES, variables={"bos_token": "<bos>"})
    assert (child["text"], [tuple(span) for span in child["spans"]]) == (text, spans)
    assert text == render_family("gemma3", MESSAGES).text
    assert text[spans[0][0] : spans[0][1]] == "Hello!<end_of_turn>\n"


def test_the_template_sees_only_what_it_is_given():
    # Nothing of the app's process is in scope: no config, no request, no environment.
    for name in ["config", "request", "environ", "os", "sys", "__builtins__"]:
        assert _render("{{ " + name + " is defined }}") == "False"
    assert _render("{{ messages | length }} {{ tools }}") == "2 None"


def test_the_templates_own_refusal_is_passed_on():
    with pytest.raises(TemplateError, match="refused this conversation: roles must alternate"):
        _render("{{ raise_exception('roles must alternate') }}")
