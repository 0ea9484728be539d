"""The smoke execution of the notebooks test_notebooks.py does not render, on the store they share
(conftest.smoke_store), so that two pytest-xdist workers render them at once."""

import pytest

from lorafair import notebook

REST = notebook.NOTEBOOKS[3:]


@pytest.mark.parametrize("name", REST)
def test_notebook_smoke_execution(name, tmp_path, smoke_render_store, check_notebook):
    check_notebook(name, tmp_path, smoke_render_store)


def test_the_two_modules_cover_every_notebook():
    from test_notebooks import FIRST

    assert sorted(FIRST + REST) == sorted(notebook.NOTEBOOKS)


def test_the_records_page_needs_only_pandas_and_seaborn():
    """The records-only page imports nothing but the standard library, pandas, seaborn (with its
    matplotlib) and IPython's display, so it runs in any Jupyter with `pip install pandas seaborn`."""
    import ast
    import sys
    from pathlib import Path

    src = (Path(__file__).resolve().parents[1] / "notebooks" / "records.py").read_text()
    mods = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mods.add(node.module.split(".")[0])
    assert mods - set(sys.stdlib_module_names) == {"pandas", "seaborn", "matplotlib", "IPython"}
