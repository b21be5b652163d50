"""The whole collection in a real browser: `python app.py`, driven by headless Chromium through Playwright.

    python -m pytest tests/test_browser.py -q

What a visitor clicks and sees: every tab renders, a comparer preset streams into both columns, an edited
message re-tokenizes in the inspector, the calculator's chart follows the LoRA rank, a flashcard flips and
the quiz records an answer. Two tests also take the README pictures (the comparer and the log-prob lens):
into a temporary folder, so the tests never change the checkout, or into docs/ when asked for explicitly:

    PTS_SCREENSHOT_DIR=docs python -m pytest tests/test_browser.py -k screenshot   # screenshot.png, logprob_lens.png

The browser is Debian's `chromium` (/usr/bin/chromium); `playwright` from PyPI only drives it, so no
`playwright install` and no browser download. Without either the module is skipped, unless
PTS_REQUIRE_BROWSER=1 (set by .ci/run) turns that into a failure.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from shared.lesson import load_lesson

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # checked in the `browser` fixture, so the reason is reported there
    expect = sync_playwright = None

pytestmark = pytest.mark.slow  # `python app.py` loads the real embedded Gemma 3 270M

ROOT = Path(__file__).resolve().parent.parent
# Where the README picture goes: docs/ only on request (PTS_SCREENSHOT_DIR=docs), else a temporary folder.
SCREENSHOT_DIR = os.environ.get("PTS_SCREENSHOT_DIR")
CHROMIUM = "/usr/bin/chromium"
REQUIRE_BROWSER = os.environ.get("PTS_REQUIRE_BROWSER") == "1"

# A warm start serves in about 15 s; a cold one first converts the embedded model (about a minute),
# and this machine's two cores may be shared with other work.
SERVE_TIMEOUT_S = 180
UI_TIMEOUT_MS = 30_000  # a click's effect: one Gradio event, milliseconds on an idle machine
GENERATE_TIMEOUT_MS = 240_000  # a whole comparer run, while the preset warm-up competes for the CPU
# Few tokens: enough updates to see the text stream in, and a run no preset warm-up has cached
# (those use the slider's default, 96), so the browser really receives it token by token.
STREAM_TOKENS = 16
# Four comparer columns (320 px minimum each) sit side by side only from about 1500 px.
SCREENSHOT_VIEWPORT = {"width": 1600, "height": 1000}
VIEWPORT = {"width": 1400, "height": 900}
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root in a container, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # a container's small /dev/shm crashes renderers
    "--disable-background-networking",  # no update checks or field trials: the only server is ours
    "--no-first-run",
    "--mute-audio",
]

TABS = {  # tab label -> the heading its app opens with
    "Base vs aligned": "Base vs aligned: the completion trap",
    "Chat templates": "Chat-template inspector",
    "LoRA / QLoRA memory": "LoRA / QLoRA calculator",
    "Log-probs & DPO": "Log-probs & DPO: the alignment problem, computed",
    "Lesson & quiz": "From base model to assistant",
}
COMPARER_COLUMNS = ["Base", "Aligned", "Base + SFT (ours)", "Base + SFT + DPO (ours)"]
LESSON = load_lesson()


# ------------------------------------------------------------------ fixtures: one server, one browser


def _unavailable(reason: str):
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason} (PTS_REQUIRE_BROWSER=1: the browser tests must run here)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        _unavailable("playwright is not installed (pip install -r requirements.txt)")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    expect.set_options(timeout=UI_TIMEOUT_MS)  # assertions wait as long as actions (default: 5 s)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(log, chars: int = 4000) -> str:
    log.seek(0)
    return log.read().decode("utf-8", "replace")[-chars:]


def _wait_until_served(server: subprocess.Popen, url: str, log) -> None:
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"`python app.py` exited with code {server.returncode}:\n{_tail(log)}", pytrace=False)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # refused until the server listens (URLError is an OSError)
            pass
        time.sleep(0.5)
    pytest.fail(f"`python app.py` did not serve {url} within {SERVE_TIMEOUT_S} s:\n{_tail(log)}", pytrace=False)


@pytest.fixture(scope="module")
def app_url(browser):  # after `browser`: a missing browser skips before the 15 s start
    port = _free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
    }
    # Output to a file: a pipe that nobody reads would fill up and block the server.
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/"
            _wait_until_served(server, url, log)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _open(browser, url, viewport=VIEWPORT):
    """A fresh visitor (own context, so own BrowserState) on the collection's first tab."""
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    page.goto(url)
    expect(page.get_by_role("heading", name=TABS["Base vs aligned"])).to_be_visible()
    return page


