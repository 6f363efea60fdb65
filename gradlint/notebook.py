"""Jupyter notebooks (``.ipynb``) as one Python module, and back.

The code cells are joined into one module, so names defined in one cell are known in the next (cells run in
order, top to bottom). Between two cells stands a boundary statement of its own line (``BOUNDARY``), so that
a fix that inserts statements before or after another stays in that statement's cell, and the fixed module
splits back into cells. IPython syntax (``%magic``, ``!shell``, ``obj?``) in a cell that is not valid Python
is masked line by line with ``pass`` at the same indentation, so every line keeps its number; a cell that
starts with a cell magic other than those that run their body as Python (``%%time``, ...) is left out.

Findings are mapped back to ``(cell, line in the cell)``; the cell number is the cell's 1-based position
among all the notebook's cells (markdown included), as a reader counts them. ``line N`` in messages is
rewritten to ``line M of cell K``.

Writing back replaces only the JSON text of the changed cells' sources: outputs, metadata, key order,
indentation, escapes and the final newline stay byte for byte.
"""
from __future__ import annotations

import ast
import bisect
import json
import re
import warnings
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

from gradlint.violation import FileError, Violation

SUFFIX = ".ipynb"
BOUNDARY = "_gradlint_cell_boundary_"
MASK_COMMENT = "# gradlint: IPython line"
# cell magics whose body is Python (the first line is masked, the rest checked)
PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug", "tensorflow_version"})
_IPYTHON_LINE = re.compile(
    r"^\s*(?:[%!?]|[\w.]+\s*\?\??\s*$|[\w.,\s]+=\s*[%!]\w)"  # %magic, !shell, ?obj, obj?, x = !cmd / %magic
)
_LINE_REFERENCE = re.compile(r"\bline (\d+)\b")
_WHITESPACE = re.compile(r"[ \t\n\r]*")


class NotebookError(Exception):
    """The file is not a notebook gradlint can read or write; the message says why."""


def is_notebook(path: str) -> bool:
    return path.lower().endswith(SUFFIX)


@dataclass
class Cell:
    """One code cell that is checked: its source and where it sits in the JSON text and in the module."""

    number: int                      # 1-based position among all cells
    source: str                      # the cell's code as stored
    python: str                      # ``source`` with IPython lines masked
    masked: list[tuple[str, str]]    # (original line, indentation of its ``pass``) for each masked line
    span: tuple[int, int]            # [start, end) of the source value in the JSON text
    is_list: bool                    # stored as a list of lines (nbformat's usual form) or one string
    item_offsets: list[int]          # JSON text offset of each list item (empty for a string)
    first_line: int = 0              # 1-based line of the module where this cell starts
    syntax_error: Optional[tuple[int, int, str]] = None  # (line, column, message) when it is not Python


