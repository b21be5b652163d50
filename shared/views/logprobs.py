"""HTML and Markdown views of the log-prob lens (shared/logprobs.py): plain functions, no gradio.

Every view reads the lens's JSON result (`{"beta", "rows"}`), so what the page shows is exactly what the
`/score` API and the CLI return. Colours: per-token log-probs run from green (likely) to red (unlikely);
per-token Δlog-prob is green where a stage pushed a token up and red where it pushed it down.
"""

from __future__ import annotations

import html
import math
import re

from shared.adapters import PROJECT_ADAPTERS

_FONT = "font-family:ui-sans-serif,system-ui,sans-serif;color:#111827"
_MONO = "font-family:ui-monospace,SFMono-Regular,Menlo,monospace"
_BOX = f"{_FONT};background:#ffffff;border:1px solid #e5e7eb;border-radius:8px;padding:10px 12px;margin:4px 0"
_SPECIAL = re.compile(r"^<[a-z_]+>$")
MODEL_TITLES = {"base": "Base (embedded Gemma 3 270M)", **{k: a.title for k, a in PROJECT_ADAPTERS.items()}}
# log-probs below this (nats) all get the darkest red: p < e^-8 ≈ 0.03 %.
_LOGP_FLOOR = -8.0
# |Δlog-prob| at which the colour is fully saturated (nats): a factor of e^3 ≈ 20 in probability.
_DELTA_FULL = 3.0


def _visible(text: str) -> str:
    """A token with its whitespace made visible: a chip that is only a newline must still show."""
    return html.escape(text).replace(" ", "·").replace("\n", "↵").replace("\t", "→") or "∅"


def _title(label: str) -> str:
    return html.escape(MODEL_TITLES.get(label, label))


def _fmt(x: float, digits: int = 2) -> str:
    return f"{x:+.{digits}f}" if x else f"{0:.{digits}f}"


def placeholder_html(text: str = "Pick a preset or type a pair, then press Score.") -> str:
    return f'<div style="{_BOX};color:#6b7280">{html.escape(text)}</div>'


# --------------------------------------------------------------------------------------------
# The numbers
# --------------------------------------------------------------------------------------------


_CELL = "padding:5px 8px;border-bottom:1px solid #e5e7eb;"


def _td(content: str, style: str = "", tag: str = "td", span: int = 1) -> str:
    colspan = f" colspan='{span}'" if span > 1 else ""
    return f"<{tag}{colspan} style='{_CELL}{style}'>{content}</{tag}>"


def summary_html(result: dict | None) -> str:
    """One row per model: log π of each answer, SFT loss, and (against its reference) DPO's quantities."""
    if not result:
        return placeholder_html()
    rows = result["rows"]
    n_chosen, n_rejected = len(rows[0]["chosen_tokens"]), len(rows[0]["rejected_tokens"])
    head = "".join(
        _td(text, "text-align:left" if i == 0 else "", tag="th")
        for i, text in enumerate(
            [
                "Model",
                f"log π(chosen)<br><small>{n_chosen} tokens</small>",
                f"log π(rejected)<br><small>{n_rejected} tokens</small>",
                "SFT loss<br><small>chosen / rejected</small>",
                "Reward<br><small>chosen</small>",
                "Reward<br><small>rejected</small>",
                "Margin",
                "σ(margin)<br><small>p(prefers chosen)</small>",
                "DPO loss",
            ]
        )
    )
    body = []
    for row in rows:
        ref = row.get("reference")
        name = _title(row["model"]) + (f"<br><small>vs {_title(ref)}</small>" if ref else "")
        cells = [
            _td(name, "text-align:left"),
            _td(f"{row['chosen_logp']:.2f}"),
            _td(f"{row['rejected_logp']:.2f}"),
            _td(f"{row['chosen_sft_loss']:.2f} / {row['rejected_sft_loss']:.2f}"),
        ]
        if "margin" in row:
            good = row["margin"] > 0
            bar = (
                "<div style='background:#e5e7eb;border-radius:3px;height:6px;margin-top:3px'>"
                f"<div style='background:{'#16a34a' if good else '#dc2626'};width:{100 * row['p_chosen']:.0f}%;"
                "height:6px;border-radius:3px'></div></div>"
            )
            cells += [
                _td(_fmt(row["chosen_reward"])),
                _td(_fmt(row["rejected_reward"])),
                _td(_fmt(row["margin"]), f"background:{'#dcfce7' if good else '#fee2e2'};font-weight:700"),
                _td(f"{row['p_chosen']:.2f}{bar}"),
                _td(f"{row['dpo_loss']:.3f}"),
            ]
        else:
            cells.append(_td("the starting point: no reference", "color:#6b7280;text-align:center", span=5))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<div style='{_BOX}'><table style='width:100%;border-collapse:collapse;text-align:right;font-size:14px'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"<div style='color:#4b5563;font-size:12px;margin-top:6px'>β = {result['beta']:g} (the DPO recipe's). "
        "Rewards, margin and DPO loss compare each stage with the one before it, which is how DPO is "
        "trained: SFT+DPO started from SFT and kept a frozen copy of it as reference (in two rounds, so "
        "against SFT its reward is both rounds' added up).</div></div>"
    )


