"""Text for the terminal: docstrings without reST markup, paragraphs wrapped at word boundaries
(components' facts read from source are in :mod:`clbench.cli.static`)."""

from __future__ import annotations

import argparse
import inspect
import re
import shutil
import textwrap

_ROLE = re.compile(r":(?:class|mod|func|meth|attr|data|obj|exc|ref|doc|py:\w+):`~?([^`<]+?)(?:\s*<[^>]+>)?`")
_LITERAL = re.compile(r"``(.+?)``")
_CODE = re.compile(r"(?<![`\w])`([^`\n]+)`(?![`\w])")  # Markdown `code` (after the reST forms are gone)


def plain(text: str) -> str:
    """reST roles and literals as plain text: ``:class:`~a.B``` -> ``B``, double backquotes -> nothing."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if m.group(0).find("~") != -1 else m.group(1), text)
    return _CODE.sub(r"\1", _LITERAL.sub(r"\1", text))


def width() -> int:
    """The terminal's width (100 when not a terminal), at least 60."""
    return max(60, shutil.get_terminal_size((100, 24)).columns)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


def summary(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, as one line of plain text (a whole
    sentence: never cut mid-word or mid-sentence)."""
    paragraph = " ".join(inspect.cleandoc(doc or "").split("\n\n", 1)[0].split())
    return plain(_SENTENCE_END.split(paragraph, maxsplit=1)[0])


def wrap(text: str, indent: int = 0, first: int | None = None) -> str:
    """``text`` wrapped at word boundaries to the terminal width; continuation lines indented by
    ``indent`` spaces, the first line by ``first`` (default ``indent``)."""
    lines = textwrap.wrap(text, width=width(), initial_indent=" " * (indent if first is None else first), subsequent_indent=" " * indent,
                          break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines) if lines else ""


def wrap_doc(doc: str | None, indent: int = 0) -> str:
    """A whole docstring as plain text: paragraphs re-wrapped, indented blocks (lists, code) kept."""
    out = []
    for block in inspect.cleandoc(doc or "").split("\n\n"):
        lines = block.splitlines()
        if any(line.startswith((" ", "-", "*")) or line.rstrip().endswith("::") for line in lines[1:]) or block.lstrip().startswith(("-", "*")):
            out.append(textwrap.indent(plain(block), " " * indent))  # a list or an example: keep its lines
        else:
            out.append(wrap(plain(" ".join(block.split())), indent))
    return "\n\n".join(out)


class HelpFormatter(argparse.HelpFormatter):
    """argparse help that wraps at spaces only (never inside ``seed-N-kv-POLICY`` or a path) and
    keeps descriptions and epilogs that are laid out by hand (those with line breaks) as written."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False,
                             break_long_words=False)