@dataclass
class Notebook:
    """A parsed notebook: its JSON text, its code cells and the module built from them."""

    text: str
    document: dict
    cells: list[Cell]
    python: str = ""
    _line_cells: list[int] = field(default_factory=list, repr=False)  # module line - 1 -> index into cells
    _newlines: list[int] = field(default_factory=list, repr=False)    # offsets of "\n" in ``text``

    # -- reading -------------------------------------------------------------------------------------------
    @classmethod
    def read(cls, data: bytes) -> "Notebook":
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise NotebookError(f"not a notebook: not UTF-8 ({exc.reason})") from None
        try:
            document, spans = _parse_with_spans(text)
        except (ValueError, _NotANotebook) as exc:
            raise NotebookError(f"not a notebook: {exc}") from None
        cells = [] if not _is_python(document) else [cell for cell in spans if cell.source.strip()]
        notebook = cls(text, document, cells)
        notebook._newlines = [m.start() for m in re.finditer("\n", text)]
        notebook._build()
        return notebook

    def _build(self) -> None:
        parts: list[str] = []
        line = 1
        for index, cell in enumerate(self.cells):
            if cell.syntax_error is not None:
                continue
            if parts:
                parts.append(BOUNDARY + "\n")
                self._line_cells.append(-1)
                line += 1
            body = cell.python if cell.python.endswith("\n") else cell.python + "\n"
            cell.first_line = line
            count = body.count("\n")
            self._line_cells.extend([index] * count)
            line += count
            parts.append(body)
        self.python = "".join(parts)

    @property
    def broken_cells(self) -> list[Cell]:
        return [cell for cell in self.cells if cell.syntax_error is not None]

    # -- locating ------------------------------------------------------------------------------------------
    def cell_at(self, line: int) -> Optional[Cell]:
        """The cell holding line ``line`` of the module (None for a boundary line or out of range)."""
        if 1 <= line <= len(self._line_cells) and self._line_cells[line - 1] >= 0:
            return self.cells[self._line_cells[line - 1]]
        return None

    def json_line(self, cell: Cell, line: int) -> int:
        """The 1-based line of the JSON text that holds the cell's ``line`` (0 when unknown)."""
        if cell.is_list:
            if not 1 <= line <= len(cell.item_offsets):
                return 0
            offset = cell.item_offsets[line - 1]
        else:
            offset = cell.span[0]
        return bisect.bisect_left(self._newlines, offset) + 1

    def locate(self, violation: Violation) -> Violation:
        """A finding on the module, located in its cell."""
        cell = self.cell_at(violation.line)
        if cell is None:
            return violation
        line = violation.line - cell.first_line + 1
        end_line = violation.end_line - cell.first_line + 1 if violation.end_line else 0
        if self.cell_at(violation.end_line) is not cell:
            end_line = line
        return replace(violation, line=line, end_line=end_line, cell=cell.number,
                       message=self.relabel(violation.message), json_line=self.json_line(cell, line))

    def locate_error(self, error: FileError) -> FileError:
        cell = self.cell_at(error.line) if error.line else None
        if cell is None:
            return replace(error, message=self.relabel(error.message))
        return FileError(error.path, self.relabel(error.message), error.line - cell.first_line + 1, cell.number)

    def relabel(self, message: str) -> str:
        """``line N`` (a line of the module) -> ``line M of cell K``."""
        def cell_line(match: re.Match) -> str:
            cell = self.cell_at(int(match.group(1)))
            if cell is None:
                return match.group(0)
            return f"line {int(match.group(1)) - cell.first_line + 1} of cell {cell.number}"

        return _LINE_REFERENCE.sub(cell_line, message)

    def syntax_errors(self, path: str) -> list[FileError]:
        return [FileError(path, f"syntax error at line {line}, column {column}: {message}", line, cell.number)
                for cell in self.broken_cells for line, column, message in [cell.syntax_error]]

    # -- writing -------------------------------------------------------------------------------------------
    def split(self, python: str) -> list[str]:
        """The cells' sources from a (fixed) module: boundaries removed, IPython lines restored.

        Raises NotebookError when the module no longer splits into the same cells.
        """
        checked = [cell for cell in self.cells if cell.syntax_error is None]
        if not checked:
            return []
        pieces = python.split("\n" + BOUNDARY + "\n")
        if len(pieces) != len(checked):
            raise NotebookError("a fix moved code across a cell boundary; not fixed")
        sources = []
        for number, (cell, piece) in enumerate(zip(checked, pieces), start=1):
            if number < len(pieces):
                piece += "\n"  # the boundary's separator took the cell's last line end
            piece = _unmask(piece, cell.masked)
            if not cell.source.endswith("\n"):
                piece = piece[:-1]
            sources.append(piece)
        return sources

    def with_sources(self, sources: Sequence[str]) -> str:
        """The notebook's JSON text with the checked cells' sources replaced (only changed cells are touched)."""
        checked = [cell for cell in self.cells if cell.syntax_error is None]
        ensure_ascii = not any(ord(ch) > 127 for ch in self.text) and "\\u" in self.text
        edits = []
        for cell, new in zip(checked, sources):
            if new != cell.source:
                edits.append((cell.span, _render_source(self.text, cell, new, ensure_ascii)))
        text = self.text
        for (start, end), rendered in sorted(edits, reverse=True):
            text = text[:start] + rendered + text[end:]
        expected = _replace_sources(self.document, {cell.number: new for cell, new in zip(checked, sources)})
        if json.loads(text) != expected:  # never write a notebook that does not say what was meant
            raise NotebookError("the notebook could not be rewritten faithfully; not fixed")
        return text


