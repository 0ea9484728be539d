"""A chapter's runs handed to any scheduler: list them, write the pending ones as JSON lines, execute
one line (a SLURM array task, a container) or all of them, on worker processes, on every GPU of a
node, or as a SLURM job array through submitit.

    lorafair sweep NAME|all --profile P [--emit FILE] [--launch local|gpus|slurm|sbatch] ...
    lorafair exec FILE [--index I | --indices I,J,...] [--results-dir DIR]

Every configuration is written into the run store by ``lorafair.sweep.run_one``; the store's claims
(``lorafair.runs``) make a configuration train once even when two jobs start it, so any number of
tasks may run at once, be killed and be resubmitted: a completed record is never recomputed or
removed, and a dead task's claim is taken over.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from . import chapters
from . import runs as runs_mod
from . import spec as spec_mod
from . import sweep as sweep_mod
from .errors import LorafairError, choose
from .profiles import RESULTS_DIRS, resolve
from .runs import RunStore, run_id

LAUNCHERS = ("local", "gpus", "slurm", "sbatch")
#: submitit's executors (``--cluster``): SLURM, local processes, or in this process (debug)
SUBMITIT_CLUSTERS = ("slurm", "local", "debug")
#: chapters whose runs the study computes (the findings and the book's other pages train nothing)
RUN_CHAPTERS = ("vision_classification", "llm_classification", "membership_inference", "generation_fairness",
                "performance")


def chapter_configs(name: str, profile: str, overrides: dict | None = None) -> list[tuple[str, str, dict, dict]]:
    """(chapter, group, configuration, the chapter's speed settings ``train_options``, not hashed)
    of every run of a chapter (``all``: of every chapter), once."""
    choose("chapter", name, RUN_CHAPTERS + ("all",))
    names = list(RUN_CHAPTERS) if name == "all" else [name]
    out, seen = [], set()
    for ch in names:
        P = resolve(ch, profile, **(overrides or {}))
        for group, cfgs in chapters.configs(ch, P).items():
            for c in cfgs:
                rid = run_id(c)  # the hash of the configuration alone
                if rid not in seen:
                    seen.add(rid)
                    out.append((ch, group, c, dict(P.get("train_options") or {})))
    return out


# ---------------------------------------------------------------- cost estimates
#: training examples of the paper profile's datasets, from their published sizes (the estimate of a
#: run's GPU time needs them before any data is downloaded): UTKFace aligned & cropped 23,705
#: images (60% train); Measuring Hate Speech, religion comments after aggregation (about 9,000,
#: 60% train); the WinoMT Turkish-English general file, 3,888 lines (70% train); Yelp probe texts.
PAPER_TRAIN_EXAMPLES = {"utkface": 14_223, "measuring_hate_speech": 5_400, "mt_gender": 2_722,
                        "yelp_inferred": 50_000}
#: seconds one GPU run spends outside its training steps (loading, evaluation, decoding), by kind
PAPER_OVERHEAD_S = {"classification": 300.0, "pronoun": 900.0, "token_bias": 900.0, "estimate": 30.0}
#: the performance chapter's workload name of each paper model (Mistral 7B is estimated as Llama-2 7B:
#: the same width and depth; its grouped-query attention makes it slightly cheaper)
PAPER_ARCH = {"vit_base": "vit_base", "swinv2_large": "swinv2_large", "llama2_7b": "llama_7b",
              "mistral_7b": "llama_7b"}


def _cost_keys(experiment: str, group: str, c: dict) -> list[tuple]:
    """From the most to the least specific: what a run's time is estimated from."""
    exp = experiment.replace("pilot_beyond_", "").replace("pilot_lr_", "")
    return [(experiment, group, c.get("model"), c.get("method")), (exp, c.get("model"), c.get("method")),
            (exp, c.get("model"))]


def measured_seconds(store: RunStore, items: list[tuple]) -> dict:
    """{cost key (``_cost_keys``): mean wall seconds} over the records that exist."""
    acc: dict = {}
    for ch, group, c, _ in items:
        if store.is_done(c["experiment"], c):
            secs = store.load(c["experiment"], c).meta["wall_seconds"]
            for k in _cost_keys(c["experiment"], group, c):
                acc.setdefault(k, []).append(secs)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def gpu_step_rates(store: RunStore) -> dict:
    """{(arch, method): estimated training samples per second on a GPU} from the performance
    chapter's records (``lorafair.estimate``), any profile."""
    rates = {}
    for r in store.records("performance"):
        m = r.metrics
        if m.get("est_samples_per_s"):
            rates.setdefault((m["arch"], m["method"]), float(m["est_samples_per_s"]))
    return rates


def estimate_seconds(items: list[tuple], store: RunStore, profile: str,
                     reference: RunStore | None = None) -> list[float | None]:
    """Each run's estimated seconds: its own record's time if it has one; on a CPU profile the mean
    of the records of the same experiment, group, model and method (``reference``, default the
    profile's committed store); on the paper profile epochs x training examples / the estimated GPU
    rate of its architecture and method (the performance chapter's estimates), plus a fixed overhead.
    None where nothing to estimate from exists."""
    ref = reference or RunStore(RESULTS_DIRS["offline" if profile == "paper" else profile])
    measured = measured_seconds(ref, items) if profile != "paper" else {}
    rates = gpu_step_rates(ref) if profile == "paper" else {}
    out = []
    for ch, group, c, _ in items:
        if store.is_done(c["experiment"], c):
            out.append(float(store.load(c["experiment"], c).meta["wall_seconds"]))
            continue
        if profile != "paper":
            out.append(next((measured[k] for k in _cost_keys(c["experiment"], group, c) if k in measured), None))
            continue
        kind = sweep_mod.kind_of(c)
        # an adapter or a head trains at about LoRA's rate (a head-only run is cheaper: an upper bound)
        rate = rates.get((PAPER_ARCH.get(c.get("model")), "full" if c.get("method") == "full" else "lora"))
        n = PAPER_TRAIN_EXAMPLES.get(c.get("dataset") or c.get("task") or c.get("corpus"))
        if kind == "estimate":
            out.append(PAPER_OVERHEAD_S["estimate"])
        elif c.get("epochs") == 0:  # the base model: evaluation only
            out.append(PAPER_OVERHEAD_S.get(kind, 300.0))
        elif rate and n:
            out.append(float(c.get("epochs") or 1) * n / rate + PAPER_OVERHEAD_S.get(kind, 300.0))
        else:
            out.append(None)
    return out


def listing(name: str, profile: str, overrides: dict | None = None, results_dir: str | None = None) -> list[dict]:
    """One row per run: chapter, group, experiment, run id, state, estimated seconds, a short description."""
    items = chapter_configs(name, profile, overrides)
    store = RunStore(results_dir or RESULTS_DIRS[profile])
    est = estimate_seconds(items, store, profile)
    rows = []
    for (ch, group, c, options), s in zip(items, est):
        what = " ".join(f"{k}={c[k]}" for k in ("model", "method", "seed", "rank", "layer_fraction", "part",
                                               "train_set", "workload") if c.get(k) is not None)
        rows.append({"chapter": ch, "group": group, "experiment": c["experiment"], "run_id": run_id(c),
                     "state": store.state(c["experiment"], c), "seconds": s, "what": what, "config": c,
                     "train_options": options})
    return rows


def exercise_cost(name: str, profile: str, overrides: dict | None = None, results_dir: str | None = None,
                  workers: int = 2) -> str:
    """What running chapter ``name`` with ``overrides`` costs, for an exercise: how many of its runs
    have no record in the store and their estimated time on ``workers`` one-thread processes (from
    the records' own run times), or that it only re-renders."""
    rows = listing(name, profile, overrides, results_dir)
    todo = [r for r in rows if r["state"] != "done"]
    if not todo:
        return f"no training: all {len(rows)} runs have a record, so it only re-renders the chapter"
    secs = [r["seconds"] for r in todo if r["seconds"]]
    est = f", about {max(1, round(sum(secs) / workers / 60))} min on {workers} one-thread workers" if secs else ""
    return f"{len(todo)} of its {len(rows)} runs have no record and train{est}, then it renders the chapter"


# ---------------------------------------------------------------- the file of configurations
def check_emit_path(path: str | os.PathLike) -> Path:
    """``--emit``: a new or regular file in a folder that exists (never a folder, a device or a pipe)."""
    path = Path(path)
    if path.is_dir():
        raise LorafairError(f"--emit {path} is a folder; give a file name, e.g. {path / 'pending.jsonl'}")
    if os.path.lexists(path) and not path.is_file():
        raise LorafairError(f"--emit {path} exists and is not a regular file (a device, a pipe, a broken link); "
                            "give a file name")
    if not path.parent.is_dir():
        raise LorafairError(f"--emit {path}: no folder {path.parent} (create it first)")
    return path


def check_script_text(name: str, value) -> None:
    """A value written into a job script holds no control character (a newline would start a new
    line of the script, e.g. an ``#SBATCH`` one)."""
    if value is not None and any(ord(ch) < 32 for ch in str(value)):
        raise LorafairError(f"{name} {str(value)!r} holds a control character (a newline?); it cannot go into a job script")


def emit(rows: list[dict], path: str | os.PathLike) -> int:
    """Write the configurations that have no record (pending or incomplete) as JSON lines; returns how many."""
    todo = [r for r in rows if r["state"] != "done"]
    path = check_emit_path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text("".join(json.dumps({"config": r["config"], "seconds": r["seconds"],
                                           "train_options": r.get("train_options") or {}}, sort_keys=True) + "\n"
                               for r in todo))
        tmp.replace(path)
    except OSError as e:  # a full disk, a read-only folder: no partial file and no temporary left
        raise LorafairError(f"could not write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return len(todo)


def read(path: str | os.PathLike) -> list[dict]:
    """The entries of a file written by ``emit``, each line's configuration through the one run-spec
    constructor (``spec.build``) and its speed settings checked, before any line runs: a malformed
    line is an error naming its number and the bad key."""
    path = Path(path)
    if not path.is_file():
        raise LorafairError(f"no such file of configurations: {path} (write one with lorafair sweep NAME --emit FILE)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise LorafairError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {i}"
        try:
            e = json.loads(line)
        except (ValueError, RecursionError):
            raise LorafairError(f"{where} is not JSON (a line written by lorafair sweep --emit)") from None
        if not isinstance(e, dict) or not isinstance(e.get("config"), dict):
            raise LorafairError(f"{where} is not a configuration written by lorafair sweep --emit (no config)")
        extra = sorted(set(e) - {"config", "seconds", "train_options"})
        if extra:
            raise LorafairError(f"{where}: unknown key {extra[0]!r}; a line holds config, seconds and train_options")
        s = e.get("seconds")
        if s is not None and not (isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s >= 0):
            raise LorafairError(f"{where}: seconds is {s!r}: a non-negative number of seconds or null")
        out.append({"config": spec_mod.build(e["config"], where), "seconds": s,
                    "train_options": spec_mod.train_options(e.get("train_options"), f"{where}: train_options")})
    if not out:
        raise LorafairError(f"{path} holds no configuration (write one with lorafair sweep NAME --emit FILE)")
    return out


def parse_indices(text: str | None, n: int) -> list[int]:
    """``None``: every line (or the SLURM array task's, from ``SLURM_ARRAY_TASK_ID``); ``"3"`` or ``"0,2,5"``."""
    if text is None:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        if task is None:
            return list(range(n))
        if not re.fullmatch(r"[0-9]+", task.strip()) or not 0 <= int(task) < n:
            raise LorafairError(f"SLURM_ARRAY_TASK_ID is {task!r}: a line number of the file, 0-{n - 1}")
        return [int(task)]
    parts = [t.strip() for t in str(text).split(",")]
    if not all(re.fullmatch(r"-?[0-9]+", t) for t in parts):
        raise LorafairError(f"--index must be integers separated by commas, got {text!r}")
    idx = [int(t) for t in parts]
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise LorafairError(f"--index {bad[0]} is out of range: the file has {n} configurations (0-{n - 1})")
    return idx


def execute(path: str | os.PathLike, indices: list[int] | None = None, results_dir: str | None = None,
            wait: bool = True) -> list[str]:
    """Run the chosen lines of a configuration file into the run store (the profile's, unless
    ``results_dir``); returns each run's state afterwards (``done``, or ``running`` where another
    process holds it and ``wait`` is False)."""
    entries = read(path)
    out = []
    for i in (range(len(entries)) if indices is None else indices):
        c, options = entries[i]["config"], dict(entries[i].get("train_options") or {})
        store = RunStore(results_dir or RESULTS_DIRS[c["profile"]])
        if not store.is_done(c["experiment"], c):
            sweep_mod.KINDS[sweep_mod.kind_of(c)].prepare([c])
        rec = sweep_mod.run_one(store, c, train_options=options, progress=False, wait=wait)
        out.append("done" if rec is not None else "running")
    return out


def exec_task(path: str, indices: list[int], results_dir: str | None) -> list[str]:
    """The function a submitit job calls (module level, so it pickles by name)."""
    return execute(path, indices, results_dir)


# ---------------------------------------------------------------- launchers
def gpu_assignments(n_tasks: int, n_gpus: int) -> list[list[int]]:
    """The task indices each GPU's worker runs: round-robin over ``n_gpus`` (at least one worker)."""
    n_gpus = max(1, int(n_gpus))
    return [list(range(g, n_tasks, n_gpus)) for g in range(min(n_gpus, max(n_tasks, 1)))]


def visible_gpus() -> int:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else torch's count."""
    return len(runs_mod.worker_devices())


def worker_commands(path: str, n_tasks: int, n_gpus: int, results_dir: str | None) -> list[tuple[dict, list[str]]]:
    """(environment additions, command) of each GPU's worker: ``CUDA_VISIBLE_DEVICES`` pins it to one
    device (the visible devices' own ids where the launcher itself was given a subset)."""
    ids = list(runs_mod.worker_devices()) or [str(g) for g in range(n_gpus)]
    out = []
    for g, idx in enumerate(gpu_assignments(n_tasks, n_gpus)):
        if not idx:
            continue
        cmd = [sys.executable, "-m", "lorafair.cli", "exec", str(path), "--indices", ",".join(map(str, idx))]
        if results_dir:
            cmd += ["--results-dir", str(results_dir)]
        out.append(({"CUDA_VISIBLE_DEVICES": ids[g], "OMP_NUM_THREADS": "4"}, cmd))
    return out


def launch_gpus(path: str, n_gpus: int | None = None, results_dir: str | None = None) -> None:
    """One worker process per GPU, each pinned by ``CUDA_VISIBLE_DEVICES``; waits for all, and
    fails naming the workers that failed. A worker killed with its parent leaves its claim, which
    the next launch takes over."""
    n = len(read(path))
    n_gpus = visible_gpus() if n_gpus is None else n_gpus
    if n_gpus < 1:
        raise LorafairError("--launch gpus found no GPU (CUDA_VISIBLE_DEVICES is empty and torch sees none); "
                            "use --launch local on a CPU")
    procs = [subprocess.Popen(cmd, env={**os.environ, **env}) for env, cmd in worker_commands(path, n, n_gpus, results_dir)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    failed = [i for i, c in enumerate(codes) if c != 0]
    if failed:
        raise LorafairError(f"{len(failed)} of {len(procs)} GPU workers failed (workers {failed}); run the same "
                            "command again: completed runs are kept and the rest resume")


def time_request_minutes(seconds: list[float | None], default_s: float = 4 * 3600.0, margin: float = 1.5) -> int:
    """A job array's time request: the longest estimated run times ``margin`` plus 10 minutes."""
    known = [s for s in seconds if s]
    return int(math.ceil((max(known) if known else default_s) * margin / 60.0)) + 10


#: a SLURM partition (or a comma-separated list of them)
PARTITION = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")


def check_slurm(partition: str | None = None, logs: str | None = None) -> None:
    """Values that go into a job script or submitit's: a partition name, a log folder without
    characters a shell or an ``#SBATCH`` line would read (newlines, quotes, ``$``, backticks, ...)."""
    if partition is not None and not PARTITION.fullmatch(partition):
        raise LorafairError(f"--partition {partition!r} is not a partition name (letters, digits, _ . -, "
                            "comma-separated)")
    if logs is not None and not re.fullmatch(r"[A-Za-z0-9_./+-]+", str(logs)):
        raise LorafairError(f"--logs {logs!r}: give a folder whose name has only letters, digits and _ . / + - "
                            "(it is written into the job scripts)")


def sbatch_script(path: str, n: int, minutes: int, gpus: int = 1, results_dir: str | None = None,
                  parallel: int | None = None, partition: str | None = None) -> str:
    """A plain ``sbatch --array`` script for sites that submit by hand: task i runs line i. Every
    value is checked (numbers, the partition) or quoted for the shell (``shlex.quote``), so a file or
    folder name cannot run a command or add an ``#SBATCH`` line."""
    check_slurm(partition)
    check_script_text("file", path)
    check_script_text("--results-dir", results_dir)
    for name, v in (("tasks", n), ("minutes", minutes), ("gpus", gpus), ("parallel", parallel or 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise LorafairError(f"the job array's {name} must be a positive integer, got {v!r}")
    lines = ["#!/bin/bash", "#SBATCH --job-name=lorafair",
             f"#SBATCH --array=0-{n - 1}" + (f"%{parallel}" if parallel else ""),
             f"#SBATCH --time={minutes // 60:02d}:{minutes % 60:02d}:00",
             f"#SBATCH --gpus-per-task={gpus}", "#SBATCH --cpus-per-task=8",
             "#SBATCH --output=lorafair-%A_%a.out"]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines += ["#SBATCH --requeue", "set -euo pipefail",
              "# the repository's environment: .venv/bin on the PATH (README)",
              # absolute paths: the job may start elsewhere, and a name cannot be read as an option ("-h")
              "lorafair exec " + shlex.quote(os.path.abspath(path)) + ' --index "$SLURM_ARRAY_TASK_ID"'
              + (" --results-dir " + shlex.quote(os.path.abspath(results_dir)) if results_dir else "")]
    return "\n".join(lines) + "\n"


class _Task:
    """A requeueable submitit task (``submitit.helpers.Checkpointable``): on pre-emption or timeout
    submitit resubmits it with the same arguments; its finished runs are read back, not recomputed."""

    def __call__(self, path: str, indices: list[int], results_dir: str | None) -> list[str]:
        return exec_task(path, indices, results_dir)

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def launch_slurm(path: str, folder: str, results_dir: str | None = None, gpus: int = 1, partition: str | None = None,
                 parallel: int | None = None, retries: int = 2, cluster: str | None = None,
                 minutes: int | None = None, tasks_per_job: int = 1, poll_s: float = 10.0) -> dict:
    """The file's configurations as one submitit job array (``cluster="local"`` runs the jobs as
    local processes: the tests). Each job runs ``tasks_per_job`` lines; the time request is the
    longest estimate's (``time_request_minutes``), GPUs and partition as given; logs per task in
    ``folder``. Failed tasks are resubmitted up to ``retries`` times. Returns {submitted, failed}."""
    import submitit

    check_slurm(partition, folder)
    entries = read(path)
    chunks = [list(range(i, min(i + tasks_per_job, len(entries)))) for i in range(0, len(entries), tasks_per_job)]
    if not chunks:
        return {"submitted": 0, "failed": 0}
    minutes = minutes or time_request_minutes([e.get("seconds") for e in entries]) * tasks_per_job
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {"timeout_min": minutes, "slurm_array_parallelism": parallel or len(chunks), "name": "lorafair"}
    if ex.cluster == "slurm":
        params.update(slurm_gpus_per_task=gpus, slurm_additional_parameters={"requeue": True})
        if partition:
            params["slurm_partition"] = partition
    ex.update_parameters(**params)
    todo, submitted = chunks, 0
    for attempt in range(retries + 1):
        task = _Task()
        jobs = ex.map_array(task, [str(path)] * len(todo), todo, [results_dir] * len(todo))
        submitted += len(jobs)
        print(f"[lorafair] submitted {len(jobs)} task(s) to {ex.cluster} (job {jobs[0].job_id.split('_')[0]}); "
              f"logs in {folder}", flush=True)
        failed = []
        for chunk, job in zip(todo, jobs):
            try:
                job.result()
            except Exception as e:  # a failed task: its runs without a record are retried
                failed.append(chunk)
                print(f"[lorafair] task {job.job_id} failed: {type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ''}",
                      flush=True)
        if not failed:
            return {"submitted": submitted, "failed": 0}
        todo = failed
        if attempt < retries:
            print(f"[lorafair] resubmitting {len(todo)} failed task(s) (retry {attempt + 1} of {retries})", flush=True)
            time.sleep(poll_s if ex.cluster == "slurm" else 0)
    return {"submitted": submitted, "failed": len(todo)}
