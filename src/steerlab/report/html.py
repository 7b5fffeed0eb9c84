"""One self-contained HTML page for a comparison: figures embedded as base64 PNGs, no outside resources.

The page's own script checks, once loaded, that every image decoded and records any script error;
it writes the result on ``<body>`` (``data-images="decoded/total"``, ``data-errors``) so a headless
browser can verify the page rendered.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Collection

import pandas as pd

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;color:#222;
line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
h3{font-size:1.05rem}table{border-collapse:collapse;font-size:.82rem;margin:.6rem 0}
th,td{border:1px solid #ddd;padding:.25rem .45rem;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.text,th.text{text-align:left;max-width:420px}
img{max-width:100%;height:auto;border:1px solid #eee}pre{background:#f7f7f7;padding:.6rem;overflow-x:auto;
font-size:.78rem}code{background:#f2f2f2;padding:0 .2rem}.note{color:#555;font-size:.9rem}
details{margin:.4rem 0}summary{cursor:pointer;font-weight:600}
"""

CHECK = """
(function(){
  var errors = [];
  window.addEventListener("error", function(e){ errors.push(String(e.message || e)); });
  window.addEventListener("load", function(){
    var imgs = document.images, ok = 0;
    for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
    document.body.setAttribute("data-images", ok + "/" + imgs.length);
    document.body.setAttribute("data-errors", String(errors.length));
    var out = document.getElementById("render-check");
    if (out) out.textContent = ok + " of " + imgs.length + " figures decoded.";
  });
})();
"""


def esc(value: object) -> str:
    """HTML-escaped text of ``value``."""
    return html.escape(str(value), quote=True)


def figure(png: bytes, alt: str, caption: str = "") -> str:
    """An ``<figure>`` with the PNG inlined as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption class='note'>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure><img src='data:image/png;base64,{data}' alt='{esc(alt)}'>{cap}</figure>"


def table(frame: pd.DataFrame, digits: int = 3, text_columns: Collection[str] = ()) -> str:
    """A DataFrame as an escaped HTML table (numbers rounded to ``digits``)."""
    head = "".join(f"<th class='{'text' if c in text_columns else ''}'>{esc(c)}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for c in frame.columns:
            v = row[c]
            if isinstance(v, float):
                text = "" if pd.isna(v) else (f"{v:.{digits}g}" if abs(v) >= 1000 else f"{v:.{digits}f}")
            else:
                text = "" if v is None else str(v)
            cells.append(f"<td class='{'text' if c in text_columns else ''}'>{esc(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def pre(obj: object) -> str:
    """Pretty JSON (or text) in a ``<pre>`` block."""
    text = obj if isinstance(obj, str) else json.dumps(obj, indent=2, default=str)
    return f"<pre>{esc(text)}</pre>"


def page(title: str, sections: list[tuple[str, str]], intro: str = "") -> str:
    """The whole document: a title, an intro and ``(heading, html)`` sections, plus the render check."""
    body = "".join(f"<section><h2 id='s{i}'>{esc(h)}</h2>{content}</section>"
                   for i, (h, content) in enumerate(sections))
    toc = "".join(f"<li><a href='#s{i}'>{esc(h)}</a></li>" for i, (h, _) in enumerate(sections))
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1>{intro}<p class='note' id='render-check'></p><ul>{toc}</ul>{body}"
            f"<script>{CHECK}</script></body></html>")
