"""The run store: one directory per run, named by a hash of its resolved configuration.

Contract (book/methods.md, "Run records"): ``<root>/<experiment>/<run_id>/`` holds ``config.json``,
``predictions.parquet``, ``metrics.json`` and, written last, ``DONE``. A directory without ``DONE`` is
incomplete: it is never read and is recomputed. A run is built in a temporary sibling directory and
moved into place with one ``rename``, so an interrupted run never leaves a record that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd

from .precision import cpu_info

#: Packages whose versions are recorded with every run.
RECORDED_PACKAGES = (
    "torch", "torchvision", "transformers", "peft", "accelerate", "timm", "fairlearn",
    "torchmetrics", "scikit-learn", "scipy", "numpy", "pandas",
)


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def run_id(config: dict) -> str:
    """Short stable hash of the experimental configuration (not of versions or timings)."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:12]


def environment() -> dict:
    versions = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        rev = None
    import torch

    # the precision a training run used is added by the run itself (lorafair.precision)
    device = f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"
    return {"python": platform.python_version(), "packages": versions, "git_revision": rev, "device": device,
            "cpu": cpu_info(), "threads": torch.get_num_threads()}


@dataclass
class RunRecord:
    path: Path
    config: dict
    metrics: dict
    meta: dict

    @property
    def run_id(self) -> str:
        return self.path.name

    def predictions(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "predictions.parquet")


class RunStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, experiment: str, config: dict) -> Path:
        return self.root / experiment / run_id(config)

    def is_done(self, experiment: str, config: dict) -> bool:
        return (self.path(experiment, config) / "DONE").exists()

    def load(self, experiment: str, config: dict) -> RunRecord:
        return load_record(self.path(experiment, config))

    def get_or_run(
        self,
        experiment: str,
        config: dict,
        compute: Callable[[], tuple[pd.DataFrame, dict] | tuple[pd.DataFrame, dict, dict]],
        force: bool = False,
    ) -> RunRecord:
        """Return the completed record for ``config``; compute and store it if there is none.

        ``compute()`` returns ``(predictions, metrics)`` or ``(predictions, metrics, extra_meta)``.
        """
        final = self.path(experiment, config)
        if (final / "DONE").exists() and not force:
            return load_record(final)
        if not is_main_process():
            # under `accelerate launch` every rank trains (the collectives need them all); rank 0 writes
            compute()
            _barrier()
            return load_record(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            start = time.time()
            out = compute()
            predictions, metrics = out[0], out[1]
            extra = dict(out[2]) if len(out) > 2 else {}
            env = {**environment(), **extra.pop("environment", {})}  # e.g. the precision the run used
            meta = {"experiment": experiment, "run_id": final.name, "config": config,
                    "environment": env, "wall_seconds": round(time.time() - start, 2),
                    "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
            predictions.to_parquet(tmp / "predictions.parquet", index=False)
            _write_json(tmp / "metrics.json", metrics)
            _write_json(tmp / "config.json", meta)
            (tmp / "DONE").write_text(meta["finished_utc"] + "\n")
            if final.exists():  # incomplete leftover, or forced recomputation
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        _barrier()
        return load_record(final)

    def records(self, experiment: str) -> list[RunRecord]:
        """Every completed record of an experiment (incomplete directories are skipped)."""
        base = self.root / experiment
        if not base.exists():
            return []
        return [load_record(p) for p in sorted(base.iterdir())
                if p.is_dir() and not p.name.startswith(".") and (p / "DONE").exists()]


def is_main_process() -> bool:
    """Rank 0 of a distributed launch, or a plain process. Before the process group exists (the run
    store is consulted before training creates the Accelerator) the launcher's RANK variable decides,
    so that under ``torchrun`` / ``accelerate launch`` only rank 0 ever writes a record."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def load_record(path: Path) -> RunRecord:
    path = Path(path)
    if not (path / "DONE").exists():
        raise FileNotFoundError(f"run {path} is incomplete (no DONE file); re-run it")
    meta = json.loads((path / "config.json").read_text())
    metrics = json.loads((path / "metrics.json").read_text())
    return RunRecord(path=path, config=meta["config"], metrics=metrics, meta=meta)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def map_in_workers(fn: Callable, arg_tuples: list[tuple], workers: int, on_done: Callable[[], None]) -> None:
    """``fn(*args)`` for every tuple in ``workers`` spawned 1-thread processes; ``on_done()`` after
    each. Independent runs store themselves as they finish; a worker's error is re-raised here."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_one_thread) as pool:
        for f in as_completed([pool.submit(fn, *a) for a in arg_tuples]):
            f.result()
            on_done()