@pytest.fixture
def page(browser, app_url):
    page = _open(browser, app_url)
    yield page
    page.context.close()


def _tab(page, label):
    """Open a top-level tab; return its panel (the one holding that app's heading)."""
    page.get_by_role("tab", name=label, exact=True).click()
    heading = page.get_by_role("heading", name=TABS[label], exact=True)
    expect(heading).to_be_visible()
    return page.get_by_role("tabpanel").filter(has=heading)


def _column(page, label):
    """One comparer column: the Gradio column holding this heading and no other column's."""
    columns = page.locator(".column").filter(has=page.get_by_role("heading", name=label, exact=True))
    for other in COMPARER_COLUMNS:
        if other != label:
            columns = columns.filter(has_not=page.get_by_role("heading", name=other, exact=True))
    return columns


# ------------------------------------------------------------------ tests


def test_every_tab_renders_its_app(page):
    characteristic = {  # something only that app draws, once its load events have run
        "Base vs aligned": lambda panel: panel.get_by_role("button", name="What is the capital of France?"),
        "Chat templates": lambda panel: panel.get_by_title(re.compile(r"^#0 '<bos>'")),  # the first token chip
        "LoRA / QLoRA memory": lambda panel: panel.locator('[aria-roledescription="bar"]').first,
        "Log-probs & DPO": lambda panel: panel.get_by_role("button", name="The completion trap"),
        "Lesson & quiz": lambda panel: panel.get_by_role("button", name="① Pretraining"),
    }
    previous = None
    for label, element in characteristic.items():
        panel = _tab(page, label)
        expect(page.get_by_role("tab", name=label, exact=True)).to_have_attribute("aria-selected", "true")
        expect(element(panel)).to_be_visible()
        if previous:  # the tab switched, rather than stacking apps on one page
            expect(page.get_by_role("heading", name=TABS[previous], exact=True)).to_be_hidden()
        previous = label
    bars = page.locator('[aria-roledescription="bar"]')
    _tab(page, "LoRA / QLoRA memory")
    expect(bars).to_have_count(3 * 6)  # full, LoRA, QLoRA × six memory parts


def test_a_preset_streams_into_both_columns(page):
    page.get_by_role("button", name="Decoding").click()
    max_tokens = page.get_by_role("spinbutton", name="number input for Max new tokens")
    max_tokens.fill(str(STREAM_TOKENS))
    max_tokens.press("Enter")
    expect(page.get_by_role("slider", name="range slider for Max new tokens")).to_have_value(str(STREAM_TOKENS))

    base, aligned = _column(page, "Base"), _column(page, "Aligned")
    outputs = [base.get_by_role("textbox"), aligned.get_by_role("textbox")]
    for output in outputs:
        expect(output).to_have_value("")
    # Record what each output box shows every 50 ms: the proof of streaming is the text in between.
    page.evaluate(
        """boxes => { window.seen = boxes.map(() => []);
                      window.recorder = setInterval(() => boxes.forEach((box, i) => {
                          const seen = window.seen[i];
                          if (seen[seen.length - 1] !== box.value) seen.push(box.value);
                      }), 50); }""",
        [output.element_handle() for output in outputs],
    )

    page.get_by_role("button", name="Hello, how are you?").click()
    expect(page.get_by_role("textbox", name="Prompt (up to 512 tokens)")).to_have_value("Hello, how are you?")
    for column in (base, aligned):
        expect(column.get_by_text("Stopped:")).to_be_visible(timeout=GENERATE_TIMEOUT_MS)
    seen = page.evaluate("() => { clearInterval(window.recorder); return window.seen; }")
    finals = [output.input_value() for output in outputs]

    for label, values, final in zip(["Base", "Aligned"], seen, finals):
        assert final.strip(), f"the {label} column shows no text"
        partial = [v for v in values if v and v != final]
        assert len(partial) >= 2, f"the {label} column did not stream: it showed {values!r}"
        assert all(final.startswith(v) for v in partial), f"the {label} column's text did not grow: {values!r}"