# --------------------------------------------------------------------------------------------
# Token chips
# --------------------------------------------------------------------------------------------


def _chip(token: str, value: str, background: str, tooltip: str) -> str:
    border = "2px solid #374151" if _SPECIAL.match(token) else "1px solid rgba(0,0,0,.08)"
    return (
        f"<span title='{html.escape(tooltip, quote=True)}' style='display:inline-flex;flex-direction:column;"
        f"align-items:center;background:{background};border:{border};border-radius:5px;padding:1px 5px;"
        f"margin:2px;line-height:1.25;color:#111827'>"
        f"<span style='{_MONO};font-size:13px;white-space:pre'>{_visible(token)}</span>"
        f"<span style='font-size:10px;color:#374151'>{value}</span></span>"
    )


def _logp_colour(logp: float) -> str:
    """Green for likely tokens through yellow to red for unlikely ones (hue 120° → 0°)."""
    t = max(0.0, min(1.0, 1.0 - logp / _LOGP_FLOOR))
    return f"hsl({120 * t:.0f},75%,85%)"


def _delta_colour(delta: float) -> str:
    strength = min(1.0, abs(delta) / _DELTA_FULL)
    hue = 140 if delta > 0 else 0
    return f"hsl({hue},70%,{97 - 30 * strength:.0f}%)"


def _answer_line(label: str, tokens: list[dict], chip) -> str:
    chips = "".join(chip(t) for t in tokens)
    return (
        f"<div style='display:flex;align-items:flex-start;gap:8px;margin:3px 0'>"
        f"<div style='min-width:72px;font-size:12px;color:#4b5563;padding-top:6px'>{label}</div>"
        f"<div style='display:flex;flex-wrap:wrap'>{chips}</div></div>"
    )


def tokens_html(result: dict | None) -> str:
    """Each model's per-token log-probs of both answers, as chips (hover a chip for its probability)."""
    if not result:
        return placeholder_html()

    def chip(t: dict) -> str:
        p = math.exp(t["logp"])
        return _chip(t["token"], f"{t['logp']:.2f}", _logp_colour(t["logp"]), f"log p = {t['logp']:.3f}, p = {p:.2%}")

    blocks = []
    for row in result["rows"]:
        blocks.append(
            f"<div style='{_BOX}'><div style='font-weight:600;margin-bottom:4px'>{_title(row['model'])}</div>"
            + _answer_line(f"chosen<br>Σ {row['chosen_logp']:.2f}", row["chosen_tokens"], chip)
            + _answer_line(f"rejected<br>Σ {row['rejected_logp']:.2f}", row["rejected_tokens"], chip)
            + "</div>"
        )
    legend = (
        f"<div style='{_FONT};font-size:12px;margin:2px 0 6px'>Each chip: a token of the answer and its "
        f"log-probability given everything before it. "
        f"<span style='background:{_logp_colour(-0.1)};padding:0 5px;border-radius:4px'>likely</span> "
        f"<span style='background:{_logp_colour(-4)};padding:0 5px;border-radius:4px'>so-so</span> "
        f"<span style='background:{_logp_colour(-8)};padding:0 5px;border-radius:4px'>unlikely</span> "
        "· a dark border marks the template's special tokens · the sum Σ is the answer's log π.</div>"
    )
    return legend + "".join(blocks)


def deltas_html(result: dict | None) -> str:
    """Per-token Δlog-prob of each stage against its reference: where SFT, then DPO, changed its mind."""
    if not result:
        return placeholder_html()

    def chip(t: dict) -> str:
        direction = "pushed up" if t["delta"] > 0 else "pushed down"
        tooltip = f"Δ log p = {t['delta']:+.3f} ({direction}); log p now {t['logp']:.3f}"
        return _chip(t["token"], _fmt(t["delta"]), _delta_colour(t["delta"]), tooltip)

    blocks = []
    for row in result["rows"]:
        if "reference" not in row:
            continue
        delta_chosen = row["chosen_logp"] - _row(result, row["reference"])["chosen_logp"]
        delta_rejected = row["rejected_logp"] - _row(result, row["reference"])["rejected_logp"]
        blocks.append(
            f"<div style='{_BOX}'><div style='font-weight:600;margin-bottom:4px'>{_title(row['model'])} "
            f"<span style='font-weight:400;color:#4b5563'>vs {_title(row['reference'])}</span></div>"
            + _answer_line(f"chosen<br>Σ {_fmt(delta_chosen)}", row["chosen_tokens"], chip)
            + _answer_line(f"rejected<br>Σ {_fmt(delta_rejected)}", row["rejected_tokens"], chip)
            + f"<div style='font-size:12px;color:#4b5563;margin-top:4px'>β × ΣΔ: reward chosen "
            f"{_fmt(row['chosen_reward'])}, rejected {_fmt(row['rejected_reward'])} → margin "
            f"<b>{_fmt(row['margin'])}</b></div></div>"
        )
    legend = (
        f"<div style='{_FONT};font-size:12px;margin:2px 0 6px'>Δ = log p under the stage minus log p under its "
        f"reference, token by token. <span style='background:{_delta_colour(2)};padding:0 5px;"
        f"border-radius:4px'>pushed up</span> <span style='background:{_delta_colour(-2)};padding:0 5px;"
        "border-radius:4px'>pushed down</span> · the darker, the bigger the change.</div>"
    )
    return legend + "".join(blocks)


