"""The repository's own promises: one dependency list, pinned; README commands; no weights in git."""

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_the_same_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert "-r requirements.txt" in pip
    assert "python=3.11" in env["dependencies"]


def test_requirements_are_pinned():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith(("torch", "transformers", "peft", "accelerate", "timm", "fairlearn", "jupyter-book",
                            "papermill", "jupytext", "numpy", "pandas", "scikit-learn")):
            assert re.search(r"==\d", line), line
    for line in (ROOT / "requirements-assets.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert "==" in line, line


def test_readme_commands_and_ci_agree():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_no_large_or_weight_files_tracked():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    for f in files:
        assert not f.endswith((".pth", ".pt", ".bin", ".safetensors", ".gguf", ".ckpt")), f
        p = ROOT / f
        if p.exists():
            assert p.stat().st_size < 5_000_000, f


def test_training_and_benchmark_import_without_notebook_tooling():
    """The GPU image has no papermill, jupytext, nbformat, datasets or fairlearn (the GPU machine's image):
    the training, generation and benchmark entry points must import without them."""
    code = ("import builtins, sys\n"
            "blocked = {'papermill', 'jupytext', 'nbformat', 'nbclient', 'ipykernel', 'datasets', 'fairlearn', 'myst_nb'}\n"
            "real = builtins.__import__\n"
            "def imp(name, *a, **k):\n"
            "    if name.split('.')[0] in blocked: raise ImportError('blocked ' + name)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\n"
            "import lorafair.cli, lorafair.bench, lorafair.generation, lorafair.train, lorafair.experiments\n"
            "import lorafair.estimate\n")
    import os
    import sys

    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-1500:]
