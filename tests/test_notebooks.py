"""One end-to-end smoke execution of every notebook, through the same driver as the book."""

import nbformat
import pytest

from lorafair import notebook


#: the first half of the notebooks; tests/test_notebooks_rest.py renders the others on another worker
FIRST = notebook.NOTEBOOKS[:3]


@pytest.mark.parametrize("name", FIRST)
def test_notebook_smoke_execution(name, tmp_path, smoke_render_store, check_notebook):
    check_notebook(name, tmp_path, smoke_render_store)


def test_error_outputs_are_detected(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1/0")
    cell.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                                           traceback=[])]
    nb.cells.append(cell)
    p = tmp_path / "bad.ipynb"
    nbformat.write(nb, p)
    assert notebook.notebook_errors(p) == ["cell 0: ZeroDivisionError: division by zero"]


def test_failing_notebook_raises_one_line_error(tmp_path, monkeypatch):
    from lorafair.errors import LorafairError

    with pytest.raises(LorafairError, match="unknown profile"):
        notebook.execute("vision_classification", {"profile": "nope"}, tmp_path)
    with pytest.raises(LorafairError, match="failed in cell"):
        notebook.execute("vision_classification", {"profile": "smoke", "models": ["nope"],
                                                    "results_dir": str(tmp_path)}, tmp_path)
