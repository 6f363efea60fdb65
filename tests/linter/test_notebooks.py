"""Jupyter notebooks: code cells checked as one module, findings located by cell in every format, fixes that
rewrite only code cells' sources and keep everything else of the file byte for byte."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gradlint.notebook import Notebook, NotebookError

from conftest import FIXTURES, run_gradlint

NOTEBOOK = FIXTURES / "notebooks" / "partial_update.ipynb"
GRD001_MESSAGE_START = "gradient from `tape.gradient` (line 3 of cell 5) may be None"
# a folder of public repositories' checkouts (see benchmarks/realworld/); unset in CI
REAL_NOTEBOOKS = os.environ.get("GRADLINT_REALWORLD", "")


def notebook(*sources: str, indent=1, trailing_newline=True, as_string=False, outputs=True, **dump) -> str:
    """A notebook text as Jupyter writes it: a markdown cell first, then one code cell per source."""
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# Title"]}]
    for number, source in enumerate(sources, start=1):
        cells.append({
            "cell_type": "code", "execution_count": number, "metadata": {"tags": ["t"]},
            "outputs": [{"name": "stdout", "output_type": "stream", "text": [f"out {number}\n"]}] if outputs else [],
            "source": source if as_string else source.splitlines(keepends=True),
        })
    document = {"cells": cells, "metadata": {"kernelspec": {"language": "python", "name": "python3"},
                                             "zz_custom": {"é": 1.5}}, "nbformat": 4, "nbformat_minor": 5}
    text = json.dumps(document, indent=indent, **dump)
    return text + "\n" if trailing_newline else text


BUG_CELL_1 = "import tensorflow as tf\ngrads = tf.gradients(loss, params)"
BUG_CELL_2 = "scaled = [g * 0.5 for g in grads]\nprint(scaled)"
FIXED_CELL_2 = "scaled = [g * 0.5 if g is not None else None for g in grads]\nprint(scaled)"


def test_text_output_locates_findings_by_cell_and_skips_markdown_magics_and_noqa() -> None:
    result = run_gradlint("check", "--no-cache", str(NOTEBOOK))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{NOTEBOOK}:cell 6:1:12: GRD001 {GRD001_MESSAGE_START}")
    assert lines[1].startswith(f"{NOTEBOOK}:cell 6:3:5: GRD003 ")
    assert lines[2] == "Found 2 findings in 1 file (1 checked)."
    assert len(lines) == 3  # cell 7's finding is suppressed by its `# noqa: GRD001`
    assert result.stderr == ""  # %matplotlib, !pip, %%bash and `model.summary?` are no syntax errors


def test_json_sarif_and_github_carry_the_cell() -> None:
    document = json.loads(run_gradlint("check", "--no-cache", "--format", "json", str(NOTEBOOK)).stdout)
    assert [(f["cell"], f["line"], f["column"], f["code"]) for f in document["findings"]] == [
        (6, 1, 12, "GRD001"), (6, 3, 5, "GRD003")]
    assert document["findings"][0]["message"].startswith(GRD001_MESSAGE_START)

    raw_lines = NOTEBOOK.read_text(encoding="utf-8").splitlines()
    sarif = json.loads(run_gradlint("check", "--no-cache", "--format", "sarif", str(NOTEBOOK)).stdout)
    results = sarif["runs"][0]["results"]
    assert [r["properties"] for r in results] == [
        {"cell": 6, "cellLine": 1, "cellColumn": 12}, {"cell": 6, "cellLine": 3, "cellColumn": 5}]
    assert results[0]["message"]["text"].startswith("cell 6, line 1, column 12: gradient from")
    region_line = results[0]["locations"][0]["physicalLocation"]["region"]["startLine"]
    assert "clipped = [tf.clip_by_norm(g, 1.0) for g in grads]" in raw_lines[region_line - 1]

    github = run_gradlint("check", "--no-cache", "--format", "github", str(NOTEBOOK)).stdout.splitlines()
    assert len(github) == 2
    assert github[0].startswith(f"::warning file={NOTEBOOK},line={region_line},title=GRD001::cell 6, line 1, "
                                "column 12: GRD001 ")
    third_line = int(github[1].split(",line=")[1].split(",")[0])
    assert "optimizer.apply_gradients([(g, v)])" in raw_lines[third_line - 1]


def test_directories_include_notebooks_but_not_checkpoints(tmp_path) -> None:
    (tmp_path / "nb.ipynb").write_text(notebook(BUG_CELL_1, BUG_CELL_2))
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "nb-checkpoint.ipynb").write_text(notebook(BUG_CELL_1, BUG_CELL_2))
    result = run_gradlint("check", "--no-cache", "--format", "json", str(tmp_path))
    document = json.loads(result.stdout)
    assert document["files_checked"] == 1
    assert [(os.path.basename(f["path"]), f["cell"], f["line"]) for f in document["findings"]] == [
        ("nb.ipynb", 3, 1)]


def test_magics_are_masked_and_line_numbers_stay() -> None:
    source = ("%load_ext tensorboard\n"
              "!pip install \\\n"
              "    tensorflow\n"
              "files = !ls\n"
              "import tensorflow as tf\n"
              "for g in tf.gradients(loss, params):\n"
              "    %time x = 1\n"
              "    print(tf.norm(g))\n")
    nb = Notebook.read(notebook(source).encode())
    (cell,) = nb.cells
    assert cell.syntax_error is None
    assert [line.strip() for line, _ in cell.masked] == [
        "%load_ext tensorboard", "!pip install \\", "tensorflow", "files = !ls", "%time x = 1"]
    lines = nb.python.splitlines()
    assert len(lines) == source.count("\n")
    assert lines[2] == "pass  # gradlint: IPython line"      # a continuation keeps its command's indentation
    assert lines[6] == "    pass  # gradlint: IPython line"  # inside the loop: the loop's indentation
    assert nb.split(nb.python) == [source]  # and back


def test_valid_python_that_looks_like_a_magic_is_not_masked() -> None:
    source = "x = (1\n     % 2)\ny = (x\n     != 3)\n"
    (cell,) = Notebook.read(notebook(source).encode()).cells
    assert cell.masked == [] and cell.python == source


def test_noqa_works_in_cells_and_cross_cell_names(tmp_path) -> None:
    path = tmp_path / "nb.ipynb"
    path.write_text(notebook(BUG_CELL_1, "a = [g * 0.5 for g in grads]  # noqa\n"
                                         "b = [g * 0.5 for g in grads]  # noqa: GRD001\n"
                                         "c = [g * 0.5 for g in grads]  # noqa: GRD003\n"))
    document = json.loads(run_gradlint("check", "--no-cache", "--format", "json", str(path)).stdout)
    assert [(f["cell"], f["line"]) for f in document["findings"]] == [(3, 3)]


def test_cell_with_a_syntax_error_is_reported_by_cell_and_the_others_checked(tmp_path) -> None:
    path = tmp_path / "nb.ipynb"
    path.write_text(notebook(BUG_CELL_1, "def broken(:\n    pass", BUG_CELL_2))
    result = run_gradlint("check", "--no-cache", "--format", "json", str(path))
    assert result.returncode == 2
    assert f"{path}:cell 3: error: syntax error at line 1, column 12" in result.stderr
    document = json.loads(result.stdout)
    assert [(f["cell"], f["line"]) for f in document["findings"]] == [(4, 1)]
    assert document["errors"] == [{"path": str(path), "message": document["errors"][0]["message"], "line": 1,
                                   "cell": 3}]
    github = run_gradlint("check", "--no-cache", "--format", "github", str(path)).stdout
    assert f"::error file={path},line=1,title=gradlint::cell 3: syntax error" in github


def test_not_a_notebook_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "a.ipynb").write_text("{not json")
    (tmp_path / "b.ipynb").write_text('{"metadata": {}}')
    result = run_gradlint("check", "--no-cache", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "a.ipynb: error: not a notebook: Expecting property name" in result.stderr
    assert "b.ipynb: error: not a notebook: no 'cells' list" in result.stderr


def test_other_kernels_and_nbformat_3(tmp_path) -> None:
    r_notebook = json.loads(notebook(BUG_CELL_1, BUG_CELL_2))
    r_notebook["metadata"]["kernelspec"]["language"] = "R"
    (tmp_path / "r.ipynb").write_text(json.dumps(r_notebook))
    v3 = {"metadata": {}, "nbformat": 3, "worksheets": [{"cells": [
        {"cell_type": "markdown", "source": "text"},
        {"cell_type": "code", "input": BUG_CELL_1, "language": "python", "outputs": []},
        {"cell_type": "code", "input": BUG_CELL_2, "language": "python", "outputs": []}]}]}
    (tmp_path / "v3.ipynb").write_text(json.dumps(v3))
    document = json.loads(run_gradlint("check", "--no-cache", "--format", "json", str(tmp_path)).stdout)
    assert document["errors"] == []
    assert [(os.path.basename(f["path"]), f["cell"], f["line"]) for f in document["findings"]] == [
        ("v3.ipynb", 3, 1)]


# ---------------------------------------------------------------------------------------------- fix
def _changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    import difflib

    return [(a, b) for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before.splitlines(), after.splitlines())
            .get_opcodes() if tag != "equal"
            for a, b in [("\n".join(before.splitlines()[i1:i2]), "\n".join(after.splitlines()[j1:j2]))]]


def test_fix_rewrites_only_the_cell_and_keeps_outputs_and_formatting(tmp_path) -> None:
    path = tmp_path / "nb.ipynb"
    path.write_bytes(NOTEBOOK.read_bytes())
    before = path.read_text(encoding="utf-8")
    result = run_gradlint("fix", "--unsafe-fixes", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{path}: fixed 2 findings (GRD001, GRD003)" in result.stdout
    after = path.read_text(encoding="utf-8")
    assert after.endswith("}\n")
    assert _changed_lines(before, after) == [
        ('    "clipped = [tf.clip_by_norm(g, 1.0) for g in grads]\\n",',
         '    "clipped = [tf.clip_by_norm(g, 1.0) if g is not None else None for g in grads]\\n",\n'
         '    "grads_and_vars = []\\n",'),
        ('    "    optimizer.apply_gradients([(g, v)])\\n",',
         '    "    grads_and_vars.append((g, v))\\n",\n'
         '    "optimizer.apply_gradients(grads_and_vars)\\n",'),
    ]
    old, new = json.loads(before), json.loads(after)
    for old_cell, new_cell in zip(old["cells"], new["cells"]):
        assert {k: v for k, v in old_cell.items() if k != "source"} == {k: v for k, v in new_cell.items() if k != "source"}
    assert run_gradlint("check", "--no-cache", str(path)).returncode == 0
    again = run_gradlint("fix", "--unsafe-fixes", str(path))
    assert again.returncode == 0 and path.read_text(encoding="utf-8") == after


@pytest.mark.parametrize("layout", [
    dict(indent=1), dict(indent=2, sort_keys=True), dict(indent=None), dict(indent=4, trailing_newline=False),
    dict(indent=1, as_string=True), dict(indent=1, ensure_ascii=False), dict(indent=1, ensure_ascii=True),
])
def test_fix_keeps_every_layout(tmp_path, layout) -> None:
    path = tmp_path / "nb.ipynb"
    text = notebook(BUG_CELL_1 + "\n# café", BUG_CELL_2, "print('unchanged')", **layout)
    path.write_text(text, encoding="utf-8")
    result = run_gradlint("fix", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    after = path.read_text(encoding="utf-8")
    expected = json.loads(text)
    expected["cells"][2]["source"] = (FIXED_CELL_2 if layout.get("as_string")
                                      else FIXED_CELL_2.splitlines(keepends=True))
    assert json.loads(after) == expected
    # everything but the fixed cell's source is byte for byte the same
    start = text.index(json.dumps(BUG_CELL_2.splitlines(keepends=True)[0], ensure_ascii=False)[:-1])
    assert after[:start] == text[:start]
    tail = text[text.index("print(", start):]
    assert after.endswith(tail)


def test_fix_diff_shows_cells_and_writes_nothing(tmp_path) -> None:
    path = tmp_path / "nb.ipynb"
    path.write_text(notebook(BUG_CELL_1, BUG_CELL_2))
    before = path.read_bytes()
    result = run_gradlint("fix", "--diff", str(path))
    assert result.returncode == 1
    assert result.stdout == (f"--- {path}:cell 3\n+++ {path}:cell 3\n@@ -1,2 +1,2 @@\n"
                             "-scaled = [g * 0.5 for g in grads]\n"
                             "+scaled = [g * 0.5 if g is not None else None for g in grads]\n"
                             " print(scaled)\n\\ No newline at end of file\n")
    assert path.read_bytes() == before


def test_fix_keeps_magics_and_their_indentation(tmp_path) -> None:
    path = tmp_path / "nb.ipynb"
    source = ("import tensorflow as tf\n"
              "%matplotlib inline\n"
              "grads = tf.gradients(loss, params)\n"
              "for g in grads:\n"
              "    print(tf.norm(g))\n"
              "    !echo one gradient\n")
    path.write_text(notebook(source))
    assert run_gradlint("fix", str(path)).returncode == 0
    (cell,) = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert "".join(cell["source"]) == ("import tensorflow as tf\n"
                                       "%matplotlib inline\n"
                                       "grads = tf.gradients(loss, params)\n"
                                       "for g in grads:\n"
                                       "    if g is not None:\n"
                                       "        print(tf.norm(g))\n"
                                       "        !echo one gradient\n")  # moved into the block with its line


def test_fix_leaves_a_notebook_with_a_broken_cell_untouched(tmp_path) -> None:
    path = tmp_path / "nb.ipynb"
    path.write_text(notebook(BUG_CELL_1, BUG_CELL_2, "def broken(:\n    pass"))
    before = path.read_bytes()
    result = run_gradlint("fix", str(path))
    assert result.returncode == 2
    assert f"{path}:cell 4: error: syntax error at line 1" in result.stderr
    assert f"{path}:cell 3:1:11: GRD001 " in result.stdout
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------------ real notebooks
def _without_sources(nb: Notebook) -> str:
    text = nb.text
    for cell in sorted(nb.cells, key=lambda c: -c.span[0]):
        text = text[:cell.span[0]] + text[cell.span[1]:]
    return text


def _real_notebooks() -> list[Path]:
    folder = Path(REAL_NOTEBOOKS) if REAL_NOTEBOOKS else None
    return sorted(folder.rglob("*.ipynb")) if folder and folder.is_dir() else []


@pytest.mark.skipif(not _real_notebooks(), reason="GRADLINT_REALWORLD names no folder of public notebooks")
def test_real_notebooks_read_check_and_rewrite_faithfully() -> None:
    """Every public notebook: read, split back unchanged, every code cell rewritten in its own layout."""
    paths = _real_notebooks()
    cells = 0
    for path in paths:
        data = path.read_bytes()
        try:
            nb = Notebook.read(data)
        except NotebookError as exc:
            pytest.fail(f"{path}: {exc}")
        checked = [cell for cell in nb.cells if cell.syntax_error is None]
        cells += len(checked)
        assert nb.split(nb.python) == [cell.source for cell in checked], path
        assert nb.with_sources([cell.source for cell in checked]) == nb.text, path
        changed = [cell.source + ("\n" if not cell.source.endswith("\n") else "") + "x = 1\n" for cell in checked]
        rewritten = nb.with_sources(changed)  # raises unless json.loads gives exactly the new sources
        again = Notebook.read(rewritten.encode())
        assert [cell.source for cell in again.cells if cell.syntax_error is None] == changed, path
        assert _without_sources(again) == _without_sources(nb), path  # every other byte is kept
    assert cells > 1000
    result = run_gradlint("check", "--no-cache", "--format", "json", "--select", "GRD,GRD017,GRD018",
                          *map(str, paths))
    document = json.loads(result.stdout)
    assert document["files_checked"] == len(paths)
    assert "Traceback" not in result.stderr
    assert not [e for e in document["errors"] if "syntax error" not in e["message"]], document["errors"]
    assert all(e["cell"] for e in document["errors"])
