"""One end-to-end smoke execution of every notebook, through the same driver as the book."""

import json
import math
import os

import nbformat
import pytest

from lorafair import launch, notebook


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    """One run store for all notebooks, filled as a cluster would fill it: every smoke run emitted
    (``lorafair sweep all --emit``) and executed by two concurrent jobs of submitit's local executor
    (the cluster path's ``--launch slurm``); the notebooks then only render (``LORAFAIR_NO_COMPUTE``:
    a run without a record fails the notebook), so none is recomputed."""
    root = tmp_path_factory.mktemp("runs")
    rows = launch.listing("all", "smoke", results_dir=str(root))
    emitted = root.parent / "smoke.jsonl"
    n = launch.emit(rows, emitted)
    res = launch.launch_slurm(str(emitted), str(root.parent / "logs"), str(root), cluster="local",
                              tasks_per_job=math.ceil(n / 2), retries=0)
    assert res == {"submitted": 2, "failed": 0}
    after = launch.listing("all", "smoke", results_dir=str(root))
    assert {r["state"] for r in after} == {"done"}
    dirs = [p for p in root.glob("*/*") if p.is_dir() and not p.name.startswith(".")]
    assert len(dirs) == len(after) == n  # every record present once
    stamps = {p: (p / "DONE").stat().st_mtime_ns for p in dirs}
    old = os.environ.get("LORAFAIR_NO_COMPUTE")
    os.environ["LORAFAIR_NO_COMPUTE"] = "1"
    yield root
    if old is None:
        os.environ.pop("LORAFAIR_NO_COMPUTE", None)
    else:
        os.environ["LORAFAIR_NO_COMPUTE"] = old
    assert {p: (p / "DONE").stat().st_mtime_ns for p in dirs} == stamps  # nothing recomputed by the notebooks


@pytest.mark.parametrize("name", notebook.NOTEBOOKS)
def test_notebook_smoke_execution(name, tmp_path, shared_runs):
    out = notebook.execute(name, {"profile": "smoke", "results_dir": str(shared_runs)}, tmp_path)
    assert notebook.notebook_errors(out) == []
    nb = nbformat.read(out, as_version=4)
    tags = [t for c in nb.cells for t in c.metadata.get("tags", [])]
    assert "injected-parameters" in tags
    for c in nb.cells:  # parameter cells are hidden in the book
        if {"parameters", "injected-parameters"} & set(c.metadata.get("tags", [])):
            assert "hide-input" in c.metadata["tags"]
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if any(k.endswith("image/png") for k in o.get("data", {}))]  # shown, or glued for a captioned figure
    expected = {"vision_classification": 5, "llm_classification": 4, "membership_inference": 2,
                "generation_fairness": 3, "findings": 1, "performance": 2}
    assert len(images) >= expected[name]  # every chapter's figures rendered as images
    text = json.dumps(nb)
    for c in nb.cells:  # every glued figure is placed in a numbered, captioned figure
        for key in __import__("re").findall(r'glue\("([a-z0-9_]+_fig)", fig, display=False\)', c.source):
            assert f"{{glue:figure}} {key}" in text, key
    assert "Profile `smoke`" in text  # stated in text; figure titles carry it in the image
    assert "/root" not in text and "/home/" not in text  # no personal paths in outputs


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