def _is_python(document: dict) -> bool:
    metadata = document.get("metadata") or {}
    language = ((metadata.get("kernelspec") or {}).get("language")
                or (metadata.get("language_info") or {}).get("name") or "python")
    return str(language).lower() == "python"


def _mask(source: str) -> tuple[str, list[str], bool]:
    """(python, masked lines, checked): IPython lines replaced by ``pass`` when the cell is not valid Python
    as it stands; ``checked`` is False for a cell magic whose body is not Python."""
    lines = source.splitlines(keepends=True)
    chosen: list[int] = []
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and lines[first].lstrip().startswith("%%"):
        magic = lines[first].lstrip()[2:].split(maxsplit=1)
        if not magic or magic[0] not in PYTHON_CELL_MAGICS:
            return source, [], False
        chosen.append(first)
    candidates = [i for i, line in enumerate(lines) if i not in chosen and _IPYTHON_LINE.match(line)]
    if candidates and not _parses(_masked(lines, chosen)):
        chosen.extend(candidates)
    if not chosen:
        return source, [], True
    for index in sorted(chosen):  # a shell or magic line continued with a backslash: its lines too
        while index + 1 < len(lines) and lines[index].rstrip("\r\n").endswith("\\") and index + 1 not in chosen:
            index += 1
            chosen.append(index)
    chosen.sort()
    python = _masked(lines, chosen)
    passes = python.splitlines(keepends=True)
    return python, [(lines[i], _indentation(passes[i])) for i in chosen], True


