"""A tiny document model (sections of text, lists, figures, tables) and its two writers: one
self-contained HTML file (each figure's SVG inlined) and a Markdown file (figures as relative
links to the same SVG files).  A figure is stored once, as ``figures/<name>.svg``.  Both writers
render the same blocks, so the two reports say the same thing."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


def fmt(x, digits: int = 3) -> str:
    """Numbers as a reader wants them: 3 significant digits, k/M for counts of cost, ``inf``
    spelled out, ``n/a`` for missing.  The *same* function formats tables and findings, so a
    number in a finding is literally the one in its table."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, str):
        return x
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if float(v).is_integer() and abs(v) < 1000:
        return str(int(v))
    a = abs(v)
    if 1e3 <= a < 1e6:
        return f"{v / 1e3:.{digits}g}k"
    if 1e6 <= a < 1e9:
        return f"{v / 1e6:.{digits}g}M"
    return f"{v:.{digits}g}"


def fmt_p(p) -> str:
    """p-values: ``< 0.001`` below a thousandth, else 2 significant digits."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "< 0.001" if p < 1e-3 else f"{p:.2g}"


def p_clause(p, name: str = "p") -> str:
    """'p = 0.03' or 'p < 0.001' (never 'p = < 0.001')."""
    s = fmt_p(p)
    return f"{name} {s}" if s.startswith("<") else f"{name} = {s}"


@dataclass
class Figure:
    name: str  # file stem under figures/
    caption: str


@dataclass
class Table:
    name: str  # file stem under tables/ (the CSV holds the raw numbers)
    display: pd.DataFrame  # formatted strings, as shown
    caption: str = ""
    max_rows: int = 60


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)  # str (paragraph) | list[str] | Figure | Table

    def add(self, block) -> Section:
        self.blocks.append(block)
        return self


@dataclass
class Document:
    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)
    footer: list[tuple[str, str]] = field(default_factory=list)  # provenance (key, value)


_CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff; --soft:#f6f8fa; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Helvetica, Arial, sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 1.8em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.3em; margin-top: 2em; padding-bottom: .3em; border-bottom: 1px solid var(--line); }
.subtitle { color: var(--muted); margin: 0 0 1em; }
nav { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; white-space: nowrap; }
ul.findings li { margin: .35em 0; }
figure { margin: 1.2em 0; }
figure svg { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption, .caption { color: var(--muted); font-size: .92em; margin-top: .3em; }
figcaption a, .caption a { color: var(--accent); }
.tablewrap { overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-size: .9em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 9px; text-align: right; }
th { background: var(--soft); }
td:first-child, th:first-child { text-align: left; }
footer { margin-top: 3em; padding-top: 1em; border-top: 1px solid var(--line); color: var(--muted); font-size: .85em; }
footer dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; }
footer dt { font-weight: 600; } footer dd { margin: 0; word-break: break-all; }
"""


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def _table_html(t: Table) -> str:
    d = t.display.head(t.max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in d.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in d.itertuples(index=False))
    more = (f" Showing {t.max_rows} of {len(t.display)} rows." if len(t.display) > t.max_rows else "")
    cap = html.escape(t.caption) + more
    return (f'<div class="tablewrap" id="table-{t.name}"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table><div class=\"caption\">{cap} "
            f'<a href="tables/{t.name}.csv">tables/{t.name}.csv</a></div></div>')


_SVG_START = re.compile(r"<svg\b")


def inline_svg(text: str, title: str) -> str:
    """An SVG file as an element of the HTML page: the XML prolog and doctype dropped, the fixed
    pixel size made scalable (the viewBox stays), a title for screen readers."""
    start = _SVG_START.search(text)
    body = text[start.start():] if start else text
    body = re.sub(r'(<svg\b[^>]*?)\swidth="[^"]*"\s+height="[^"]*"', r"\1", body, count=1)
    return body.replace(">", f' role="img" aria-label="{html.escape(title)}">', 1)


def write_html(doc: Document, out: Path, figures_dir: Path) -> Path:
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(doc.title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>", "<main>",
             f"<h1>{html.escape(doc.title)}</h1>"]
    if doc.subtitle:
        parts.append(f'<p class="subtitle">{html.escape(doc.subtitle)}</p>')
    parts.append("<nav>" + "".join(f'<a href="#{_anchor(s.title)}">{html.escape(s.title)}</a>'
                                   for s in doc.sections) + "</nav>")
    for s in doc.sections:
        parts.append(f'<section id="{_anchor(s.title)}"><h2>{html.escape(s.title)}</h2>')
        for b in s.blocks:
            if isinstance(b, str):
                parts.append(f"<p>{html.escape(b)}</p>")
            elif isinstance(b, list):
                parts.append('<ul class="findings">' + "".join(f"<li>{html.escape(x)}</li>" for x in b) + "</ul>")
            elif isinstance(b, Figure):
                svg = inline_svg((figures_dir / f"{b.name}.svg").read_text(encoding="utf-8"), b.caption)
                parts.append(f'<figure id="figure-{b.name}">{svg}<figcaption>{html.escape(b.caption)} '
                             f'<a href="figures/{b.name}.svg">figures/{b.name}.svg</a></figcaption></figure>')
            elif isinstance(b, Table):
                parts.append(_table_html(b))
        parts.append("</section>")
    if doc.footer:
        parts.append("<footer><h2>Provenance</h2><dl>" + "".join(
            f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in doc.footer) + "</dl></footer>")
    parts += ["</main>", "</body>", "</html>"]
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def _md_cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def write_markdown(doc: Document, out: Path) -> Path:
    lines = [f"# {doc.title}", ""]
    if doc.subtitle:
        lines += [f"_{doc.subtitle}_", ""]
    for s in doc.sections:
        lines += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, str):
                lines += [b, ""]
            elif isinstance(b, list):
                lines += [f"- {x}" for x in b] + [""]
            elif isinstance(b, Figure):
                lines += [f"![{b.caption}](figures/{b.name}.svg)", "", f"*{b.caption}*", ""]
            elif isinstance(b, Table):
                d = b.display.head(b.max_rows)
                lines.append("| " + " | ".join(_md_cell(c) for c in d.columns) + " |")
                lines.append("|" + "|".join("---" for _ in d.columns) + "|")
                lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in d.itertuples(index=False)]
                more = f" Showing {b.max_rows} of {len(b.display)} rows." if len(b.display) > b.max_rows else ""
                lines += ["", f"*{b.caption}*{more} ([csv](tables/{b.name}.csv))", ""]
    if doc.footer:
        lines += ["## Provenance", ""] + [f"- **{k}**: {v}" for k, v in doc.footer] + [""]
    out.write_text("\n".join(lines), encoding="utf-8")
    return out
