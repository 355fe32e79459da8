"""`zkfp identify --html`: one self-contained HTML file (no script, no external resource; every
image inlined as a data: URI) showing the suspect's fingerprint beside its best matches, with
scores, verdicts and which matches are proven, then the whole ranking as a table."""

from __future__ import annotations

import base64
import html

from fingerprint.identify import Identification, Match
from fingerprint.render import SIZE, png_bytes

TOP = 6
_VERDICT_COLOUR = {"same-lineage": "#1b7f3b", "inconclusive": "#a86b00", "unrelated": "#6b6b6b"}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
.cards { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; padding: 8px; border: 1px solid #ccc; border-radius: 6px; width: %(size)dpx; }
figure.suspect { border: 2px solid #224; }
figure img { display: block; width: %(size)dpx; height: %(size)dpx; }
figcaption { font-size: 14px; margin-top: 6px; line-height: 1.4; overflow-wrap: anywhere; }
.verdict { font-weight: bold; }
table { border-collapse: collapse; margin-top: 24px; font-size: 14px; }
td, th { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }
""" % {"size": SIZE}


def data_uri(v) -> str:
    """The fingerprint image of v as an inline PNG."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(v)).decode("ascii")


def _proven(m: Match) -> str:
    if not m.proven:
        return "not proven"
    kind = f", {m.srs_kind} SRS" if m.srs_kind and m.srs_kind != "unknown" else ""
    return f"proven{kind} (commitment {html.escape((m.commitment_digest or '')[:12])}…)"


def _figure(cls: str, alt: str, v, caption: str) -> str:
    return (f'<figure class="{cls}"><img alt="{html.escape(alt)}" src="{data_uri(v)}" width="{SIZE}" '
            f'height="{SIZE}"><figcaption>{caption}</figcaption></figure>')


def _match_figure(rank: int, m: Match) -> str:
    colour = _VERDICT_COLOUR.get(m.verdict, "#222")
    caption = (f"#{rank} <b>{html.escape(m.name)}</b><br>similarity {m.similarity:.2f} ({m.basis})<br>"
               f'<span class="verdict" style="color:{colour}">{m.verdict}</span><br>{_proven(m)}'
               + (f"<br><small>{html.escape(m.note)}</small>" if m.note else ""))
    return _figure("match", f"fingerprint of {m.name}", m.v, caption)


def html_report(ident: Identification, top: int = TOP) -> str:
    ranked = [m for m in ident.matches if m.similarity is not None]
    best = ranked[:top]
    shown_key = best[0].suspect_key if best else None
    cards = []
    if shown_key is not None:
        how = "fingerprinted on the registered token ids" if ident.fingerprinted else "as published"
        cards.append(_figure("suspect", "fingerprint of the suspect", ident.suspect_fps[shown_key].v,
                             f"<b>suspect</b><br>{html.escape(ident.suspect)}<br>{how}"))
    for rank, m in enumerate(best, start=1):
        if m.suspect_key != shown_key:  # compared on another token list: show the suspect on those rows
            cards.append(_figure("suspect", "fingerprint of the suspect on other token ids",
                                 ident.suspect_fps[m.suspect_key].v, "<b>suspect</b> on the token ids of the next match"))
            shown_key = m.suspect_key
        cards.append(_match_figure(rank, m))
    rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(m.name)}</td>"
        + (f"<td>{m.similarity:.2f}</td><td>{m.basis}</td><td>{m.verdict}</td>" if m.similarity is not None
           else f'<td colspan="3">not comparable: {html.escape(m.reason or "")}</td>')
        + f"<td>{_proven(m)}</td></tr>"
        for i, m in enumerate(ident.matches, start=1))
    summary = (f"{len(ranked)} of {len(ident.matches)} registered fingerprints compared; best first "
               "(similarity: 100 × cosine per layer, layers aligned: on the weights where the entry's release is at "
               "hand, else on the per-head vectors where both carry them, else on the invariants where both do, else "
               "on v). Were every compared entry "
               f"unrelated to the suspect, the implied chance that one is still called same-lineage is at most "
               f"{ident.false_positive_bound():.1e}.")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>zkfp identify: {html.escape(ident.suspect)}</title>
<style>{_CSS}</style></head>
<body>
<h1>Which registered model is the suspect derived from?</h1>
<p>{summary}</p>
<div class="cards">{''.join(cards)}</div>
<table><thead><tr><th>rank</th><th>name</th><th>similarity</th><th>basis</th><th>verdict</th><th>proof</th></tr></thead>
<tbody>{rows}</tbody></table>
</body></html>
"""
