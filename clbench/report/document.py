"""A tiny document model that renders one report as Markdown and as self-contained HTML.

Report builders emit blocks (headings, paragraphs, tables, figures); the renderers below turn the
same blocks into ``report.md`` (figures linked as PNG files beside it) and ``report.html``
(figures embedded as base64 PNG, no external resources), so the two never drift apart. Output is
a pure function of the blocks and the figure bytes: the same inputs give byte-identical files.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 1


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    """A figure saved as ``<stem>.png`` and ``<stem>.svg`` in the report folder."""

    stem: str
    alt: str


Block = Heading | Paragraph | Table | Figure


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Document) -> str:
    """Markdown with figures linked by relative path."""
    lines: list[str] = []
    for block in doc.blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            if block.caption:
                lines += [block.caption, ""]
            lines.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        else:
            lines += [f"![{block.alt}]({block.stem}.png)", ""]
    return "\n".join(lines)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px; color: #111; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #eee; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #444; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""

CHECK_SCRIPT = """
window.addEventListener("error", function (e) { document.body.setAttribute("data-errors", (document.body.getAttribute("data-errors") || "") + e.message + ";"); });
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-figures", ok + "/" + imgs.length);
});
"""


def _inline_code(text: str) -> str:
    """Escape text and turn `code` spans into <code> (the only Markdown the builders use)."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(doc: Document, folder: Path) -> str:
    """A self-contained HTML page: figures embedded from ``folder/<stem>.png`` as data URIs.

    The page records on ``<body>`` how many figures decoded (``data-figures="ok/total"``) and any
    script errors (``data-errors``), so a headless browser can check it rendered.
    """
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{html.escape(doc.title)}</title>", f"<style>{STYLE}</style>", f"<script>{CHECK_SCRIPT}</script>", "</head>", "<body>"]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{_inline_code(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{_inline_code(block.text)}</p>")
        elif isinstance(block, Table):
            out.append("<table>")
            if block.caption:
                out.append(f"<caption>{_inline_code(block.caption)}</caption>")
            out.append("<tr>" + "".join(f"<th>{_inline_code(h)}</th>" for h in block.header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_inline_code(c)}</td>" for c in row) + "</tr>" for row in block.rows]
            out.append("</table>")
        else:
            data = base64.b64encode((folder / f"{block.stem}.png").read_bytes()).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{html.escape(block.alt)}</figcaption></figure>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)
