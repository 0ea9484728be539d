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