def test_an_edited_message_is_tokenized_again(page):
    panel = _tab(page, "Chat templates")
    chips = panel.get_by_title(re.compile(r"^#\d+ "))  # one chip per token: "#index 'text' id=… role=…"
    expect(chips.filter(has_text="Italy")).to_have_count(1)
    count_before = chips.count()

    last_message = panel.get_by_role("textbox", name="Textbox").last  # the rows have no label of their own
    expect(last_message).to_have_value("And of Italy?")
    last_message.fill("And of Spain and Portugal?")
    last_message.press("Enter")

    expect(panel.get_by_title(re.compile(r"^#\d+ ' Spain' .*role=user"))).to_have_count(1)
    expect(panel.get_by_title(re.compile(r"^#\d+ ' Portugal' .*role=user"))).to_have_count(1)
    expect(chips.filter(has_text="Italy")).to_have_count(0)
    expect(chips).to_have_count(count_before + 2)  # " and" and " Portugal" are new tokens
    # The row edited the conversation itself, so the JSON and the exact string agree with the chips.
    expect(panel.get_by_role("textbox", name="Code input container")).to_contain_text("And of Spain and Portugal?")


def _gb(label: str) -> float:
    """The GB value a chart bar reports, e.g. 'method: LoRA; GB: 0.09; part: Optimizer states'."""
    return float(re.search(r"GB: ([\d.]+)", label).group(1))


def test_the_chart_follows_the_lora_rank(page):
    panel = _tab(page, "LoRA / QLoRA memory")

    def bar(method, part):  # the chart is an SVG whose bars carry their data as aria-labels
        return panel.locator(
            f'[aria-roledescription="bar"][aria-label^="method: {method};"][aria-label$="part: {part}"]'
        )

    lora_optimizer, full_weights = bar("LoRA", "Optimizer states"), bar("Full fine-tuning", "Weights")
    expect(lora_optimizer).to_have_count(1)
    before, full_before = lora_optimizer.get_attribute("aria-label"), full_weights.get_attribute("aria-label")

    rank = panel.get_by_role("spinbutton", name="LoRA rank r")
    expect(rank).to_have_value("16")
    rank.fill("64")  # no Calculate click: the chart follows the rank by itself

    expect(panel.get_by_text("Rank 64, scaling")).to_be_visible()
    expect(lora_optimizer).not_to_have_attribute("aria-label", before)
    after = lora_optimizer.get_attribute("aria-label")
    # LoRA trains r·(d_in + d_out) parameters per layer, so 4× the rank is 4× the optimizer states.
    assert _gb(after) == pytest.approx(4 * _gb(before), rel=0.02), (before, after)
    assert full_weights.get_attribute("aria-label") == full_before  # full fine-tuning has no rank


def test_the_lens_scores_a_preset_and_shows_which_tokens_moved(page):
    panel = _tab(page, "Log-probs & DPO")
    panel.get_by_role("button", name="A confident wrong fact").click()
    summary = panel.locator("table").filter(has_text="σ(margin)")
    expect(summary).to_contain_text("Base + SFT + DPO (ours)", timeout=GENERATE_TIMEOUT_MS)
    expect(summary).to_contain_text("vs Base + SFT (ours)")
    # The Δlog-prob chips: each stage against its reference, coloured pushed up / pushed down.
    expect(panel.get_by_text("pushed up", exact=True).first).to_be_visible()
    expect(panel.get_by_text("Held-out preference accuracy", exact=False).first).to_be_visible()


def test_a_flashcard_flips(page):
    panel = _tab(page, "Lesson & quiz")
    panel.get_by_role("tab", name="Flashcards", exact=True).click()
    card = panel.locator(".pts-card")  # gr.HTML: the card is the app's own markup
    expect(card).to_contain_text("Box 1 · front")
    front = card.locator(".pts-card-text").inner_text()
    flashcard = next((c for c in LESSON.flashcards if " ".join(c.front.split()) == " ".join(front.split())), None)
    assert flashcard, f"the card shows {front!r}, which is no flashcard's front"

    card.click()

    expect(card).to_contain_text("Box 1 · back")
    expect(card.locator(".pts-card-text")).to_have_text(flashcard.back)
    expect(card).to_contain_text("Click the card to flip it back")