def _indentation(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _masked(lines: list[str], indices: list[int]) -> str:
    """The lines with those at ``indices`` replaced by ``pass`` at their indentation (line ends kept)."""
    result = list(lines)
    indent = ""
    for index in indices:
        line = lines[index]
        body = line.rstrip("\r\n")
        continued = index > 0 and index - 1 in indices and lines[index - 1].rstrip("\r\n").endswith("\\")
        if not continued:  # a continuation line takes the indentation of the line it continues
            indent = body[: len(body) - len(body.lstrip())]
        result[index] = f"{indent}pass  {MASK_COMMENT}" + line[len(body):]
    return "".join(result)


def _unmask(python: str, masked: list[tuple[str, str]]) -> str:
    """The masked IPython lines put back; where a fix re-indented a ``pass``, its line moves with it."""
    if not masked:
        return python
    lines = python.splitlines(keepends=True)
    positions = [i for i, line in enumerate(lines) if line.rstrip("\r\n").endswith("pass  " + MASK_COMMENT)]
    if len(positions) != len(masked):
        raise NotebookError("a fix removed an IPython line; not fixed")
    for position, (original, indent_then) in zip(positions, masked):
        current = lines[position]
        body = current.rstrip("\r\n")
        indent_now = _indentation(body)
        text = original.rstrip("\r\n")
        if indent_now != indent_then and text.startswith(indent_then):
            text = indent_now + text[len(indent_then):]
        lines[position] = text + current[len(body):]
    return "".join(lines)


def _parses(source: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _syntax_error(python: str) -> Optional[tuple[int, int, str]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(python)
    except SyntaxError as exc:
        return exc.lineno or 1, exc.offset or 1, exc.msg
    except (ValueError, RecursionError, MemoryError) as exc:
        return 1, 1, str(exc) or type(exc).__name__
    return None


# -- the JSON text with positions ---------------------------------------------------------------------------
class _NotANotebook(Exception):
    pass


_DECODER = json.JSONDecoder()


def _skip(text: str, index: int) -> int:
    return _WHITESPACE.match(text, index).end()


def _parse_with_spans(text: str) -> tuple[dict, list[Cell]]:
    """The document, and every code cell with the position of its source in ``text``.

    Only the path to the cells is walked by hand; every other value is decoded by the json module.
    """
    document = json.loads(text)
    if not isinstance(document, dict) or not isinstance(document.get("cells", document.get("worksheets")), list):
        raise _NotANotebook("no 'cells' list (is this a Jupyter notebook?)")
    cells: list[Cell] = []
    counter = [0]
    index = _skip(text, 0)
    for key, start, end in _members(text, index):
        if key == "cells":
            _walk_cells(text, start, cells, counter, "source")
        elif key == "worksheets":  # nbformat 3
            for sheet_start, _ in _items(text, start):
                for sheet_key, cells_start, _ in _members(text, sheet_start):
                    if sheet_key == "cells":
                        _walk_cells(text, cells_start, cells, counter, "input")
    return document, cells


def _walk_cells(text: str, start: int, cells: list[Cell], counter: list[int], source_key: str) -> None:
    for cell_start, _ in _items(text, start):
        counter[0] += 1
        if text[cell_start] != "{":
            continue
        members = {key: (value_start, value_end) for key, value_start, value_end in _members(text, cell_start)}
        kind = members.get("cell_type")
        if kind is None or _DECODER.raw_decode(text, kind[0])[0] != "code" or source_key not in members:
            continue
        value_start, value_end = members[source_key]
        value = _DECODER.raw_decode(text, value_start)[0]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            offsets = [item_start for item_start, _ in _items(text, value_start)]
            source = "".join(value)
        elif isinstance(value, str):
            offsets, source = [], value
        else:
            continue
        python, masked, checked = _mask(source)
        if not checked:
            continue
        cells.append(Cell(counter[0], source, python, masked, (value_start, value_end), isinstance(value, list),
                          offsets, syntax_error=_syntax_error(python)))


def _members(text: str, index: int):
    """(key, value start, value end) of the object starting at ``index``."""
    if text[index] != "{":
        raise _NotANotebook("expected an object")
    index = _skip(text, index + 1)
    if text[index] == "}":
        return
    while True:
        key, index = _DECODER.raw_decode(text, index)
        index = _skip(text, index)
        if text[index] != ":":
            raise _NotANotebook("malformed object")
        start = _skip(text, index + 1)
        _, end = _DECODER.raw_decode(text, start)
        yield key, start, end
        index = _skip(text, end)
        if text[index] == "}":
            return
        index = _skip(text, index + 1)  # ","


def _items(text: str, index: int):
    """(start, end) of every item of the array starting at ``index``."""
    if text[index] != "[":
        raise _NotANotebook("expected an array")
    index = _skip(text, index + 1)
    if text[index] == "]":
        return
    while True:
        start = index
        _, end = _DECODER.raw_decode(text, start)
        yield start, end
        index = _skip(text, end)
        if text[index] == "]":
            return
        index = _skip(text, index + 1)


def _split_lines(source: str) -> list[str]:
    """nbformat's list form: lines with their ``\\n``, the last one without when the source has none."""
    return re.findall(r"[^\n]*\n|[^\n]+$", source)


def _render_source(text: str, cell: Cell, new: str, ensure_ascii: bool) -> str:
    """The JSON text of a new source in the layout of the old one (same indentation and separators)."""
    if not cell.is_list:
        return json.dumps(new, ensure_ascii=ensure_ascii)
    items = [json.dumps(line, ensure_ascii=ensure_ascii) for line in _split_lines(new)]
    start, end = cell.span
    old = text[start:end]
    if not cell.item_offsets:  # an empty list had no layout: write it compactly
        return "[" + ", ".join(items) + "]"
    lead = text[start + 1: cell.item_offsets[0]]
    last_end = _DECODER.raw_decode(text, cell.item_offsets[-1])[1]
    trail = text[last_end: end - 1]
    if len(cell.item_offsets) > 1:
        first_end = _DECODER.raw_decode(text, cell.item_offsets[0])[1]
        separator = text[first_end: cell.item_offsets[1]]
    else:
        separator = "," + (lead if "\n" in lead else " ")
    if not items:
        return "[]" if "\n" not in old else "[" + trail + "]"
    return "[" + lead + separator.join(items) + trail + "]"


def _replace_sources(document: dict, sources: dict[int, str]) -> dict:
    """A copy of the document with the sources of the given cells (by number) replaced."""
    copy = json.loads(json.dumps(document))
    if "cells" in copy:
        cells, key = copy["cells"], "source"
    else:
        cells, key = [cell for sheet in copy.get("worksheets", []) for cell in sheet.get("cells", [])], "input"
    for number, cell in enumerate(cells, start=1):
        if number in sources and isinstance(cell, dict):
            cell[key] = _split_lines(sources[number]) if isinstance(cell.get(key), list) else sources[number]
    return copy


__all__ = ["BOUNDARY", "Cell", "Notebook", "NotebookError", "SUFFIX", "is_notebook"]
