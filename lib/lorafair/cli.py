"""``lorafair``: run experiments, execute notebooks, build the book.

    lorafair book [--profile offline|smoke|paper] [--recompute | --no-compute] [--results-dir DIR] [--out DIR] [--only NAME ...] [--no-build]
    lorafair notebook NAME [--profile P] [-p KEY VALUE ...] [--out DIR]
    lorafair params NAME
    lorafair plan NAME [--profile P] [-p KEY VALUE ...]   (a chapter's runs, without executing it)
    lorafair sweep NAME|all [--profile P] [--emit FILE] [--launch local|gpus|slurm|sbatch] ...
    lorafair exec FILE [--index I | --indices I,J] [--results-dir DIR]   (one line of an --emit file)
    lorafair runs verify [--repair] [--results-dir DIR]   (damaged records: sizes, sha256, parsing)
    lorafair run vision|llm|generation [--profile P] [--model M] [--method M] [--seed S] [--rank R] ...
    lorafair bench [--scale tiny|paper] [--workloads ARCH:METHOD ...] [--precision P] [--compile] ...
    lorafair bench --estimate [--gpu h200|h100|a100] ...   (a model of a GPU step, on any CPU)
    lorafair bench --cpu [--models M ...] [--methods M ...] [--variants V ...] [--threads N]

User mistakes print one line (``lorafair: error: ...``) and exit with status 2; no traceback.
Commands import what they need when they run (a command's start does not pay for torch); the
library's own modules import each other at module level only.
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from .errors import LorafairError


def _value(text: str):
    """A ``-p`` value: YAML (numbers as in YAML 1.2: ``1e-3`` is a float); unparsable text stays text."""
    from .profiles import read_yaml

    if not text.strip():
        return text  # an empty value stays empty (and is refused by name), it does not mean "the profile's"
    try:
        return read_yaml(text)
    except (yaml.YAMLError, RecursionError):
        return text


def _overrides(a) -> dict:
    """``-p KEY VALUE`` of plan and sweep; the profile is given once, with --profile."""
    out = {k: _value(v) for k, v in (a.param or [])}
    if "profile" in out:
        raise LorafairError(f"-p profile {out['profile']!r}: give the profile with --profile (here {a.profile!r})")
    return out


def cmd_book(a) -> None:
    from .notebook import build_book

    if a.no_compute and a.recompute:
        raise LorafairError("--no-compute and --recompute contradict each other; give one")
    t = build_book(a.profile, recompute=a.recompute, only=a.only, build=not a.no_build, compute=not a.no_compute,
                   results_dir=a.results_dir, out_dir=a.out)
    print("[lorafair] wall time (s): " + json.dumps(t))


def cmd_notebook(a) -> None:
    from .notebook import execute

    params = {k: _value(v) for k, v in (a.param or [])}
    if a.profile:
        if params.get("profile", a.profile) != a.profile:
            raise LorafairError(f"--profile {a.profile} and -p profile {params['profile']!r} disagree; give one")
        params["profile"] = a.profile
    print(execute(a.name, params, a.out or "_runs/notebooks", log=True))


def cmd_params(a) -> None:
    from .profiles import PRESETS, PROFILE_NAMES, RESULTS_DIRS, parameter_names

    from .errors import choose

    choose("notebook", a.name, PRESETS)
    print(f"parameters of {a.name} (pass with -p KEY VALUE; None = the profile's value):")
    for k in parameter_names(a.name):
        vals = []
        for p in PROFILE_NAMES:
            v = PRESETS[a.name][p].get(k, RESULTS_DIRS[p] if k == "results_dir" else None)
            vals.append(f"{p}={json.dumps(v)}")
        if k == "profile":
            vals = ["one of " + ", ".join(PROFILE_NAMES) + " (default offline)"]
        if k == "force":
            vals = ["true recomputes runs that have a record (default false)"]
        print(f"  {k}: " + "; ".join(vals))


EXPERIMENTS = {"vision": "vision_classification", "llm": "llm_classification", "generation": "generation_fairness"}


def check_run_flags(a, method) -> None:
    """``lorafair run``'s flags, before anything loads: ranges, choices and combinations (0 is a value)."""
    import math

    from .methods import PLACEMENTS

    for flag in ("lr", "alpha", "rank", "layer_fraction"):
        v = getattr(a, flag)
        if v is not None and not math.isfinite(v):
            raise LorafairError(f"--{flag.replace('_', '-')} must be a finite number, got {v:g}")
    if a.epochs is not None and a.epochs < 1:
        raise LorafairError(f"--epochs must be at least 1, got {a.epochs}")
    if a.lr is not None and not a.lr > 0:
        raise LorafairError(f"--lr must be positive, got {a.lr:g}")
    if a.alpha is not None and not a.alpha > 0:
        raise LorafairError(f"--alpha must be positive, got {a.alpha:g}")
    if a.num_workers < 0:
        raise LorafairError(f"--num-workers must be 0 or more, got {a.num_workers}")
    if a.placement not in PLACEMENTS:
        raise LorafairError(f"unknown --placement {a.placement!r}; valid choices: {', '.join(PLACEMENTS)}")
    if not 0 < a.layer_fraction <= 1:
        raise LorafairError(f"--layer-fraction must be in (0, 1], got {a.layer_fraction:g}")
    takes_rank = method.uses_rank
    if a.rank is not None:
        if not takes_rank:
            raise LorafairError(f"--rank applies to rank-taking methods (e.g. lora, dora), not {method.name!r}")
        if not a.rank > 0:
            raise LorafairError(f"--rank must be positive (rank 0 is --method head), got {a.rank:g}")
    if a.alpha is not None and not takes_rank:
        raise LorafairError(f"--alpha applies to rank-taking methods (e.g. lora, dora), not {method.name!r}")
    if (a.layer_fraction != 1.0 or a.placement != "front") and method.trains != "adapter":
        raise LorafairError(f"--layer-fraction and --placement apply to adapter methods, not {method.name!r}")