def test_the_quiz_records_an_answer(page):
    panel = _tab(page, "Lesson & quiz")
    panel.get_by_role("tab", name="Quiz", exact=True).click()
    expect(panel.get_by_text("Score: 0 / 0 answered")).to_be_visible()
    choices = panel.get_by_role("radio")
    expect(choices.first).to_be_visible()
    # The order is shuffled per visitor: find the question by its options, then pick the right one.
    shown = set(choices.evaluate_all("radios => radios.map(r => r.closest('label').innerText.trim())"))
    question = next((q for q in LESSON.questions if {o.text for o in q.options} == shown), None)
    assert question, f"the choices {shown!r} are no question's options"
    right = next(o.text for o in question.options if o.correct)

    panel.get_by_role("radio", name=right, exact=True).check()
    panel.get_by_role("button", name="Check answer").click()

    expect(panel.get_by_text("✅ Correct!")).to_be_visible()
    expect(panel.get_by_text("Score: 1 / 1 answered")).to_be_visible()
    expect(panel.get_by_role("button", name="Check answer")).to_be_disabled()  # one answer per question


def test_a_finished_preset_and_the_readme_screenshot(browser, app_url, tmp_path):
    """The README picture: every column's answer to a preset, its stop reason, and the p(end-of-turn) plot."""
    screenshot = (Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path) / "screenshot.png"
    page = _open(browser, app_url, viewport=SCREENSHOT_VIEWPORT)
    try:
        # The slider's default length, as a visitor gets it (and usually cached by the preset warm-up).
        page.get_by_role("button", name="What is the capital of France?").click()
        for label in COMPARER_COLUMNS:
            column = _column(page, label)
            expect(column.get_by_text("Stopped:")).to_be_visible(timeout=GENERATE_TIMEOUT_MS)
            assert column.get_by_role("textbox").input_value().strip(), f"the {label} column shows no text"
        expect(_column(page, "Base + SFT (ours)").get_by_role("textbox")).to_have_value(re.compile("Paris"))
        plot = page.locator(".vega-embed").filter(has_text="Probability of the end-of-turn token")
        expect(plot.locator('[aria-roledescription="line mark"]')).to_have_count(len(COMPARER_COLUMNS))

        page.mouse.move(0, 0)  # no hover highlight in the picture
        box = plot.bounding_box()
        bottom = box["y"] + box["height"] + 24 + page.evaluate("window.scrollY")  # down to the plot
        page.screenshot(
            path=screenshot,
            full_page=True,
            clip={"x": 0, "y": 0, "width": SCREENSHOT_VIEWPORT["width"], "height": bottom},
        )
        assert screenshot.stat().st_size > 10_000  # a real picture, not an empty page
    finally:
        page.context.close()


def test_the_lens_readme_screenshot(browser, app_url, tmp_path):
    """The README's second picture: the completion trap scored by every stage, the tokens each stage moved,
    and the held-out preference accuracy."""
    screenshot = (Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path) / "logprob_lens.png"
    page = _open(browser, app_url, viewport={"width": 1280, "height": 1000})
    try:
        panel = _tab(page, "Log-probs & DPO")
        panel.get_by_role("button", name="The completion trap").click()
        summary = panel.locator("table").filter(has_text="σ(margin)")
        expect(summary).to_contain_text("vs Base + SFT (ours)", timeout=GENERATE_TIMEOUT_MS)
        expect(panel.get_by_text("pushed up", exact=True).first).to_be_visible()
        expect(panel.get_by_text("Held-out preference accuracy", exact=False).first).to_be_visible()
        page.mouse.move(0, 0)  # no hover highlight in the picture
        panel.screenshot(path=screenshot)
        assert screenshot.stat().st_size > 10_000  # a real picture, not an empty page
    finally:
        page.context.close()
