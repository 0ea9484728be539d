"""The distributed path, as a user launches it: ``accelerate launch`` with the repository's DDP
config file (``configs/accelerate/ddp_lora.yaml``, its process count overridden to 2) starts two
processes through torch.distributed.run; without CUDA our Accelerator runs them as DDP over gloo on the
CPU. One run is trained by both ranks; rank 0 alone writes the record and reports it; predictions are
gathered from both ranks without duplicates. (``accelerate launch --cpu`` would start a single process
unless MPI is installed; FSDP needs CUDA, so the FSDP file is only validated, in test_bench.py.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"

pytestmark = pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate CLI not installed")


def accelerate_one_run(tmp_path, port: int, experiment: str, *args) -> Path:
    """``lorafair run`` under ``accelerate launch`` with 2 CPU processes; returns the one run written."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "lib"))
    cmd = [str(ACCELERATE), "launch", "--config_file", str(ROOT / "configs/accelerate/ddp_lora.yaml"),
           "--num_processes", "2", "--main_process_port", str(port),
           "-m", "lorafair.cli", "run", *args, "--results-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    entries = list((tmp_path / experiment).iterdir())
    assert len(entries) == 1 and (entries[0] / "DONE").exists(), entries  # no second record, no .tmp leftover
    assert out.stdout.count(f"run {entries[0]}") == 1, out.stdout  # reported once, by rank 0
    return entries[0]


def test_two_process_cpu_run(tmp_path):
    run = accelerate_one_run(tmp_path, 29533, "vision_classification", "vision", "--profile", "smoke",
                             "--model", "vit_tiny_random", "--method", "lora")
    meta = json.loads((run / "config.json").read_text())
    assert meta["history"]["world_size"] == 2
    preds = pd.read_parquet(run / "predictions.parquet")
    # the 60 ordinary renderings, and the reserve renderings that topped up the test split (smoke: min_test_group)
    ordinary = ~preds["example_id"].str.startswith("omr")
    assert ordinary.sum() == 60 and preds["example_id"].is_unique
    assert (preds.loc[~ordinary, "split"] == "test").all()


def test_two_process_generation_run(tmp_path):
    """Causal-LM fine-tuning (fit_lm, validation loss reduced over ranks) and greedy decoding under
    2 processes; rank 0 alone writes the record."""
    run = accelerate_one_run(tmp_path, 29534, "generation_fairness", "generation", "--profile", "smoke",
                             "--method", "lora", "--train-set", "pro")
    meta = json.loads((run / "config.json").read_text())
    assert meta["history"]["world_size"] == 2 and len(meta["history"]["val_loss"]) == 1
    preds = pd.read_parquet(run / "predictions.parquet")
    assert len(preds) == 8 and preds["example_id"].is_unique and "generation" in preds  # 1 test frame x 8 occupations