def _row(result: dict, label: str) -> dict:
    return next(r for r in result["rows"] if r["model"] == label)


# --------------------------------------------------------------------------------------------
# Held-out preference accuracy
# --------------------------------------------------------------------------------------------


def _bar(label: str, share: float | None, colour: str, note: str = "") -> str:
    if share is None:
        return ""
    return (
        "<div style='display:flex;align-items:center;gap:8px;margin:3px 0'>"
        f"<div style='width:190px;font-size:13px'>{label}</div>"
        "<div style='flex:1;background:#f3f4f6;border-radius:4px;height:18px;position:relative;max-width:420px'>"
        f"<div style='background:{colour};width:{100 * share:.1f}%;height:18px;border-radius:4px'></div>"
        "<div style='position:absolute;left:50%;top:0;bottom:0;border-left:1px dashed #9ca3af'></div></div>"
        f"<div style='width:130px;font-size:13px;font-weight:600'>{share:.0%}"
        f"<span style='font-weight:400;color:#6b7280'> {note}</span></div></div>"
    )


def accuracy_html(record: dict | None) -> str:
    """The stored held-out preference accuracy as bars (a note instead when none is stored)."""
    if record is None:
        return placeholder_html(
            "No held-out preference accuracy is stored next to the adapters yet: "
            "`python -m train.evaluate` measures it (train/adapters/preference_accuracy.json)."
        )
    models = record["models"]
    rewards = "".join(
        _bar(
            f"{_title(label)}<br><small>vs {_title(entry['reference'])}</small>",
            entry["accuracy"],
            "#2563eb",
            f"({entry['correct']}/{record['pairs']})",
        )
        for label, entry in models.items()
        if "accuracy" in entry
    )
    raw = "".join(_bar(_title(label), entry.get("logp_prefers_chosen"), "#9ca3af") for label, entry in models.items())
    stale = (
        "<div style='color:#b45309;font-size:12px;margin-top:4px'>⚠️ The adapters changed after this was "
        "measured: run <code>python -m train.evaluate</code> again.</div>"
        if record.get("stale")
        else ""
    )
    return (
        f"<div style='{_BOX}'>"
        f"<div style='font-weight:600'>Held-out preference accuracy: {record['pairs']} pairs never trained on</div>"
        "<div style='font-size:12px;color:#4b5563;margin-bottom:6px'>Share of pairs where the implicit reward "
        "(the model's log π against its reference's) prefers the chosen answer. The dashed line is a coin flip.</div>"
        f"{rewards}"
        "<div style='font-size:12px;color:#4b5563;margin:8px 0 4px'>For contrast: how often raw log π alone "
        "prefers the chosen answer (it also rewards being short).</div>"
        f"{raw}{stale}</div>"
    )


# --------------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------------


def explainer_markdown(beta: float | None) -> str:
    """What each number means, in the lesson's terms (concept 7: the alignment problem)."""
    beta_text = f"{beta:g}" if beta is not None else "the recipe's β"
    return f"""
### What the numbers mean
"Be helpful" cannot be written as a loss. What a model *can* compute is how likely it finds a text,
and both post-training steps push on that one number.

- **log π(answer)**: the sum of the answer's token log-probabilities, given the prompt in the chat
  template. Always ≤ 0; closer to 0 = more likely. Longer answers add more negative terms, so raw log π
  favours short answers.
- **SFT loss**: the average negative log-probability per answer token, over exactly the tokens the
  assistant-only loss mask trains (the answer and its `<end_of_turn>`). SFT lowers it on good answers.
- **Reward**: DPO never trains a reward model; its reward is implicit, β × (log π − log π of the
  reference), with β = {beta_text}. Positive: this stage made the answer likelier than its reference did.
  The SFT+DPO adapter was trained in two DPO rounds (the second with the first as reference, same β), so
  its reward against SFT is the two rounds' rewards added up.
- **Margin**: reward(chosen) − reward(rejected). Length and difficulty cancel out, because both sides are
  measured against the same reference.
- **σ(margin)**: the probability, under the Bradley–Terry model DPO assumes, that this stage prefers the
  chosen answer. 0.5 = no preference.
- **DPO loss**: −log σ(margin), what DPO minimises: about 0.69 with no preference, near 0 when the chosen
  answer clearly wins.
- **Δlog-prob per token**: where the change happened. DPO often pushes *both* answers down, the rejected
  one much further: the margin is what it optimises, not the likelihood of either.
"""


def presets_markdown(presets) -> str:
    """One line per teaching preset: what it shows."""
    return "\n".join(f"- **{html.escape(p.title)}**: {p.shows}" for p in presets if not p.heldout)
