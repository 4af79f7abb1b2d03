"""One document, two renderings: Markdown (figures linked) and self-contained HTML (figures inlined).

A document is a list of blocks: ("h1"|"h2"|"h3"|"p", text), ("list", [text]), ("code", text),
("table", headers, rows, aligns), ("figure", png_path, caption). Text may hold `code` spans.
"""
from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[tuple], md_path: Path) -> str:
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + b[1])
        elif kind == "p":
            out.append(b[1])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in b[1]))
        elif kind == "code":
            out.append("```bash\n" + b[1].rstrip("\n") + "\n```")
        elif kind == "table":
            headers, rows, aligns = b[1], b[2], b[3]
            sep = ["---:" if a == "r" else ":---" if a == "l" else ":---:" for a in aligns]
            lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |", "| " + " | ".join(sep) + " |"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "figure":
            rel = os.path.relpath(b[1], md_path.parent)
            out.append(f"![{b[2]}]({Path(rel).as_posix()})\n\n*{b[2]}*")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)
    return t


# Tables: numbers never wrap inside a cell (only step names and headers do), and a table wider than the
# page scrolls inside its own box; below 900 px the text and padding shrink so that a report table fits
# an 800 px window. Code blocks (the reproduce commands) wrap instead of being cut off.
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}.wide{overflow-x:auto;margin:1em 0}table{border-collapse:collapse;
font-size:0.9em}th,td{border:1px solid #ccc;padding:0.3em 0.6em}th{background:#f3f3f3}td{white-space:nowrap}
td.l{white-space:normal;min-width:7em}td.r{text-align:right}td.c{text-align:center}code{background:#f4f4f4;
padding:0 0.2em}pre{background:#f4f4f4;padding:0.8em;white-space:pre-wrap;overflow-wrap:anywhere}
figure{margin:1.2em 0}figure img{max-width:100%}figcaption{font-style:italic;color:#555;font-size:0.9em}
@media (max-width:900px){body{margin:1em auto;padding:0 0.5em}table{font-size:0.75em}th,td{padding:0.2em 0.3em}}"""


def to_html(blocks: list[tuple], title: str) -> str:
    out = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{_inline(b[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(b[1])}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "code":
            out.append(f"<pre><code>{html.escape(b[1])}</code></pre>")
        elif kind == "table":
            headers, rows, aligns = b[1], b[2], b[3]
            t = ["<div class=\"wide\"><table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in headers)
                 + "</tr></thead><tbody>"]
            for row in rows:
                cells = "".join(f"<td class=\"{a}\">{_inline(str(c))}</td>" for c, a in zip(row, aligns))
                t.append(f"<tr>{cells}</tr>")
            out.append("".join(t) + "</tbody></table></div>")
        elif kind == "figure":
            data = base64.b64encode(Path(b[1]).read_bytes()).decode("ascii")
            out.append(f"<figure><img alt=\"{html.escape(b[2])}\" src=\"data:image/png;base64,{data}\">"
                       f"<figcaption>{_inline(b[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