def cmd_run_generation(a) -> None:
    from . import generation as gen
    from . import methods, spec, sweep
    from .errors import choose
    from .profiles import per_model, resolve
    from .runs import RunStore, is_main_process

    P = resolve("generation_fairness", a.profile)
    model = a.model or P["models"][0]
    choose("part", a.part, ("pronoun", "token_bias"))
    m = methods.get(a.method)
    method = "base" if m.trains == "head" else m.name  # a causal LM has no head: head-only means base
    check_run_flags(a, methods.get(method))
    from .models import causal_lm_names

    choose("model for generation", model, causal_lm_names())
    train = methods.get(method).trains != "nothing"
    rank = P["rank"] if a.rank is None else (int(a.rank) if float(a.rank).is_integer() else a.rank)
    if not isinstance(rank, int):
        raise LorafairError(f"--rank of a generation run is a whole number (fractional ranks are for classifiers), got {a.rank:g}")
    if a.part == "pronoun":
        cfg = gen.pronoun_config(P["profile"], P["pronoun_task"], P["pronoun_task_kwargs"], model, method,
                                 a.train_set if train else None, a.seed,
                                 a.epochs if a.epochs is not None else (per_model(P["epochs"], model, method) if train else 0),
                                 a.lr if a.lr is not None else (per_model(P["lrs"], model, method) if train else 0.0),
                                 P["batch_size"], P["max_length"], P["max_new_tokens"], rank=rank)
    else:
        cfg = gen.probe_config(P["profile"], P["probe_corpus"], P["probe_corpus_kwargs"], model, method, a.seed,
                               a.epochs if a.epochs is not None else (per_model(P["probe_epochs"], model, method) if train else 0),
                               a.lr if a.lr is not None else (per_model(P["probe_lrs"], model, method) if train else 0.0),
                               P["batch_size"], P["probe_block"], P["n_probe"], P["probe_prompts"],
                               P["max_text_tokens"], rank=rank, n_boot=P["n_boot"])
    cfg = spec.build(cfg, "lorafair run generation")
    options = {"compile": a.compile, "num_workers": a.num_workers, "gradient_checkpointing": a.gradient_checkpointing}
    rec = sweep.run_one(RunStore(a.results_dir or P["results_dir"]), cfg, force=a.force, train_options=options,
                        progress=True)
    if not is_main_process():  # every rank trains; rank 0 wrote the record and reports it
        return
    print(f"run {rec.path}")
    if a.part == "pronoun":
        for test_set, m in rec.metrics.items():
            print(f"  {test_set}: " + ", ".join(f"{c} {m['all'][c]['ratio']:.3f}" for c in gen.CATEGORIES))
    else:
        print(f"  bias index {rec.metrics['mean_tv_distance']:.3f}, flip rate {rec.metrics['mean_flip_rate']:.3f}")


