"""The one sweep runner: configurations -> run store -> records, for every experiment.

``run(store, configs)`` reads back every configuration that already has a record and computes the
others, in this process or in ``workers`` spawned 1-thread processes (on a 2-core CPU two such
processes give 1.1-1.6x the throughput of one 2-thread process). Each run is stored as soon as it
finishes, so an interrupted sweep resumes where it stopped.

What a configuration computes is its *kind* (``kind_of``): ``classification`` (vision, text and
membership-inference runs: ``experiments.ClassificationRunner``), ``pronoun`` and ``token_bias``
(``generation.runs``) or ``estimate`` (``estimate``). A new kind is one ``Kind`` entry in ``KINDS``
(which configurations it matches, how it computes one, what it prepares before workers start).
Methods or models registered outside the library's modules exist only in the process that registered
them, not in spawned workers: run such sweeps with ``workers=1``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from tqdm import tqdm

from . import data as data_mod
from . import estimate as estimate_mod
from . import models as models_mod
from . import spec as spec_mod
from .errors import LorafairError
from .experiments import ClassificationRunner
from .generation.runs import compute_probe_run, compute_pronoun_run
from .runs import RunRecord, RunStore, map_in_workers, run_id


@dataclass(frozen=True)
class Kind:
    #: whether a configuration is of this kind
    matches: Callable[[dict], bool]
    #: (config, progress, train_options) -> (predictions, metrics, extra meta)
    compute: Callable[[dict, bool, dict], tuple]
    #: one-time preparation in the parent process before workers start (render data, convert models)
    prepare: Callable[[list[dict]], None]
    #: whether training progress bars are shown inside a run by default (in-process only)
    inner_progress: bool = False


_RUNNERS: dict = {}
_DATASETS: dict = {}


def dataset(name: str, kwargs: dict) -> data_mod.Dataset:
    """A classification dataset, loaded once per process (the chapters and the runs share it)."""
    key = (name, repr(sorted(kwargs.items())))
    if key not in _DATASETS:
        _DATASETS[key] = data_mod.load(name, **kwargs)
    return _DATASETS[key]


def _runner(cfg: dict, train_options: dict, progress: bool) -> ClassificationRunner:
    """One ClassificationRunner per dataset and options in this process: the dataset is loaded and
    its inputs encoded once, for every run of the sweep."""
    key = (cfg["dataset"], repr(sorted(cfg["dataset_kwargs"].items())), repr(sorted(train_options.items())), progress)
    if key not in _RUNNERS:
        r = ClassificationRunner(None, cfg["dataset"], cfg["dataset_kwargs"], progress=progress,
                                 train_options=train_options)
        r._dataset = dataset(cfg["dataset"], cfg["dataset_kwargs"])
        _RUNNERS[key] = r
    return _RUNNERS[key]


def _classification(cfg: dict, progress: bool, train_options: dict):
    return _runner(cfg, train_options, progress).compute(cfg)


def _prepare_classification(configs: list[dict]) -> None:
    for c in {(c["dataset"], repr(sorted(c["dataset_kwargs"].items()))): c for c in configs}.values():
        dataset(c["dataset"], c["dataset_kwargs"])  # render / prepare the data once, before workers read it
    _prepare_models(configs)


def _prepare_models(configs: list[dict]) -> None:
    for name in {c["model"] for c in configs}:
        models_mod.prepare(name)


def _estimate(cfg: dict, progress: bool, train_options: dict):
    return estimate_mod.compute_estimate(cfg)


def _generation(part: str) -> Callable[[dict], bool]:
    return lambda c: c.get("experiment") == "generation_fairness" and c.get("part") == part


#: the first kind that matches a configuration computes it (classification last: it takes the rest)
KINDS: dict[str, Kind] = {
    "estimate": Kind(lambda c: c.get("experiment") == "performance", _estimate, lambda configs: None),
    "pronoun": Kind(_generation("pronoun"), compute_pronoun_run, _prepare_models),
    "token_bias": Kind(_generation("token_bias"), compute_probe_run, _prepare_models),
    "classification": Kind(lambda c: "dataset" in c and c.get("experiment") != "generation_fairness",
                           _classification, _prepare_classification, inner_progress=True),
}


def kind_of(cfg: dict) -> str:
    for name, kind in KINDS.items():
        if kind.matches(cfg):
            return name
    raise LorafairError(f"no run kind computes configuration of experiment {cfg.get('experiment')!r} "
                        f"(part {cfg.get('part')!r}); kinds: {', '.join(KINDS)}")


def run_one(store: RunStore | str, cfg: dict, force: bool = False, train_options: dict | None = None,
            progress: bool | None = None, wait: bool = True) -> RunRecord | None:
    """One configuration's record: read back, or computed and stored (``wait=False``: None at once
    if another process is computing it)."""
    store = RunStore(store) if isinstance(store, str) else store
    cfg = spec_mod.as_spec(cfg)  # a plain configuration passes the one constructor here
    train_options = spec_mod.train_options(train_options)
    kind = KINDS[kind_of(cfg)]
    inner = kind.inner_progress if progress is None else progress
    return store.get_or_run(cfg["experiment"], cfg, lambda: kind.compute(cfg, inner, dict(train_options or {})),
                            force=force, wait=wait)


def _in_worker(root: str, cfg: dict, force: bool, train_options: dict | None) -> str:
    return str(run_one(root, cfg, force, train_options, progress=False).path)


def run(store: RunStore, configs: list[dict], force: bool = False, workers: int = 1, progress: bool = True,
        inner_progress: bool | None = None, train_options: dict | None = None, desc: str = "runs") -> list[RunRecord]:
    """Every configuration's record, in order (duplicates run once). ``progress``: one bar over the
    runs; ``inner_progress``: bars inside each run (default: training bars for classification run in
    this process). ``train_options``: speed settings that do not enter a run's hash (``TrainConfig``:
    compile, gradient_checkpointing, num_workers, precision)."""
    configs = [spec_mod.as_spec(c, f"{desc}: configuration {i}") for i, c in enumerate(configs)]  # all, before any trains
    train_options = spec_mod.train_options(train_options)
    unique = list({run_id(c): c for c in configs}.values())
    todo = [c for c in unique if force or not store.is_done(c["experiment"], c)]
    if todo and os.environ.get("LORAFAIR_NO_COMPUTE") == "1":
        raise LorafairError(f"{len(todo)} run(s) of {desc} have no record in {store.root}/ and this build computes "
                            f"nothing (--no-compute), e.g. {todo[0]['experiment']}/{run_id(todo[0])}")
    bar = tqdm(total=len(unique), initial=len(unique) - len(todo), desc=desc, disable=not progress, file=sys.stderr)
    try:
        if workers > 1 and len(todo) > 1:
            by_kind: dict = {}
            for c in todo:
                by_kind.setdefault(kind_of(c), []).append(c)
            for k, cs in by_kind.items():
                KINDS[k].prepare(cs)
            map_in_workers(_in_worker, [(str(store.root), c, force, train_options) for c in todo], workers,
                           lambda: bar.update(1))
        else:
            for c in todo:
                run_one(store, c, force, train_options, progress=inner_progress if progress else False)
                bar.update(1)
    finally:
        bar.close()
    return [store.load(c["experiment"], c) for c in configs]
