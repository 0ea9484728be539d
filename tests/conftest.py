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

    cache = tmp_path_factory.mktemp("om")
    kw = {"task": "gender", "n": 60, "data_seed": 0, "render": SMOKE_RENDER, "cache_dir": str(cache)}
    data.load_openmoji_people(**kw)
    return kw
