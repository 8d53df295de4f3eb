"""Bar charts as SVG text: drawn here so the report opens offline and needs no plotting library. Every label
is escaped (labels come from data).

The label and count columns are as wide as their texts, measured with an upper bound of each glyph's width
at the chart's 12 px font (app.css), so no text is cut off at an edge; a label wider than LABEL_MAX is
shortened with an ellipsis (its full text is the tooltip)."""

from __future__ import annotations

from html import escape

BAR = 18
LABEL_MAX = 300
PLOT_W = 360
PAD = 8
# upper bounds of glyph widths (px) at 12 px in common sans-serif fonts
NARROW, WIDE = set("ijlrtfI.,:;!|'()[]{} "), set("MWmw@%")


def text_width(text: str) -> float:
    """At least the width the text takes on screen (over-estimated, never under)."""
    width = 0.0
    for ch in text:
        if ch in NARROW:
            width += 4.5
        elif ch in WIDE:
            width += 12.0
        elif ch.isascii():
            width += 9.0 if ch.isupper() else 7.5
        else:
            width += 12.5
    return width


def fit(text: str, width: float) -> str:
    """The text, shortened with an ellipsis to fit `width`."""
    if text_width(text) <= width:
        return text
    while text and text_width(text + "…") > width:
        text = text[:-1]
    return text + "…"


def top(pairs: list[tuple[str, int]], most: int = 20) -> list[tuple[str, int]]:
    """The `most` largest, the rest summed as one bar."""
    pairs = sorted(pairs, key=lambda p: (-p[1], p[0]))
    if len(pairs) <= most:
        return pairs
    rest = sum(n for _, n in pairs[most - 1 :])
    return pairs[: most - 1] + [(f"({len(pairs) - most + 1} more)", rest)]


def bar_chart(pairs: list[tuple[str, int]], title: str, most: int = 20) -> str:
    pairs = top(pairs, most)
    height = BAR * len(pairs) + 8
    peak = max((n for _, n in pairs), default=1) or 1
    total = sum(n for _, n in pairs) or 1
    shown = [fit(label or "(none)", LABEL_MAX) for label, _ in pairs]
    counts = [f"{n:,} ({100 * n / total:.1f}%)" for _, n in pairs]
    label_w = PAD + max((text_width(t) for t in shown), default=0) + 6
    count_w = max((text_width(t) for t in counts), default=0) + PAD
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{round(label_w + PLOT_W + 4 + count_w)}" '
        f'height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for i, ((label, n), text, count) in enumerate(zip(pairs, shown, counts)):
        y = 4 + i * BAR
        w = max(1, round(PLOT_W * n / peak))
        out.append(
            f'<text x="{label_w - 6:.0f}" y="{y + 13}" text-anchor="end">{escape(text)}'
            f"<title>{escape(label or '(none)')}</title></text>"
        )
        out.append(f'<rect x="{label_w:.0f}" y="{y + 2}" width="{w}" height="{BAR - 5}" fill="#3b6ea5"/>')
        out.append(f'<text x="{label_w + w + 4:.0f}" y="{y + 13}">{count}</text>')
    out.append("</svg>")
    return "".join(out)
