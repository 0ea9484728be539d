"""The distributed path: 2 CPU processes (gloo) launched by torchrun train one run through
accelerate (which reads torchrun's environment); rank 0 writes the record; outputs are gathered
from both ranks without duplicates. (`accelerate launch --cpu` starts a single process unless MPI
is installed, so torchrun is the launcher for multi-process CPU runs.)"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def torchrun_one_run(tmp_path, port: int, experiment: str, *args) -> Path:
    """``lorafair run`` under torchrun with 2 CPU processes; returns the one run directory written."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "lib"))
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "lorafair.cli", "run", *args, "--results-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = [p for p in (tmp_path / experiment).iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1 and (runs[0] / "DONE").exists()
    return runs[0]


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed")
def test_two_process_cpu_run(tmp_path):
    run = torchrun_one_run(tmp_path, 29533, "vision_classification", "vision", "--profile", "smoke",
                           "--model", "vit_tiny_random", "--method", "lora")
    meta = json.loads((run / "config.json").read_text())
    assert meta["history"]["world_size"] == 2
    preds = pd.read_parquet(run / "predictions.parquet")
    assert len(preds) == 60 and preds["example_id"].is_unique


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed")
def test_two_process_generation_run(tmp_path):
    """Causal-LM fine-tuning (fit_lm, validation loss reduced over ranks) and greedy decoding under
    2 processes; rank 0 alone writes the record."""
    run = torchrun_one_run(tmp_path, 29534, "generation_fairness", "generation", "--profile", "smoke",
                           "--method", "lora", "--train-set", "pro")
    meta = json.loads((run / "config.json").read_text())
    assert meta["history"]["world_size"] == 2 and len(meta["history"]["val_loss"]) == 1
    preds = pd.read_parquet(run / "predictions.parquet")
    assert len(preds) == 12 and preds["example_id"].is_unique and "generation" in preds