def cmd_run(a) -> None:
    from . import chapters, sweep
    from . import experiments as ex
    from .errors import choose
    from .models import get_spec, resolve_method
    from .profiles import per_model, resolve
    from .runs import RunStore, is_main_process

    choose("experiment", a.experiment, EXPERIMENTS)
    if a.experiment == "generation":
        return cmd_run_generation(a)
    name = EXPERIMENTS[a.experiment]
    P = resolve(name, a.profile)
    model = get_spec(a.model or P["models"][0]).name
    method = resolve_method(a.method)
    from .methods import get as get_method

    check_run_flags(a, get_method(method))
    kw, dataset = dict(P["dataset_kwargs"]), P["dataset"]
    if a.task:
        kw["task"] = a.task
    if a.data:
        from . import metrics, userdata

        if a.experiment != "llm":
            raise LorafairError(f"--data is for text classification (lorafair run llm), not {a.experiment}")
        dataset, ds = "file", a.user_data  # read and checked by check_paths, before the store was touched
        kw = {"path": a.data, "sha256": userdata.file_sha256(a.data), "text_col": a.text_col,
              "label_col": a.label_col, "group_cols": a.group_col or ["group"]}
        test_share = chapters.split_fractions(P)[2]
        for g, small in userdata.small_groups(ds, test_share, metrics.MIN_GROUP_N).items():
            print(f"[lorafair] {a.data}: groups of {g!r} too small to carry a claim (fewer than {metrics.MIN_GROUP_N} "
                  f"expected test rows): " + ", ".join(f"{k} ({n} rows)" for k, n in small.items()))
    options = {"compile": a.compile, "num_workers": a.num_workers, "gradient_checkpointing": a.gradient_checkpointing}
    cfg = ex.classification_config(
        name, a.profile, dataset, kw, model, method, a.seed,
        a.epochs if a.epochs is not None else per_model(P["epochs"], model, method),
        a.lr if a.lr is not None else per_model(P["lrs"], model, method),
        P["batch_size"], rank=a.rank, alpha=a.alpha, layer_fraction=a.layer_fraction, placement=a.placement,
        n_boot=P["n_boot"], max_length=P.get("max_length"), split_design=chapters.unit_design(P),
        split_fractions=chapters.split_fractions(P), where=f"lorafair run {a.experiment}")
    rec = sweep.run_one(RunStore(a.results_dir or P["results_dir"]), cfg, force=a.force, train_options=options,
                        progress=True)
    if not is_main_process():
        return
    m = rec.metrics
    print(f"run {rec.path}\n  test accuracy {m['accuracy']['value']:.3f} "
          f"[{m['accuracy']['ci'][0]:.3f}, {m['accuracy']['ci'][1]:.3f}]")
    for attr, v in m["attributes"].items():
        print(f"  {attr}: worst group {v['worst_group']} {v['worst_group_accuracy']['value']:.3f}, "
              f"gap {v['accuracy_gap']['value']:.3f}")


def cmd_plan(a) -> None:
    from . import chapters
    from .profiles import resolve
    from .runs import RunStore, run_id

    P = resolve(a.name, a.profile, **_overrides(a))
    store = RunStore(P["results_dir"])
    groups = chapters.configs(a.name, P)
    seen, done = set(), 0
    print(f"{a.name} on profile {a.profile}: run store {P['results_dir']}/")
    for group, cfgs in groups.items():
        for c in cfgs:
            rid = run_id(c)
            if rid in seen:
                continue
            seen.add(rid)
            ok = store.is_done(c["experiment"], c)
            done += ok
            what = " ".join(f"{k}={c[k]}" for k in ("model", "method", "seed", "rank", "layer_fraction", "placement",
                                                   "part", "train_set", "workload", "split_design") if c.get(k) is not None)
            print(f"  {'done' if ok else 'todo'}  {c['experiment']}/{rid}  [{group}] {what}")
    print(f"{len(seen)} runs, {done} with a record, {len(seen) - done} to compute")


