#!/usr/bin/env python3
"""Render benchmark results (TSV) as a self-contained SVG bar chart.

Usage:
    python3 bench/svgchart.py results.tsv chart.svg "title"

Input: tab-separated text. Lines starting with '#' and blank lines are
ignored. The first other line is a header naming the columns (in any order):

    load    name    req_s   p99_ms  cpu_us

`load` groups rows (e.g. "keep-alive", "close"); `name` is a configuration.
Numbers may be floats; an empty or "-" value means missing, and its bar is
drawn as "n/a". For each load group the chart has two stacked panels:
requests per second (higher is better) and CPU microseconds per request
(lower is better), each scaled to its own maximum. Names containing
"nginx", "lighttpd" or "floor" are reference anchors and get another colour.
Standard library only.
"""
import sys
from xml.sax.saxutils import escape

W, LABEL_W, BAR_MAX = 900, 220, 440   # canvas width, label column, longest bar
ROW_H, BAR_H = 22, 15
CORRAL, ANCHOR, GREY = "#3b78c4", "#e0892b", "#777"
ANCHOR_WORDS = ("nginx", "lighttpd", "floor")
COLUMNS = ("load", "name", "req_s", "p99_ms", "cpu_us")


def num(text, where):
    text = text.strip()
    if text in ("", "-"):
        return None
    try:
        return float(text)
    except ValueError:
        print(f"svgchart: {where}: not a number {text!r}, treated as missing",
              file=sys.stderr)
        return None


def read_tsv(path):
    """Return {load: [row dict, ...]} keeping first-seen order."""
    groups, header = {}, None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cells = line.split("\t")
            if header is None:
                header = [c.strip().lower() for c in cells]
                missing = [c for c in COLUMNS if c not in header]
                if missing:
                    sys.exit(f"svgchart: {path}: header lacks {', '.join(missing)}")
                continue
            cells += [""] * (len(header) - len(cells))
            row = dict(zip(header, cells))
            where = f"{path}:{lineno}"
            rec = {"name": row["name"].strip()}
            for col in ("req_s", "p99_ms", "cpu_us"):
                rec[col] = num(row[col], where)
            groups.setdefault(row["load"].strip(), []).append(rec)
    return groups


def is_anchor(name):
    return any(w in name.lower() for w in ANCHOR_WORDS)


def text(x, y, s, size=12, anchor="start", fill="#222", weight="normal"):
    return (f'<text x="{x}" y="{y}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{fill}" font-weight="{weight}">{escape(s)}</text>')


def panel(rows, key, title, y):
    """Draw one bar panel starting at y; return (svg parts, next y)."""
    out = [text(LABEL_W, y + 14, title, 13, weight="bold")]
    y += 24
    vals = [r[key] for r in rows if r[key] is not None]
    top = max(vals, default=0)
    for r in rows:
        v, mid = r[key], y + BAR_H / 2 + 4
        out.append(text(LABEL_W - 8, mid, r["name"], anchor="end"))
        end = LABEL_W
        if v is not None and top > 0:
            width = max(v / top * BAR_MAX, 1)
            colour = ANCHOR if is_anchor(r["name"]) else CORRAL
            out.append(f'<rect x="{LABEL_W}" y="{y}" width="{width:.1f}" '
                       f'height="{BAR_H}" fill="{colour}"/>')
            end += width
        if v is None:
            label = "n/a"
        elif key == "req_s":
            label = f"{v:,.0f}"
        else:
            label = f"{v:.2f}"
        extra = ""
        if key == "req_s" and r["p99_ms"] is not None:
            extra = (f'<tspan font-size="10" fill="{GREY}">'
                     f' (p99 {r["p99_ms"]:.2f} ms)</tspan>')
        out.append(f'<text x="{end + 5:.1f}" y="{mid}" font-size="12" '
                   f'fill="#222">{escape(label)}{extra}</text>')
        y += ROW_H
    return out, y + 12


def render(groups, title):
    parts, y = [], 10
    if title:
        parts.append(text(W / 2, y + 18, title, 18, "middle", weight="bold"))
        y += 32
    for i, (colour, label) in enumerate(((CORRAL, "corral"),
                                         (ANCHOR, "reference (nginx, lighttpd, C floor)"))):
        x = LABEL_W + i * 120
        parts.append(f'<rect x="{x}" y="{y}" width="12" height="12" fill="{colour}"/>')
        parts.append(text(x + 17, y + 10, label, 11))
    y += 28
    for load, rows in groups.items():
        parts.append(text(10, y + 16, f"load: {load}", 15, weight="bold"))
        parts.append(f'<line x1="10" y1="{y + 22}" x2="{W - 10}" y2="{y + 22}" '
                     f'stroke="#ccc"/>')
        y += 30
        for key, ptitle in (("req_s", "requests per second (higher is better)"),
                            ("cpu_us", "CPU \u00b5s per request (lower is better)")):
            svg, y = panel(rows, key, ptitle, y)
            parts += svg
        y += 10
    h = int(y)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" '
            f'viewBox="0 0 {W} {h}" font-family="sans-serif">\n'
            f'<title>{escape(title or "benchmark results")}</title>\n'
            f'<rect width="{W}" height="{h}" fill="#fff"/>\n'
            + "\n".join(parts) + "\n</svg>\n")


def main(argv):
    if len(argv) not in (3, 4):
        sys.exit("usage: python3 bench/svgchart.py results.tsv chart.svg [title]")
    groups = read_tsv(argv[1])
    if not groups:
        sys.exit(f"svgchart: {argv[1]}: no data rows")
    with open(argv[2], "w", encoding="utf-8") as f:
        f.write(render(groups, argv[3] if len(argv) == 4 else ""))


if __name__ == "__main__":
    main(sys.argv)
