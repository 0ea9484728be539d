import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ["LORAFAIR_THREADS"] = "1"  # the notebook kernels the smoke tests start use one thread too
torch.set_num_threads(1)

SMOKE_RENDER = {"size": 32}


@pytest.fixture(scope="session")
def smoke_kwargs(tmp_path_factory):
    """Dataset kwargs of a tiny OpenMoji dataset rendered once per session into a temp cache."""
    from lorafair import data

    kw = {"task": "gender", "n": 60, "data_seed": 0, "render": SMOKE_RENDER}  # rendered into the data cache
    data.load_openmoji_people(**kw)
    return kw


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory):
    """One run store for the notebook tests, filled as a cluster would fill it: every smoke run
    emitted (``lorafair sweep all --emit``) and executed by two concurrent jobs of submitit's local
    executor (``--launch slurm``). The two notebook test modules may run on two pytest-xdist workers:
    they share the store (a folder of this run's temporary root), and a lock lets the first one fill
    it while the other waits. Returns (store, the DONE time stamp of every record)."""
    import fcntl
    import math

    from lorafair import launch

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this run's, for every worker
    root = shared / "smoke-store"
    with open(shared / "smoke-store.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "smoke-store.filled").exists():
            root.mkdir(exist_ok=True)
            rows = launch.listing("all", "smoke", results_dir=str(root))
            emitted = shared / "smoke.jsonl"
            n = launch.emit(rows, emitted)
            res = launch.launch_slurm(str(emitted), str(shared / "smoke-logs"), str(root), cluster="local",
                                      tasks_per_job=math.ceil(n / 2), retries=0)
            assert res == {"submitted": 2, "failed": 0}
            (shared / "smoke-store.filled").write_text(str(n))
        fcntl.flock(lock, fcntl.LOCK_UN)
    after = launch.listing("all", "smoke", results_dir=str(root))
    assert {r["state"] for r in after} == {"done"}
    dirs = [p for p in root.glob("*/*") if p.is_dir() and not p.name.startswith(".")]
    assert len(dirs) == len(after) == int((shared / "smoke-store.filled").read_text())  # every record once
    return root, {p: (p / "DONE").stat().st_mtime_ns for p in dirs}


@pytest.fixture(scope="module")
def smoke_render_store(smoke_store):
    """The filled store, with computing forbidden while a module's notebooks render
    (``LORAFAIR_NO_COMPUTE``: a run without a record fails the notebook); afterwards no record
    may have been recomputed."""
    root, stamps = smoke_store
    old = os.environ.get("LORAFAIR_NO_COMPUTE")
    os.environ["LORAFAIR_NO_COMPUTE"] = "1"
    yield root
    if old is None:
        os.environ.pop("LORAFAIR_NO_COMPUTE", None)
    else:
        os.environ["LORAFAIR_NO_COMPUTE"] = old
    assert {p: (p / "DONE").stat().st_mtime_ns for p in stamps} == stamps  # nothing recomputed


@pytest.fixture(scope="session")
def check_notebook():
    """Execute one notebook on the smoke profile and check what a reader gets."""
    import json

    import nbformat

    from lorafair import notebook

    def check(name, tmp_path, shared_runs):
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
                    "generation_fairness": 3, "findings": 1, "records": 1, "performance": 2}
        assert len(images) >= expected[name]  # every chapter's figures rendered as images
        text = json.dumps(nb)
        for c in nb.cells:  # every glued figure is placed in a numbered, captioned figure
            for key in __import__("re").findall(r'glue\("([a-z0-9_]+_fig)", (?:plots\.checked\()?fig\)?, display=False\)',
                                                c.source):
                assert f"{{glue:figure}} {key}" in text, key
        assert "Profile `smoke`" in text  # stated in text; figure titles carry it in the image
        assert "/root" not in text and "/home/" not in text  # no personal paths in outputs
        from lorafair.pagecheck import REPO_ROOT
        assert str(REPO_ROOT) + "/" not in text and f'"{REPO_ROOT}"' not in text  # nor the builder's checkout
        exercises = [c for c in nb.cells if "{exercise}" in c.source]
        assert name == "findings" or exercises  # every other chapter ends with exercises
        for c in nb.cells:  # every exercise has its solution, and every glue it reads is in the notebook
            for label in __import__("re").findall(r"\{exercise\}\n:label: (\S+)", c.source):
                assert f"{{solution}} {label}" in c.source, label
        glued = set(__import__("re").findall(r'glue\("([a-z0-9_]+)"', "\n".join(c.source for c in nb.cells)))
        for c in nb.cells:
            if c.cell_type == "markdown":
                for key in __import__("re").findall(r"\{glue(?::md|:text)?\}`([a-z0-9_]+)`", c.source):
                    assert key in glued, key
    return check
