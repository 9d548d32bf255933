#!/usr/bin/env python3
"""Renders benchmark tables as SVG bar charts: one chart per JSON file in bench/charts (or the
files given), written next to it with the .svg suffix.

  python3 bench/render_charts.py [--check] [bench/charts/NAME.json ...]

--check writes nothing and fails (exit 1) when an SVG differs from what its JSON renders to (CI).

A chart file holds what was measured and where:
  {"title": "...", "machine": "...", "date": "YYYY-MM-DD", "command": "...", "unit": "TFLOP/s",
   "series": ["FMHA cuda-flash", "PyTorch flash (FA2)", ...],
   "rows": [{"label": "bf16 4,4096,32,64", "values": [276.7, 281.8, null, ...]}, ...]}
A null value (a peer that refused the case) draws no bar and says "refused". Each row gets one bar
per series, FMHA's first, with its value and, for the peers, FMHA's ratio to it. Standard library
only: the charts are regenerated wherever the numbers are.
"""
import json, pathlib, sys
from xml.sax.saxutils import escape

COLORS = ["#1f6feb", "#8b949e", "#d29922", "#2da44e", "#a371f7"]
BAR, GAP, LABEL_WIDTH, PLOT_WIDTH, MARGIN = 14, 10, 250, 520, 16


def render(chart):
    series, rows = chart["series"], chart["rows"]
    largest = max((v for row in rows for v in row["values"] if v is not None), default=1.0)
    group = len(series) * BAR + GAP
    legend_height = 22 * ((len(series) + 2) // 3)
    top = MARGIN + 28 + legend_height
    height = top + len(rows) * group + 58
    width = MARGIN * 2 + LABEL_WIDTH + PLOT_WIDTH + 110
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{MARGIN}" y="{MARGIN + 12}" font-size="15" font-weight="bold">{escape(chart["title"])}</text>']
    for index, name in enumerate(series):
        x, y = MARGIN + (index % 3) * 260, MARGIN + 30 + 22 * (index // 3)
        out.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{COLORS[index % len(COLORS)]}"/>')
        out.append(f'<text x="{x + 18}" y="{y}">{escape(name)}</text>')
    for row_index, row in enumerate(rows):
        y0 = top + row_index * group
        out.append(f'<text x="{MARGIN + LABEL_WIDTH - 8}" y="{y0 + len(series) * BAR / 2 + 4}" text-anchor="end">{escape(row["label"])}</text>')
        ours = row["values"][0]
        for index, value in enumerate(row["values"]):
            y = y0 + index * BAR
            x = MARGIN + LABEL_WIDTH
            if value is None:
                out.append(f'<text x="{x + 4}" y="{y + BAR - 3}" fill="#57606a">refused</text>')
                continue
            length = PLOT_WIDTH * value / largest
            out.append(f'<rect x="{x}" y="{y + 1}" width="{length:.1f}" height="{BAR - 2}" fill="{COLORS[index % len(COLORS)]}"/>')
            text = f"{value:.1f}"
            if index > 0 and ours is not None and value > 0:
                text += f"  (FMHA {ours / value:.2f}×)"
            out.append(f'<text x="{x + length + 4:.1f}" y="{y + BAR - 3}">{escape(text)}</text>')
    axis_y = top + len(rows) * group
    out.append(f'<line x1="{MARGIN + LABEL_WIDTH}" y1="{top - 4}" x2="{MARGIN + LABEL_WIDTH}" y2="{axis_y}" stroke="#57606a"/>')
    out.append(f'<text x="{MARGIN + LABEL_WIDTH + PLOT_WIDTH}" y="{axis_y + 14}" text-anchor="end">{escape(chart["unit"])}</text>')
    footer = [f'{chart["machine"]}, {chart["date"]}', chart["command"]]
    for index, line in enumerate(footer):
        out.append(f'<text x="{MARGIN}" y="{axis_y + 32 + 14 * index}" fill="#57606a">{escape(line)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    arguments = sys.argv[1:]
    check = "--check" in arguments
    paths = [pathlib.Path(p) for p in arguments if p != "--check"] \
        or sorted((pathlib.Path(__file__).parent / "charts").glob("*.json"))
    stale = []
    for path in paths:
        chart = json.loads(path.read_text())
        for row in chart["rows"]:
            if len(row["values"]) != len(chart["series"]):
                sys.exit(f"{path}: row {row['label']!r} has {len(row['values'])} values for {len(chart['series'])} series")
        svg, target = render(chart), path.with_suffix(".svg")
        if check:
            if not target.exists() or target.read_text() != svg:
                stale.append(str(target))
        else:
            target.write_text(svg)
            print(f"wrote {target}")
    if stale:
        sys.exit("stale charts (run python3 bench/render_charts.py): " + ", ".join(stale))


if __name__ == "__main__":
    main()