def cmd_sweep(a) -> None:
    import os

    from . import launch

    from .errors import choose

    overrides = _overrides(a)
    if overrides and a.name == "all":
        raise LorafairError("-p applies to one chapter; name it instead of 'all'")
    if a.launch:  # checked before anything is listed
        choose("launcher", a.launch, launch.LAUNCHERS)
        if not a.emit:
            raise LorafairError(f"--launch {a.launch} needs --emit FILE (the file the tasks read)")
        launch.check_slurm(a.partition, a.logs if a.launch == "slurm" else None)
        for flag in ("emit", "results_dir", "sbatch_out"):
            launch.check_script_text(f"--{flag.replace('_', '-')}", getattr(a, flag))
        if a.sbatch_out and os.path.lexists(a.sbatch_out) and not os.path.isfile(a.sbatch_out):
            raise LorafairError(f"--sbatch-out {a.sbatch_out} exists and is not a regular file; give a file name")
        if a.launch == "slurm" and a.cluster is not None:
            choose("--cluster (submitit)", a.cluster, launch.SUBMITIT_CLUSTERS)
    for flag in ("workers", "gpus", "retries", "tasks_per_job", "parallel", "time", "gpus_per_node"):
        v = getattr(a, flag)
        if v is not None and v < (0 if flag == "retries" else 1):
            raise LorafairError(f"--{flag.replace('_', '-')} must be at least {0 if flag == 'retries' else 1}, got {v}")
    rows = launch.listing(a.name, a.profile, overrides, a.results_dir)
    states: dict = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    if not a.quiet:
        for r in rows:
            est = f"{r['seconds'] / 60:7.1f} min" if r["seconds"] else "      ? min"
            print(f"  {r['state']:10s} {est}  {r['experiment']}/{r['run_id']}  [{r['group']}] {r['what']}")
    todo = [r for r in rows if r["state"] != "done"]
    secs = [r["seconds"] for r in todo if r["seconds"]]
    unit = "GPU" if a.profile == "paper" else "CPU (one process)"
    total = sum(secs) / 3600
    cost = f"{total:.1f} {unit}-hours" if total >= 1 else f"{total * 60:.0f} {unit}-minutes"
    print(f"{a.name} on profile {a.profile}: {len(rows)} runs; " + ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
          + f"; still to run: {len(todo)}, about {cost}"
          + (f" ({len(todo) - len(secs)} without an estimate)" if len(secs) < len(todo) else ""))
    if a.emit:
        n = launch.emit(rows, a.emit)
        print(f"[lorafair] wrote {n} configuration(s) to {a.emit}")
    if not a.launch:
        return
    if not todo:
        print("[lorafair] nothing to run")
        return
    if a.launch == "local":
        if a.workers == 1:
            launch.execute(a.emit, None, a.results_dir)
        else:
            from . import sweep
            from .runs import RunStore

            sweep.run(RunStore(a.results_dir or launch.RESULTS_DIRS[a.profile]),
                      [e["config"] for e in launch.read(a.emit)], workers=a.workers, desc="runs",
                      train_options=todo[0]["train_options"])
    elif a.launch == "gpus":
        launch.launch_gpus(a.emit, a.gpus_per_node, a.results_dir)
    elif a.launch == "sbatch":
        minutes = a.time or launch.time_request_minutes([r["seconds"] for r in todo])
        script = launch.sbatch_script(a.emit, len(todo), minutes, a.gpus, a.results_dir, a.parallel, a.partition)
        out = a.sbatch_out or "lorafair-array.sbatch"
        try:
            with open(out, "w") as f:
                f.write(script)
        except OSError as e:
            raise LorafairError(f"could not write --sbatch-out {out}: {e.strerror or e}") from None
        print(f"[lorafair] wrote {out}: submit it with `sbatch {out}`")
    else:
        res = launch.launch_slurm(a.emit, a.logs, a.results_dir, a.gpus, a.partition, a.parallel, a.retries,
                                  cluster=a.cluster, minutes=a.time, tasks_per_job=a.tasks_per_job)
        if res["failed"]:
            raise LorafairError(f"{res['failed']} task(s) still failed after {a.retries} retries; logs in {a.logs}")
        print(f"[lorafair] {res['submitted']} task(s) finished; the run store holds every record")


def cmd_exec(a) -> None:
    from . import launch

    if a.index is not None and a.indices is not None:
        raise LorafairError("give --index or --indices, not both")
    entries = launch.read(a.file)
    idx = launch.parse_indices(a.indices if a.indices is not None else a.index, len(entries))
    states = launch.execute(a.file, idx, a.results_dir)
    print(f"[lorafair] {len(states)} configuration(s) of {a.file}: " +
          ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states))))


def cmd_runs(a) -> None:
    from pathlib import Path

    from .errors import choose
    from .profiles import RESULTS_DIRS
    from .runs import adopt_store, verify_store

    choose("profile", a.profile, RESULTS_DIRS)
    root = Path(a.results_dir or RESULTS_DIRS[a.profile])
    if not root.is_dir():
        raise LorafairError(f"no run store at {root} (--results-dir: a folder of <experiment>/<run_id>/ records)")
    if a.adopt:
        adopted = adopt_store(root)
        print(f"[lorafair] {len(adopted)} record(s) written before records carried checksums: their ids checked and "
              "their manifests added")
    bad = verify_store(root, repair=a.repair)
    n = sum(1 for d in root.glob("*/*/DONE") if not d.parent.name.startswith(".")) + (len(bad) if a.repair else 0)
    kept = [p for p, problem in bad if "not removed" in problem]
    for path, problem in bad:
        print(f"  {('kept' if path in kept else 'removed') if a.repair else 'damaged'}  {path}: {problem}")
    print(f"[lorafair] {n} records in {root}: {len(bad)} damaged" +
          (f"; {len(bad) - len(kept)} removed, the next build recomputes them" if a.repair and bad else "") +
          (f"; {len(kept)} not removed (see above)" if kept else ""))
    if bad and not a.repair:
        raise LorafairError(f"{len(bad)} damaged record(s); `lorafair runs verify --repair --results-dir {root}` "
                            "removes them so that they are recomputed")


