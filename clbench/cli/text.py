"""Text for the terminal: docstrings without reST markup, paragraphs wrapped at word boundaries,
and built-in components' summaries read from source without importing them (no torch)."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import re
import shutil
import textwrap
from pathlib import Path

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


def _source_of(module: str) -> tuple[Path, str] | None:
    """The source file of ``module`` and its package, found without running the module or its
    packages past the top two levels (``find_spec`` of ``a.b`` imports ``a`` only; deeper
    packages, which may import torch, are looked up as folders)."""
    parts = module.split(".")
    spec = importlib.util.find_spec(".".join(parts[:2]))
    if spec is None:
        return None
    origin = Path(spec.origin) if spec.origin else None
    for part in parts[2:]:
        folders = [Path(f) for f in (spec.submodule_search_locations or [])] if origin is None or origin.name == "__init__.py" else []
        folders = folders or ([origin.parent] if origin is not None and origin.name == "__init__.py" else [])
        origin = next((c for f in folders for c in (f / part / "__init__.py", f / f"{part}.py") if c.is_file()), None)
        if origin is None:
            return None
        spec = importlib.util.spec_from_file_location(part, origin, submodule_search_locations=[str(origin.parent)] if origin.name == "__init__.py" else None)
        if spec is None:
            return None
    if origin is None or origin.suffix != ".py":
        return None
    package = module if origin.name == "__init__.py" else module.rpartition(".")[0]
    return origin, package


def static_docstring(value: str, hops: int = 3) -> str | None:
    """The docstring of the object ``module:attr`` names, read from its source without importing
    the module (following ``from X import attr`` re-exports); ``None`` when it cannot be found."""
    module, _, attr = value.partition(":")
    found = _source_of(module) if attr else None
    if found is None:
        return None
    path, package = found
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name == attr:
            return ast.get_docstring(node)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and hops > 0:
            for alias in node.names:
                if (alias.asname or alias.name) == attr:
                    base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module
                    return static_docstring(f"{base}:{alias.name}", hops - 1)
    return None


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
