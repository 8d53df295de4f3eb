"""Bar charts as SVG text: drawn here so the report opens offline and needs no plotting library. Every label
is escaped (labels come from data)."""

from __future__ import annotations

from html import escape

BAR = 18
LABEL_W = 260
PLOT_W = 360


def top(pairs: list[tuple[str, int]], most: int = 20) -> list[tuple[str, int]]:
    """The `most` largest, the rest summed as one bar."""
    pairs = sorted(pairs, key=lambda p: (-p[1], p[0]))
    if len(pairs) <= most:
        return pairs
    rest = sum(n for _, n in pairs[most - 1:])
    return pairs[: most - 1] + [(f"({len(pairs) - most + 1} more)", rest)]


def bar_chart(pairs: list[tuple[str, int]], title: str, most: int = 20) -> str:
    pairs = top(pairs, most)
    height = BAR * len(pairs) + 8
    peak = max((n for _, n in pairs), default=1) or 1
    total = sum(n for _, n in pairs) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{LABEL_W + PLOT_W + 90}" '
           f'height="{height}" role="img" aria-label="{escape(title)}">', f"<title>{escape(title)}</title>"]
    for i, (label, n) in enumerate(pairs):
        y = 4 + i * BAR
        w = max(1, round(PLOT_W * n / peak))
        shown = label if len(label) <= 40 else label[:39] + "…"
        out.append(f'<text x="{LABEL_W - 6}" y="{y + 13}" text-anchor="end">{escape(shown or "(none)")}'
                   f'<title>{escape(label)}</title></text>')
        out.append(f'<rect x="{LABEL_W}" y="{y + 2}" width="{w}" height="{BAR - 5}" fill="#3b6ea5"/>')
        out.append(f'<text x="{LABEL_W + w + 4}" y="{y + 13}">{n:,} ({100 * n / total:.1f}%)</text>')
    out.append("</svg>")
    return "".join(out)