def cmd_check_pages(a) -> None:
    from .pagecheck import check

    reader = not a.static
    if reader:
        from .pagecheck import browser_path

        browser_path()  # before anything is read: a missing browser is one line
    problems = check(a.html, screenshots=a.screenshots, reader=reader)
    for p in problems:
        print(f"  {p}")
    if problems:
        raise LorafairError(f"{len(problems)} problem(s) in the built book")
    print("[lorafair] every page checked: images, links, scripts, builder paths"
          + (", and read in chromium at 1280 and 390 px" if reader else "")
          + (f"; screenshots in {a.screenshots}" if a.screenshots else ""))


def check_bench_flags(a) -> None:
    """``lorafair bench``'s numbers and output file, before anything is measured."""
    import os

    for flag, least in (("batch_size", 1), ("seq_len", 1), ("steps", 1), ("warmup", 0), ("threads", 1)):
        v = getattr(a, flag)
        if v is not None and v < least:
            raise LorafairError(f"--{flag.replace('_', '-')} must be at least {least}, got {v}")
    if not a.budget > 0:
        raise LorafairError(f"--budget must be positive (seconds), got {a.budget:g}")
    if a.out:
        parent = os.path.dirname(os.path.abspath(a.out))
        if os.path.isdir(a.out):
            raise LorafairError(f"--out {a.out} is a folder; give a file name, e.g. {os.path.join(a.out, 'bench.json')}")
        if os.path.lexists(a.out) and not os.path.isfile(a.out):
            raise LorafairError(f"--out {a.out} exists and is not a regular file (a device, a pipe, a broken link); "
                                "give a file name")
        if not os.path.isdir(parent):
            raise LorafairError(f"--out {a.out}: no folder {parent} to write it in")
        if not os.access(parent, os.W_OK):
            raise LorafairError(f"--out {a.out}: the folder {parent} is not writable")


def _write_out(path: str, obj) -> None:
    """A bench table and its environment as standard JSON (``--out``)."""
    import os

    from .runs import strict_json

    text = strict_json(obj, indent=1)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:  # written whole or not at all (a full disk leaves no truncated file)
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise LorafairError(f"could not write --out {path}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"[lorafair] wrote {path}")


def cmd_bench(a) -> None:
    import pandas as pd

    from . import bench

    check_bench_flags(a)
    if a.cpu:
        return cmd_bench_cpu(a)
    a.batch_size = 8 if a.batch_size is None else a.batch_size
    a.seq_len = 256 if a.seq_len is None else a.seq_len
    if a.estimate:
        return cmd_bench_estimate(a)
    if a.gpu:
        raise LorafairError("--gpu names the GPU an --estimate is for; a measurement uses the device it runs on")
    rows = bench.run(a.workloads, scale=a.scale, batch=a.batch_size, seq=a.seq_len, steps=a.steps,
                     warmup=a.warmup, precision=a.precision, compile=a.compile, checkpointing=a.checkpointing)
    env = bench.environment()
    table = pd.DataFrame(rows)
    cols = [c for c in ("workload", "precision", "compile", "checkpointing", "batch", "seq", "step_s", "samples_per_s",
                        "tokens_per_s", "peak_mem_gib", "mfu", "mfu_6n", "error") if c in table]
    print(f"[lorafair] bench on {env['device']}, {env['date_utc']}, torch {env['packages']['torch']}, "
          f"transformers {env['packages']['transformers']}, peft {env['packages']['peft']}; "
          f"measured matmul peak {rows[0].get('peak_flops', float('nan')) / 1e12:.1f} TFLOP/s")
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if a.out:
        _write_out(a.out, {"environment": env, "rows": rows})


def cmd_bench_cpu(a) -> None:
    import pandas as pd

    from . import cpubench

    if a.estimate or a.gpu or a.compile or a.checkpointing:
        raise LorafairError("--cpu measures the offline models on this CPU; it takes no --estimate, --gpu, "
                            "--compile (use --variants compile) or --checkpointing")
    models = a.models or list(cpubench.OFFLINE_MODELS)
    rows = cpubench.run(models, methods=a.methods or cpubench.METHODS,
                        variants=a.variants or ("fp32", "bf16", "channels_last"), threads=a.threads,
                        batch=32 if a.batch_size is None else a.batch_size,
                        seq=32 if a.seq_len is None else a.seq_len, steps=a.steps, warmup=a.warmup,
                        budget_s=a.budget)
    print(f"[lorafair] bench --cpu: {cpubench.header(a.threads)}")
    print("time of one training step and one evaluation batch (median over rounds, variants interleaved); "
          "speedup = fp32 time / this variant's time")
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="-"))
    for m, (prec, why) in cpubench.chosen(models).items():
        print(f"[lorafair] {m} trains in {prec} on this machine: {why}")
    if a.out:
        _write_out(a.out, {"environment": {"header": cpubench.header(a.threads)}, "rows": rows})


