"""The report's pages, rendered from its sections (tables as DataFrames) and figures.

``report.md`` gets Markdown tables; ``report.html`` gets the same tables through pandas'
``DataFrame.to_html`` inside a Jinja2 template (no Markdown is re-parsed into HTML), each table in a
box that scrolls sideways when it is wider than the page, figures embedded.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd


@dataclass
class Section:
    """One section of the report: a title, a table (or none) and a note under it."""

    title: str
    table: pd.DataFrame | None = None
    note: str = ""


NO_ROWS = "(no rows)"


def md_table(df: pd.DataFrame) -> str:
    """A Markdown table; a ``|`` inside a cell is escaped."""
    if df.empty:
        return f"_{NO_ROWS}_\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(str(c).replace("|", "\\|") for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def markdown_page(title: str, command: str, sections: list[Section], figures: dict[str, Path],
                  captions: dict[str, str], n_head: int) -> str:  # fmt: skip
    """report.md: the first ``n_head`` sections, the figures, then the rest."""

    def block(s: Section) -> list[str]:
        out = [f"## {s.title}\n"]
        if s.table is not None:
            out.append(md_table(s.table))
        return out + ([s.note + "\n"] if s.note else [""])

    md = [f"# Report: {title}\n", f"Command: `{command}`\n"]
    for s in sections[:n_head]:
        md += block(s)
    md.append("## Figures\n")
    for name, p in figures.items():
        md += [
            f"### {name.replace('_', ' ')}\n",
            f"![{name}](figures/{p.name})\n",
            captions.get(name, "") + f" ([PDF](figures/{p.stem}.pdf))\n",
        ]
    for s in sections[n_head:]:
        md += block(s)
    return "\n".join(md)


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
.table{overflow-x:auto;max-width:100%;margin:1em 0}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0}img{max-width:100%}figure{margin:1.5em 0}figcaption{font-size:12px;color:#555}
code{background:#f4f4f4}p.note{font-size:13px;color:#333}"""

PAGE = jinja2.Environment(autoescape=True).from_string(
    """<!doctype html><html><head><meta charset="utf-8"><title>ccm_madrl report: {{ title }}</title>
<style>{{ css|safe }}</style></head><body>
<h1>Report: {{ title }}</h1><p>Command: <code>{{ command }}</code></p>
{% macro section(s) %}<h2>{{ s.title }}</h2>
{% if s.table is not none %}{% if s.table_html %}<div class="table">{{ s.table_html|safe }}</div>{% else %}<p><em>{{ no_rows }}</em></p>{% endif %}{% endif %}
{% if s.note %}<p class="note">{{ s.note_html|safe }}</p>{% endif %}
{% endmacro %}
{% for s in head %}{{ section(s) }}{% endfor %}
<h2>Figures</h2>
{% for f in figures %}<figure><img alt="{{ f.name }}" src="data:image/png;base64,{{ f.data }}"><figcaption>{{ f.caption }}</figcaption></figure>
{% endfor %}
{% for s in tail %}{{ section(s) }}{% endfor %}
</body></html>
"""
)


def _inline(text: str) -> str:
    """A note's text as HTML: escaped, with its `code` spans set as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _view(s: Section) -> dict:
    table_html = ""
    if s.table is not None and not s.table.empty:
        table_html = s.table.to_html(index=False, na_rep="", border=0, escape=True)
    return {"title": s.title, "table": s.table, "table_html": table_html, "note": s.note,
            "note_html": _inline(s.note)}  # fmt: skip


def html_page(title: str, command: str, sections: list[Section], figures: dict[str, Path],
              captions: dict[str, str], n_head: int) -> str:  # fmt: skip
    """report.html: self-contained (inline CSS, figures as data URIs), the same order as report.md."""
    figs = [
        {"name": name, "data": base64.b64encode(p.read_bytes()).decode(), "caption": captions.get(name, "")}
        for name, p in figures.items()
    ]
    return PAGE.render(
        title=title,
        command=command,
        css=CSS,
        no_rows=NO_ROWS,
        head=[_view(s) for s in sections[:n_head]],
        tail=[_view(s) for s in sections[n_head:]],
        figures=figs,
    )