def cmd_bench_estimate(a) -> None:
    import pandas as pd

    from . import bench, estimate

    if a.compile:
        raise LorafairError("--estimate models an eager step; --compile is measured only (drop one of them)")
    gpu = a.gpu or "h200"
    rows = estimate.run(a.workloads, scale=a.scale, batch=a.batch_size, seq=a.seq_len, precision=a.precision,
                        checkpointing=a.checkpointing, gpu=gpu)
    env = bench.environment()
    table = pd.DataFrame(rows)
    shares = [f"share_{k}" for k in estimate.SHARES]
    cols = ["workload", "precision", "checkpointing", "batch", "seq", "est_step_s", "est_mfu",
            *(["est_mfu_6n"] if "est_mfu_6n" in table else []), "est_peak_gib", *shares]
    print(f"[lorafair] ESTIMATE (a roofline model on fake tensors, not a measurement) for {estimate.GPUS[gpu].name}; "
          f"torch {env['packages']['torch']}, transformers {env['packages']['transformers']}, "
          f"peft {env['packages']['peft']}")
    print(table.reindex(columns=cols).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    for r in rows:
        if "error" not in r and r["est_peak_gib"] > r["gpu_gib"]:
            print(f"[lorafair] {r['workload']} does not fit: about {r['est_peak_gib']:,.0f} GiB at batch {r['batch']}, "
                  f"more than the {estimate.GPUS[gpu].name}'s {r['gpu_gib']:.0f} GiB; try a smaller --batch-size "
                  "or --checkpointing")
    if a.out:
        _write_out(a.out, {"environment": env, "estimate": True, "rows": rows})


class _Parser(argparse.ArgumentParser):
    """argparse with the tool's one-line errors (``lorafair: error: ...``, exit 2) instead of a usage block."""

    def error(self, message):
        hint = ""
        if "expected one argument" in message:
            hint = " (a negative number is written with =, e.g. --lr=-1e-3)"
        if "invalid choice" in message or "unrecognized arguments" in message:
            hint = f" (see {self.prog} --help)"
        print(f"lorafair: error: {self.prog.removeprefix('lorafair').strip() + ': ' if self.prog != 'lorafair' else ''}"
              f"{message}{hint}", file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lorafair", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("book", help="execute every notebook on a profile and build the book")
    b.add_argument("--profile", default="offline")
    b.add_argument("--recompute", action="store_true", help="recompute runs that have a record")
    b.add_argument("--only", nargs="+", help="execute only these notebooks")
    b.add_argument("--no-build", action="store_true", help="execute notebooks but do not build HTML")
    b.add_argument("--no-compute", action="store_true",
                   help="render from the run store only (e.g. filled by cluster jobs); fail naming any run still missing")
    b.add_argument("--results-dir", help="run store root (default: the profile's)")
    b.add_argument("--out", help="build in this folder (a copy of the sources; HTML in OUT/_build/html) "
                                 "instead of the checkout")
    b.set_defaults(func=cmd_book)
    n = sub.add_parser("notebook", help="execute one notebook with parameters")
    n.add_argument("name")
    n.add_argument("--profile")
    n.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="a parameter (value parsed as YAML: 3, 1e-3, [13, 42], {a: 1})")
    n.add_argument("--out", help="folder for the executed notebook (default _runs/notebooks/; the book's are "
                                 "written by lorafair book)")
    n.set_defaults(func=cmd_notebook)
    q = sub.add_parser("params", help="list a notebook's parameters and each profile's values")
    q.add_argument("name")
    q.set_defaults(func=cmd_params)
    pl = sub.add_parser("plan", help="list a chapter's runs and which have a record (executes nothing)")
    pl.add_argument("name")
    pl.add_argument("--profile", default="offline")
    pl.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                    help="a parameter, as for `lorafair notebook`")
    pl.set_defaults(func=cmd_plan)
    w = sub.add_parser("sweep", help="list a chapter's runs with state and cost; emit and launch the pending ones")
    w.add_argument("name", help="a chapter, or all")
    w.add_argument("--profile", default="offline")
    w.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="a parameter, as for `lorafair notebook`")
    w.add_argument("--results-dir", help="run store root (default: the profile's)")
    w.add_argument("--emit", metavar="FILE", help="write the runs without a record as JSON lines")
    w.add_argument("--launch", help="run the emitted file: local | gpus | slurm | sbatch (writes a script)")
    w.add_argument("--workers", type=int, default=1, help="local: worker processes (1 thread each)")
    w.add_argument("--gpus-per-node", type=int, help="gpus: workers (default: the visible GPUs)")
    w.add_argument("--gpus", type=int, default=1, help="slurm/sbatch: GPUs per task")
    w.add_argument("--partition", help="slurm/sbatch: the partition")
    w.add_argument("--parallel", type=int, help="slurm/sbatch: at most so many array tasks at once")
    w.add_argument("--time", type=int, help="slurm/sbatch: minutes per task (default: from the estimates)")
    w.add_argument("--retries", type=int, default=2, help="slurm: resubmissions of failed tasks")
    w.add_argument("--tasks-per-job", type=int, default=1, help="slurm: configurations per array task")
    w.add_argument("--logs", default="slurm-logs", help="slurm: submitit's folder (logs per task)")
    w.add_argument("--cluster", help="slurm: submitit cluster (default: auto; local runs jobs here)")
    w.add_argument("--sbatch-out", help="sbatch: the script's path (default lorafair-array.sbatch)")
    w.add_argument("--quiet", action="store_true", help="only the summary line")
    w.set_defaults(func=cmd_sweep)
    v = sub.add_parser("runs", help="check the run store: lorafair runs verify [--repair]")
    v.add_argument("action", choices=["verify"])
    v.add_argument("--profile", default="offline")
    v.add_argument("--results-dir", help="run store root (default: the profile's)")
    v.add_argument("--repair", action="store_true", help="remove damaged records so that they are recomputed")
    v.add_argument("--adopt", action="store_true",
                   help="add checksums to records written before records carried them (their ids are checked first)")
    v.set_defaults(func=cmd_runs)
    x = sub.add_parser("exec", help="run configurations of an --emit file into the run store")
    x.add_argument("file")
    x.add_argument("--index", help="one line (default: $SLURM_ARRAY_TASK_ID, else every line)")
    x.add_argument("--indices", help="lines, comma-separated")
    x.add_argument("--results-dir", help="run store root (default: each configuration's profile's)")
    x.set_defaults(func=cmd_exec)
    r = sub.add_parser("run", help="one training run into the run store")
    r.add_argument("experiment", help="vision | llm | generation")
    r.add_argument("--profile", default="offline")
    r.add_argument("--model")
    r.add_argument("--task")
    r.add_argument("--data", help="llm: your own CSV, parquet or JSON-lines file instead of the profile's dataset")
    r.add_argument("--text-col", default="text", help="--data: the column of input texts (default text)")
    r.add_argument("--label-col", default="label", help="--data: the column of labels (default label)")
    r.add_argument("--group-col", action="append", help="--data: a column of group names (repeatable; default group)")
    r.add_argument("--method", default="lora", help="a method of lorafair.methods (default lora)")
    r.add_argument("--seed", type=int, default=13)
    r.add_argument("--rank", type=float)
    r.add_argument("--alpha", type=float)
    r.add_argument("--layer-fraction", type=float, default=1.0)
    r.add_argument("--placement", default="front")
    r.add_argument("--epochs", type=int)
    r.add_argument("--lr", type=float)
    r.add_argument("--part", default="pronoun", help="generation: pronoun | token_bias")
    r.add_argument("--train-set", default="balanced", help="generation, pronoun part: balanced | pro")
    r.add_argument("--force", action="store_true")
    r.add_argument("--results-dir", help="run store root (default: the profile's)")
    r.add_argument("--compile", action="store_true", help="torch.compile the model (speed only; not hashed)")
    r.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (memory)")
    r.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    r.set_defaults(func=cmd_run)
    from .bench import DEFAULT_WORKLOADS, PRECISIONS

    e = sub.add_parser("bench", help="training throughput and MFU of the paper architectures (random weights)")
    e.add_argument("--scale", default="tiny", choices=["tiny", "paper"],
                   help="paper: ViT-B, Swin-v2-L, Llama-2-7B sizes (a GPU); tiny: toy sizes (any CPU)")
    e.add_argument("--workloads", nargs="+", default=list(DEFAULT_WORKLOADS), metavar="ARCH:METHOD")
    e.add_argument("--batch-size", type=int, help="default 8 (GPU workloads), 32 (--cpu)")
    e.add_argument("--seq-len", type=int, help="tokens per sequence (language models); default 256, 32 with --cpu")
    e.add_argument("--steps", type=int, default=10)
    e.add_argument("--warmup", type=int, default=3)
    e.add_argument("--cpu", action="store_true",
                   help="the offline models on this CPU: fp32 vs bf16 autocast (and channels_last, compile) side by side")
    e.add_argument("--models", nargs="+", help="--cpu: models (default: the offline profile's)")
    e.add_argument("--methods", nargs="+", help="--cpu: head, head_per_step, lora, full (default all)")
    e.add_argument("--variants", nargs="+", help="--cpu: fp32, bf16, channels_last, compile (default the first three)")
    e.add_argument("--threads", type=int, default=1, help="--cpu: torch threads (default 1, as each worker)")
    e.add_argument("--budget", type=float, default=120.0,
                   help="--cpu: seconds per (model, method) after which no further round starts")
    e.add_argument("--precision", default="autocast", choices=list(PRECISIONS),
                   help="bf16: bf16 weights and optimizer states; autocast: fp32 weights, bf16 compute; fp32")
    e.add_argument("--compile", action="store_true", help="torch.compile the model")
    e.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    e.add_argument("--estimate", action="store_true",
                   help="no device needed: peak memory and a roofline step time on --gpu, from fake tensors")
    e.add_argument("--gpu", choices=["h200", "h100", "a100"], help="the GPU an --estimate is for (default h200)")
    e.add_argument("--out", help="write the table and environment as JSON")
    e.set_defaults(func=cmd_bench)
    c = sub.add_parser("check-pages", help="check the built book (_build/html) like a reader")
    c.add_argument("--screenshots", help="full-page screenshots of every page at both widths into this folder")
    c.add_argument("--static", action="store_true", help="only the checks of the HTML files (no browser)")
    c.add_argument("--html", help="the built book's HTML folder (default _build/html; lorafair book --out DIR: "
                                  "DIR/_build/html)")
    c.set_defaults(func=cmd_check_pages)
    return p


def check_paths(a) -> None:
    """``--out`` of book/notebook is a folder, and ``--results-dir`` a folder, a writable one where the
    command writes records."""
    import os
    import tempfile

    out = getattr(a, "out", None)
    if a.command in ("book", "notebook") and out and os.path.exists(out) and not os.path.isdir(out):
        raise LorafairError(f"--out {out} is a file, not a folder")
    if a.command == "sweep" and getattr(a, "emit", None):  # before the chapter is listed
        from .launch import check_emit_path

        check_emit_path(a.emit)
    for flag in ("results_dir", "out", "emit", "sbatch_out", "logs"):
        v = getattr(a, flag, None)
        if v is not None and not v.strip():
            raise LorafairError(f"--{flag.replace('_', '-')} is empty: give a path")
    if a.command == "run" and getattr(a, "data", None):  # a user's file is checked before the store is touched
        from .userdata import load_file

        a.user_data = load_file(a.data, text_col=a.text_col, label_col=a.label_col, group_cols=a.group_col or ["group"])
    d = getattr(a, "results_dir", None)
    if not d:
        return
    if os.path.exists(d) and not os.path.isdir(d):
        raise LorafairError(f"--results-dir {d} is a file, not a folder")
    writes = a.command in ("run", "exec", "book") or (a.command == "sweep" and a.launch)
    if not writes:
        return
    try:
        os.makedirs(d, exist_ok=True)
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError as e:
        raise LorafairError(f"--results-dir {d} is not writable: {e.strerror or e}") from None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        check_paths(args)
        args.func(args)
    except LorafairError as e:
        print(f"lorafair: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the system refused (a full disk, a read-only folder): one line, not a traceback
        import os

        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        cache = os.environ.get("LORAFAIR_CACHE")
        if cache and str(getattr(e, "filename", "") or "").startswith(cache):
            where += f"; the cache folder LORAFAIR_CACHE={cache} must be a writable folder"
        print(f"lorafair: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lorafair: interrupted; completed runs are kept, re-run to resume", file=sys.stderr)
        if argv is None:  # the command line: every record is published atomically and the kernel and
            import os     # workers have ended, so skip the interpreter's slow teardown of its modules

            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
