"""A hostile user's inputs, by class: nothing escapes the run store, nothing is deleted before every
check has passed, nothing written into a launch script runs, a stale claim never holds a run, a
record that does not match its id is never served, a run whose loss is not finite stores nothing,
unknown keys are errors, and every refusal is one line (no traceback)."""

import errno
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from lorafair import launch, runs, spec
from lorafair.cli import main
from lorafair.errors import LorafairError
from lorafair.runs import RunStore, run_id

ROOT = Path(__file__).resolve().parents[1]
V = "vision_classification"


def one_line(capsys, code, argv, message):
    assert main(argv) == code, argv
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("lorafair: error: ") and "Traceback" not in err, err
    assert message in lines[-1], lines[-1]
    return lines[-1]


def smoke_line(tmp_path, **change) -> Path:
    """A JSONL file with one smoke configuration (the first of the vision chapter), changed."""
    rows = launch.listing(V, "smoke", results_dir=str(tmp_path / "store"))
    cfg = spec.thaw(rows[0]["config"])
    for k, v in change.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    f = tmp_path / "one.jsonl"
    f.write_text(json.dumps({"config": cfg, "seconds": None, "train_options": {}}) + "\n")
    return f


def files_under(d: Path) -> set:
    return {p for p in d.rglob("*")} if d.exists() else set()


# ---------------------------------------------------------------- paths stay in the store
@pytest.mark.parametrize("experiment", ["../../escaped", "/tmp/lorafair-escaped-abs", "a/b", "..", ".hidden"])
def test_a_jsonl_line_cannot_name_a_folder_outside_the_store(experiment, tmp_path, capsys):
    f = smoke_line(tmp_path, experiment=experiment)
    before = files_under(tmp_path.parent)
    one_line(capsys, 2, ["exec", str(f), "--results-dir", str(tmp_path / "store")], "experiment is")
    assert files_under(tmp_path.parent) - before <= {tmp_path / "store"}  # check_paths may create the store
    assert not Path("/tmp/lorafair-escaped-abs").exists()


def test_the_store_refuses_unsafe_folder_names_and_links_out_of_it(tmp_path):
    store = RunStore(tmp_path / "s")
    for bad in ("../x", "/abs", "a/b", "", "..", ".claim"):
        with pytest.raises(LorafairError, match="not a plain folder name"):
            store.path(bad, {"a": 1})
    (tmp_path / "s").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "s" / "exp").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LorafairError, match="outside the run store"):
        store.get_or_run("exp", {"a": 1}, lambda: (pd.DataFrame({"x": [1]}), {}))
    assert not any((tmp_path / "elsewhere").iterdir())


def test_a_cache_folder_is_not_a_run_setting(tmp_path, capsys):
    f = smoke_line(tmp_path, dataset_kwargs={"cache_dir": str(tmp_path / "anywhere")})
    one_line(capsys, 2, ["exec", str(f), "--results-dir", str(tmp_path / "store")],
             "dataset_kwargs.cache_dir is")
    assert not (tmp_path / "anywhere").exists()


def test_book_out_validates_before_it_removes_anything_and_keeps_a_users_source(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "source").mkdir(parents=True)
    (out / "source" / "mine.txt").write_text("the user's file")
    one_line(capsys, 2, ["book", "--profile", "smoke", "--out", str(out), "--only", "nosuch", "--no-build"],
             "unknown notebook 'nosuch'")
    one_line(capsys, 2, ["book", "--profile", "smoke", "--out", str(out), "--only", "findings", "--no-build"],
             "was not made by lorafair book --out")
    assert (out / "source" / "mine.txt").read_text() == "the user's file"


# ---------------------------------------------------------------- launch scripts
def test_a_generated_sbatch_script_runs_no_injected_command(tmp_path):
    marker = tmp_path / "INJECTED"
    hostile_dir = f"store$(touch {marker})`touch {marker}`;touch {marker}"
    hostile_file = f"p'\"$(touch {marker});.jsonl"
    for bad in (f"p.jsonl\n#SBATCH --mem=1", "p.jsonl\rx"):  # a new line would add an #SBATCH line
        with pytest.raises(LorafairError, match="control character"):
            launch.sbatch_script(bad, 3, 30, partition="gpu")
        with pytest.raises(LorafairError, match="control character"):
            launch.sbatch_script("p.jsonl", 3, 30, results_dir=bad)
    script = launch.sbatch_script(hostile_file, 3, 30, results_dir=hostile_dir, partition="gpu")
    stub = tmp_path / "bin"
    stub.mkdir()
    args_out = tmp_path / "args"
    (stub / "lorafair").write_text(f"#!/bin/bash\nprintf '%s\\0' \"$@\" > {args_out}\n")
    (stub / "lorafair").chmod(0o755)
    (tmp_path / "job.sh").write_text(script)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": "1"}
    subprocess.run(["bash", str(tmp_path / "job.sh")], check=True, env=env, cwd=tmp_path, timeout=30)
    assert not marker.exists()
    args = args_out.read_bytes().split(b"\0")[:-1]
    assert args == [b"exec", os.path.abspath(hostile_file).encode(), b"--index", b"1", b"--results-dir",
                    os.path.abspath(hostile_dir).encode()]


@pytest.mark.parametrize("partition", ["gpu\n#SBATCH --mem=1", "gpu;rm -rf x", "$(id)", "a b"])
def test_a_partition_that_is_not_a_name_is_refused(partition, tmp_path, capsys):
    one_line(capsys, 2, ["sweep", V, "--profile", "smoke", "--emit", str(tmp_path / "p.jsonl"), "--launch", "sbatch",
                         "--partition", partition, "--results-dir", str(tmp_path / "s")], "--partition")
    assert not (tmp_path / "p.jsonl").exists()


# ---------------------------------------------------------------- claims
def test_a_claim_whose_pid_lives_but_whose_heartbeat_stopped_is_taken_over(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runs, "CLAIM_POLL_S", 0.05)
    store = RunStore(tmp_path)
    (tmp_path / "exp").mkdir()
    claim = store.claim("exp", {"a": 1})
    # this host, a live pid that is not the run's owner (a reused pid): only the heartbeat tells
    claim.path.write_text(json.dumps({"host": runs._host(), "pid": os.getppid(), "started_utc": "2026-01-01T00:00:00Z"}))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "rec", store.get_or_run("exp", {"a": 1}, lambda: (pd.DataFrame({"x": [1]}), {"v": 1}))))
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), "a fresh claim of a live process must be waited for"
    assert "waiting for run exp/" in capsys.readouterr().err
    old = time.time() - runs.claim_stale_s() - 5
    os.utime(claim.path, (old, old))  # the heartbeat stopped
    t.join(20)
    assert not t.is_alive() and result["rec"].metrics == {"v": 1}
    assert store.state("exp", {"a": 1}) == "done"


@pytest.mark.parametrize("value", ["abc", "-5", "nan", "inf", "10"])
def test_a_garbage_stale_time_is_one_line(value, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LORAFAIR_CLAIM_STALE_S", value)
    (tmp_path / "s" / "vision_classification").mkdir(parents=True)
    (tmp_path / "s" / "vision_classification" / ".claim-x").write_text("{}")
    rows = launch.listing(V, "smoke", results_dir=str(tmp_path / "s"))
    c = RunStore(tmp_path / "s").claim(V, rows[0]["config"])
    c.path.write_text("{}")
    one_line(capsys, 2, ["sweep", V, "--profile", "smoke", "--results-dir", str(tmp_path / "s"), "--quiet"],
             "LORAFAIR_CLAIM_STALE_S must be a number of seconds")


# ---------------------------------------------------------------- records bound to their ids
def _two_records(tmp_path):
    store = RunStore(tmp_path)
    a = store.get_or_run("exp", {"lr": 0.01}, lambda: (pd.DataFrame({"x": [1, 2]}), {"acc": 0.5}))
    b = store.get_or_run("exp", {"lr": 0.02}, lambda: (pd.DataFrame({"x": [3, 4]}), {"acc": 0.7}))
    return store, a.path, b.path


def test_swapped_records_are_not_served(tmp_path, capsys):
    store, a, b = _two_records(tmp_path)
    os.rename(a, tmp_path / "exp" / "tmpname")
    os.rename(b, a)
    os.rename(tmp_path / "exp" / "tmpname", b)
    with pytest.raises(LorafairError, match="hashes to"):
        store.load("exp", {"lr": 0.01})
    assert main(["runs", "verify", "--results-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().out.count("hashes to") == 2


def test_an_edit_of_the_same_size_is_not_served(tmp_path):
    store, a, _ = _two_records(tmp_path)
    text = (a / "config.json").read_text()
    (a / "config.json").write_text(text.replace('"lr": 0.01', '"lr": 0.09'))
    assert (a / "config.json").stat().st_size == len(text)
    with pytest.raises(LorafairError, match="another sha256"):
        store.load("exp", {"lr": 0.01})


def test_an_edit_with_a_recomputed_manifest_is_not_served(tmp_path):
    store, a, _ = _two_records(tmp_path)
    meta = json.loads((a / "config.json").read_text())
    meta["config"]["lr"] = 0.09
    runs._write_json(a / "config.json", meta)
    runs.write_done(a, "2026-01-01T00:00:00Z")
    with pytest.raises(LorafairError, match="hashes to"):
        store.load("exp", {"lr": 0.01})


@pytest.mark.parametrize("manifest", ["[1, 2]", '{"config.json": 5}', '"x"', "{", "null",
                                      '{"config.json": [1, "a"], "metrics.json": [1], "predictions.parquet": []}'])
def test_verify_survives_any_malformed_manifest_and_repairs_it(manifest, tmp_path, capsys):
    store, a, b = _two_records(tmp_path)
    (a / "DONE").write_text("2026-01-01T00:00:00Z\n" + manifest + "\n")
    assert main(["runs", "verify", "--results-dir", str(tmp_path)]) == 2
    assert "2 records in" in capsys.readouterr().out
    assert main(["runs", "verify", "--repair", "--results-dir", str(tmp_path)]) == 0
    assert not a.exists() and b.exists()


def test_verify_repairs_records_in_the_store_and_reports_what_it_cannot_remove(tmp_path, capsys, monkeypatch):
    store, a, b = _two_records(tmp_path / "store")
    target = tmp_path / "disk2" / a.name
    target.parent.mkdir()
    shutil.move(str(a), target)
    a.symlink_to(target)
    (target / "metrics.json").write_text("{}")
    assert main(["runs", "verify", "--repair", "--results-dir", str(tmp_path / "store")]) == 0
    assert target.exists() and b.exists() and not os.path.lexists(a)  # the link goes, the outside folder stays
    assert "the link was removed" in capsys.readouterr().out
    shutil.move(str(target), a)  # inside the store again: a plain record, repaired
    assert main(["runs", "verify", "--repair", "--results-dir", str(tmp_path / "store")]) == 0
    assert not a.exists() and b.exists()
    (b / "metrics.json").write_text("{}")

    def refuse(*a, **k):
        raise PermissionError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(runs.os, "rename", refuse)
    assert main(["runs", "verify", "--repair", "--results-dir", str(tmp_path / "store")]) == 0
    assert "not removed: Read-only file system" in capsys.readouterr().out


def test_every_committed_record_is_bound_to_its_id_and_names_no_builder_path():
    assert runs.verify_store(ROOT / "results") == []
    for f in (ROOT / "results").glob("*/*/*.json"):
        text = f.read_text()
        for bad in ('"/', '"~/', "/tmp/", "/home/", "/work/", "/root/"):
            assert bad not in text, f"{f} holds an absolute path ({bad})"


# ---------------------------------------------------------------- nonsense never trains or is stored
def test_a_non_finite_loss_stops_the_run_and_stores_nothing(tmp_path, capsys, monkeypatch):
    import torch

    real = torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    line = one_line(capsys, 2, ["run", "vision", "--profile", "smoke", "--model", "vit_tiny_random", "--method", "lora",
                                "--results-dir", str(tmp_path)], "stopped, nothing was stored")
    assert "the training loss is nan" in line and "learning rate" in line
    assert not [p for p in tmp_path.rglob("*") if p.is_dir() and p.parent.name == V]


def test_a_full_disk_during_a_run_leaves_nothing(tmp_path, monkeypatch, capsys):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    with pytest.raises(LorafairError, match="No space left on device; nothing was stored"):
        RunStore(tmp_path).get_or_run("exp", {"a": 1}, lambda: (pd.DataFrame({"x": [1]}), {}))
    assert [p.name for p in (tmp_path / "exp").iterdir()] == []


def test_a_full_disk_at_bench_out_is_one_line(tmp_path, monkeypatch, capsys):
    import builtins

    real_open = builtins.open

    def full_open(path, mode="r", *a, **k):
        if "w" in mode and str(path).startswith(str(tmp_path)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *a, **k)
    monkeypatch.setattr(builtins, "open", full_open)
    one_line(capsys, 2, ["bench", "--estimate", "--workloads", "vit_base:lora", "--out", str(tmp_path / "b.json")],
             "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_the_constructor_refuses_unknown_keys_and_nonsense_everywhere():
    good = spec.thaw(launch.listing(V, "smoke", results_dir="/nonexistent")[0]["config"])
    assert spec.build(good).run_id == run_id(good)
    cases = [({"lr_typo": 1e-3}, "lr_typo is"), ({"epochs": -3}, "epochs is -3"), ({"epochs": 1.5}, "epochs is 1.5"),
             ({"lr": float("inf")}, "lr is inf"), ({"lr": float("nan")}, "lr is nan"), ({"seed": -1}, "seed is -1"),
             ({"seed": 2 ** 40}, "seed is"), ({"seed": True}, "seed is True"), ({"model": "../x"}, "model is"),
             ({"method": "qlora"}, "method is 'qlora'"), ({"profile": "PAPER"}, "profile is 'PAPER'"),
             ({"dataset": "/etc/passwd"}, "dataset is"), ({"split_design": {"kind": "teleport"}}, "split_design is"),
             ({"dataset_kwargs": {**good["dataset_kwargs"], "nosuch": 1}}, "dataset_kwargs.nosuch is"),
             ({"dataset_kwargs": {**good["dataset_kwargs"], "task": "nosuch"}}, "dataset_kwargs.task is 'nosuch'"),
             ({"batch_size": 0}, "batch_size is 0"), ({"n_boot": "many"}, "n_boot is 'many'")]
    for change, message in cases:
        with pytest.raises(LorafairError, match=None) as e:
            spec.build({**good, **change}, "test")
        assert message in str(e.value) and "\n" not in str(e.value), (change, str(e.value))
    frozen = spec.build(good)
    with pytest.raises(TypeError):
        frozen["lr"] = 1.0
    with pytest.raises(TypeError):
        frozen["dataset_kwargs"]["n"] = 1


def test_a_config_that_trains_nothing_is_refused():
    """A head-only run on a model whose head has no parameters would train nothing and be stored."""
    import torch

    from lorafair import models

    m, _ = models.build("vit_tiny_random", 2)
    m.net.classifier = torch.nn.Identity()
    with pytest.raises(LorafairError, match="method 'head' on model vit_tiny_random trains nothing"):
        models.adapt(m, models.get_spec("vit_tiny_random"), "head")


# ---------------------------------------------------------------- one line, never a traceback
CLASSES = [
    (["run", "vision", "--profile", "smoke", "--seed", "-1"], "seed is -1"),
    (["run", "vision", "--profile", "smoke", "--seed", str(2 ** 40)], "seed is 1099511627776"),
    (["run", "generation", "--profile", "smoke", "--seed", "-7"], "seed is -7"),
    (["run", "vision", "--profile", "smoke", "--lr", "inf"], "--lr must be a finite number, got inf"),
    (["run", "vision", "--profile", "smoke", "--lr", "nan"], "--lr must be a finite number, got nan"),
    (["run", "vision", "--profile", "smoke", "--rank", "inf"], "--rank must be a finite number, got inf"),
    (["run", "vision", "--profile", "smoke", "--lr", "2"], "lr is 2.0: a finite number > 0 and <= 1"),
    (["run", "llm", "--profile", "smoke", "--task", "nosuch"], "dataset_kwargs.task is 'nosuch'"),
    (["run", "vision", "--profile", "smoke", "--task", "nosuch"], "dataset_kwargs.task is 'nosuch'"),
    (["run", "generation", "--profile", "smoke", "--rank", "2.5"], "--rank of a generation run is a whole number"),
    (["plan", V, "--profile", "smoke", "-p", "seeds", "[-1]"], "seed is -1"),
    (["plan", V, "--profile", "smoke", "-p", "seeds", f"[{2 ** 33}]"], "seed is 8589934592"),
    (["plan", V, "--profile", "PAPER"], "unknown profile 'PAPER'"),
    (["plan", V, "--profile", "smoke", "-p", "results_dir", "[a]"], "parameter results_dir"),
    (["plan", V, "--profile", "smoke", "-p", "results_dir", "5"], "parameter results_dir"),
    (["plan", V, "--profile", "smoke", "-p", "ranks", "[.inf]"], "parameter ranks"),
    (["plan", V, "--profile", "smoke", "-p", "lrs", "{head: .nan, lora: 1e-3, full: 1e-3}"], "parameter lrs"),
    (["notebook", V, "--profile", "PAPER"], "unknown profile 'PAPER'"),
    (["notebook", V, "--profile", "smoke", "-p", "force", "maybe"], "parameter force is 'maybe'"),
    (["notebook", V, "--profile", "smoke", "-p", "results_dir", "[a]"], "parameter results_dir"),
    (["runs", "verify", "--profile", "nosuch"], "unknown profile 'nosuch'"),
    (["sweep", V, "--profile", "smoke", "--emit", "/nonexistent-dir/p.jsonl"], "no folder /nonexistent-dir"),
]


@pytest.mark.parametrize("argv, message", CLASSES, ids=[" ".join(a)[:60] for a, _ in CLASSES])
def test_each_former_traceback_class_is_one_line(argv, message, capsys):
    one_line(capsys, 2, argv, message)


def test_an_emit_into_a_folder_is_refused_and_leaves_no_temporary(tmp_path, capsys):
    one_line(capsys, 2, ["sweep", V, "--profile", "smoke", "--emit", str(tmp_path)], "is a folder")
    with pytest.raises(LorafairError, match="is a folder"):
        launch.emit([], tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change, message", [({"profile": "nosuch"}, "profile is 'nosuch'"),
                                             ({"seed": -4}, "seed is -4"), ({"epochs": -3}, "epochs is -3"),
                                             ({"surprise": 1}, "surprise is 1")])
def test_a_bad_jsonl_line_is_one_line_naming_its_key(change, message, tmp_path, capsys):
    f = smoke_line(tmp_path, **change)
    one_line(capsys, 2, ["exec", str(f), "--results-dir", str(tmp_path / "store")], message)
    assert not list((tmp_path / "store").rglob("DONE"))


@pytest.mark.parametrize("task_id, message", [("abc", "SLURM_ARRAY_TASK_ID is 'abc'"), ("99", "SLURM_ARRAY_TASK_ID is '99'"),
                                              ("-1", "SLURM_ARRAY_TASK_ID is '-1'")])
def test_a_garbage_array_task_id_is_one_line(task_id, message, tmp_path, monkeypatch, capsys):
    f = smoke_line(tmp_path)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", task_id)
    one_line(capsys, 2, ["exec", str(f), "--results-dir", str(tmp_path / "store")], message)


def test_a_garbage_rank_variable_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "abc")
    one_line(capsys, 2, ["exec", str(smoke_line(tmp_path)), "--results-dir", str(tmp_path / "store")],
             "RANK must be a process rank")


def test_papermill_list_parameters_as_text_are_read_as_yaml():
    from lorafair import profiles

    P = profiles.resolve(V, "smoke", seeds="[13, 1337, 42]", lrs="{head: 1e-2, lora: 1e-3, full: 1e-3}")
    assert P["seeds"] == [13, 1337, 42] and P["lrs"]["lora"] == 1e-3
    with pytest.raises(LorafairError, match="not valid YAML"):
        profiles.resolve(V, "smoke", seeds="[13")


def test_a_papermill_run_with_a_bad_parameter_fails_in_its_first_cell_in_one_line(tmp_path):
    import jupytext
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    nb = jupytext.read(ROOT / "notebooks" / "findings.py")
    src = tmp_path / "findings.ipynb"
    nbformat.write(nb, src)
    with pytest.raises(PapermillExecutionError) as e:
        papermill.execute_notebook(str(src), str(tmp_path / "out.ipynb"), parameters={"profile": "smoke", "n_boot": 1.5},
                                   kernel_name="python3", cwd=str(ROOT), progress_bar=False)
    assert e.value.ename == "LorafairError" and "parameter n_boot of findings is 1.5" in e.value.evalue
    assert e.value.traceback == [f"lorafair: error: {e.value.evalue}"]
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    code = [c for c in out.cells if c.cell_type == "code"]
    failed = [i for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    first_own = next(i for i, c in enumerate(code) if "setup_chapter" in c.source)
    assert failed == [first_own]  # the first cell after the parameters, before anything ran


# ---------------------------------------------------------------- found by a fresh hostile sweep
@pytest.mark.parametrize("argv, env, message", [
    (["exec", "{good}", "--results-dir", "{store}"], {"SLURM_ARRAY_TASK_ID": "²"}, "SLURM_ARRAY_TASK_ID is '²'"),
    (["exec", "{good}", "--index", "0", "--results-dir", "{store}"], {"RANK": "²"}, "RANK must be a process rank"),
    (["exec", "{good}", "--index", "0", "--results-dir", "{store}"], {"RANK": "1"}, "RANK is 1 but WORLD_SIZE"),
    (["exec", "{good}", "--index", "0", "--results-dir", "{store}"], {"LORAFAIR_CLAIM_STALE_S": "abc"},
     "LORAFAIR_CLAIM_STALE_S must be"),
    (["exec", "{good}", "--index", "", "--results-dir", "{store}"], {}, "--index must be integers"),
    (["exec", "{empty}", "--results-dir", "{store}"], {}, "holds no configuration"),
    (["exec", "{deep}", "--results-dir", "{store}"], {}, "line 1 is not JSON"),
    (["plan", V, "--profile", "smoke", "-p", "profile", "offline"], {}, "give the profile with --profile"),
    (["plan", V, "--profile", "smoke", "-p", "control", "{model: vit_tiny_random}"], {}, "parameter control of"),
    (["plan", V, "--profile", "smoke", "-p", "beyond", "5"], {}, "parameter beyond of"),
    (["plan", V, "--profile", "smoke", "-p", "lr_pilot", "{factors: [3.0]}"], {}, "it needs the key 'seeds'"),
    (["plan", "membership_inference", "--profile", "smoke", "-p", "tasks", "[{name: v}]"], {}, "parameter tasks[0]"),
    (["plan", "performance", "--profile", "smoke", "-p", "steps", "[{workload: 'vit_base:lora'}]"], {},
     "it needs the key 'precision'"),
    (["plan", "llm_classification", "--profile", "smoke", "-p", "seeds_by_model", "[1]"], {}, "parameter seeds_by_model"),
    (["plan", V, "--profile", "smoke", "-p", "dataset_kwargs", "{task: gender, n: 1, test_reserve: 1}"], {}, "dataset_kwargs.n is 1"),
    (["plan", V, "--profile", "smoke", "-p", "dataset_kwargs", "{task: gender, n: 10000000, test_reserve: 1}"], {},
     "dataset_kwargs.n is 10000000"),
    (["plan", V, "--profile", "smoke", "-p", "results_dir", ""], {}, "parameter results_dir"),
    (["sweep", V, "--profile", "smoke", "--results-dir", ""], {}, "--results-dir is empty"),
    (["run", "vision", "--profile", "smoke", "--rank", "4096", "--results-dir", "{store}"], {},
     "rank 4096 exceeds the width"),
    (["sweep", V, "--profile", "smoke", "--results-dir", "{store}", "--emit", "{store}.jsonl", "--launch", "slurm",
      "--cluster", "bogus"], {}, "unknown --cluster (submitit) 'bogus'"),
])
def test_inputs_of_the_second_hostile_sweep_are_one_line(argv, env, message, tmp_path, monkeypatch, capsys):
    good = smoke_line(tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    fill = {"good": str(good), "store": str(tmp_path / "store"), "empty": str(tmp_path / "empty.jsonl"),
            "deep": str(tmp_path / "deep.jsonl")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k, v in fill.items():
        argv = [a.replace("{" + k + "}", v) for a in argv]
    one_line(capsys, 2, argv, message)
    assert not list((tmp_path / "store").rglob("DONE"))


def test_a_source_that_is_not_a_file_or_not_a_table_is_one_line(tmp_path):
    from lorafair import data

    os.mkfifo(tmp_path / "fifo")  # reading it would wait forever
    with pytest.raises(LorafairError, match="not found"):
        data.load_measuring_hate_speech(source=str(tmp_path / "fifo"))
    (tmp_path / "bad.parquet").write_bytes(b"not a parquet file at all")
    with pytest.raises(LorafairError, match="is not a readable parquet table"):
        data.load_measuring_hate_speech(source=str(tmp_path / "bad.parquet"))


@pytest.mark.parametrize("owner, future", [({"pid": 0}, False), ({"pid": -1}, False), ({"pid": "abc"}, False),
                                           ({"pid": 1}, True)])
def test_claims_naming_no_process_or_stamped_in_the_future_are_stale(owner, future, tmp_path):
    """pid 0 and -1 name process groups (``kill(0, 0)`` succeeds), and a heartbeat a day ahead
    would hold a run for a day: neither may keep a run waiting."""
    claim = runs.Claim(tmp_path / ".claim-x")
    claim.path.write_text(json.dumps({"host": runs._host(), "started_utc": "x", **owner}))
    if future:
        t = time.time() + 86400
        os.utime(claim.path, (t, t))
    assert claim.is_stale()


def test_a_record_whose_json_nests_without_end_is_damaged_not_a_crash(tmp_path, capsys):
    store, a, b = _two_records(tmp_path)
    (a / "DONE").write_text("2026-01-01T00:00:00Z\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    (b / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    runs.write_done(b, "2026-01-01T00:00:00Z")  # a consistent manifest: only the content is absurd
    assert main(["runs", "verify", "--results-dir", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "manifest does not parse" in out and "config.json does not parse" in out
    with pytest.raises(LorafairError, match="damaged"):
        store.load("exp", {"lr": 0.01})


def test_profile_given_twice_and_bench_out_at_a_device_are_refused(tmp_path, capsys):
    one_line(capsys, 2, ["notebook", V, "--profile", "smoke", "-p", "profile", "paper", "--out", str(tmp_path)],
             "--profile smoke and -p profile 'paper' disagree")
    os.mkfifo(tmp_path / "pipe")
    one_line(capsys, 2, ["bench", "--estimate", "--workloads", "vit_base:lora", "--out", str(tmp_path / "pipe")],
             "is not a regular file")
    assert (tmp_path / "pipe").is_fifo() if hasattr(Path, "is_fifo") else True


def test_repair_never_removes_what_lies_outside_the_store(tmp_path, capsys):
    """A record folder, or an experiment folder, that is a link out of the store: the damaged record
    is reported, the user's folder it leads to is left as it is."""
    store = tmp_path / "store"
    (store / V).mkdir(parents=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "DONE").write_text("x\n")
    (mine / "thesis.txt").write_text("years of work")
    (store / V / "aaaaaaaaaaaa").symlink_to(mine)
    elsewhere = tmp_path / "elsewhere" / "bbbbbbbbbbbb"
    elsewhere.mkdir(parents=True)
    (elsewhere / "DONE").write_text("x\n")
    (store / "other").symlink_to(tmp_path / "elsewhere")
    assert main(["runs", "verify", "--repair", "--results-dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert "the link was removed" in out and out.count("outside the store or not a record's folder") == 1
    assert (mine / "thesis.txt").read_text() == "years of work" and (elsewhere / "DONE").exists()


def test_emit_and_sbatch_out_never_replace_a_device_or_a_pipe_and_options_cannot_pose_as_files(tmp_path, capsys,
                                                                                                monkeypatch):
    os.mkfifo(tmp_path / "pipe")
    one_line(capsys, 2, ["sweep", V, "--profile", "smoke", "--results-dir", str(tmp_path / "s"), "--emit",
                         str(tmp_path / "pipe")], "is not a regular file")
    one_line(capsys, 2, ["sweep", V, "--profile", "smoke", "--results-dir", str(tmp_path / "s"), "--emit",
                         str(tmp_path / "p.jsonl"), "--launch", "sbatch", "--sbatch-out", str(tmp_path / "pipe")],
             "is not a regular file")
    one_line(capsys, 2, ["sweep", V, "--profile", "smoke", "--results-dir", str(tmp_path / "s\n#SBATCH --x"), "--emit",
                         str(tmp_path / "p.jsonl"), "--launch", "sbatch"], "holds a control character")
    assert not (tmp_path / "p.jsonl").exists() and (tmp_path / "pipe").exists()
    monkeypatch.chdir(tmp_path)
    script = launch.sbatch_script("-h", 2, 10, results_dir="-x")
    assert f"lorafair exec {tmp_path}/-h" in script and f"--results-dir {tmp_path}/-x" in script


def test_book_no_compute_refuses_before_it_replaces_a_staged_copy(tmp_path, capsys):
    out = tmp_path / "o"
    (out / "source" / "book").mkdir(parents=True)
    (out / "source" / ".lorafair-staged").write_text("made by lorafair book --out")
    (out / "source" / "book" / "draft.md").write_text("mine")
    one_line(capsys, 2, ["book", "--profile", "smoke", "--out", str(out), "--no-compute", "--results-dir",
                         str(tmp_path / "empty"), "--only", V, "--no-build"], "runs without a record")
    assert (out / "source" / "book" / "draft.md").read_text() == "mine"


@pytest.mark.parametrize("argv, message", [
    (["run", "vision", "--profile", "smoke", "--lr", "-1e-3"], "a negative number is written with ="),
    (["run", "vision", "--profile", "smoke", "--epochs", "2.5"], "argument --epochs: invalid int value: '2.5'"),
    (["runs", "verify", "bogus"], "unrecognized arguments: bogus"),
    (["bench", "--scale", "huge"], "invalid choice: 'huge'"),
    (["runs", "nosuch"], "invalid choice: 'nosuch'"),
    (["plan", V, "--profile", "smoke", "-p", "split_unit", "no_such_column"], "split_design.unit is 'no_such_column'"),
    (["plan", V, "--profile", "smoke", "-p", "force", "maybe"], "force applies to lorafair notebook and book"),
])
def test_argument_errors_are_the_tools_one_line_too(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors leave through SystemExit(2)
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lorafair: error: ") and message in err, err


def test_a_claim_that_is_a_folder_is_taken_over_and_removed(tmp_path):
    store = RunStore(tmp_path)
    claim = store.claim("exp", {"a": 1})
    claim.path.parent.mkdir(parents=True)
    claim.path.mkdir()
    old = time.time() - runs.claim_stale_s() - 5
    os.utime(claim.path, (old, old))
    rec = store.get_or_run("exp", {"a": 1}, lambda: (pd.DataFrame({"x": [1]}), {}))
    assert rec.metrics == {} and [p.name for p in (tmp_path / "exp").iterdir()] == [rec.run_id]


# ---------------------------------------------------------------- found by an independent code review
def test_repair_of_a_link_to_a_healthy_record_removes_the_link_only(tmp_path, capsys):
    store, a, b = _two_records(tmp_path)
    (tmp_path / "exp" / "0123456789ab").symlink_to(b)
    assert main(["runs", "verify", "--repair", "--results-dir", str(tmp_path)]) == 0
    assert "the link was removed" in capsys.readouterr().out
    assert not os.path.lexists(tmp_path / "exp" / "0123456789ab") and store.load("exp", {"lr": 0.02}).metrics


def test_another_hosts_temporary_folder_is_kept_while_its_claim_beats(tmp_path, monkeypatch):
    exp = tmp_path / "exp"
    exp.mkdir()
    tmp = exp / ".tmp-aaaaaaaaaaaa-otherhost-123-abcd1234"
    tmp.mkdir()
    old = time.time() - runs.claim_stale_s() - 60
    os.utime(tmp, (old, old))  # made long ago; its run is still computing on the other host
    (exp / ".claim-aaaaaaaaaaaa").write_text(json.dumps({"host": "otherhost", "pid": 123, "started_utc": "x"}))
    assert runs.clean_stale_temporaries(exp) == 0 and tmp.exists()
    os.utime(exp / ".claim-aaaaaaaaaaaa", (old, old))  # its heartbeat stopped: the host is gone
    assert runs.clean_stale_temporaries(exp) == 1 and not tmp.exists()


def test_a_record_written_before_checksums_is_adopted_not_deleted(tmp_path, capsys):
    store, a, b = _two_records(tmp_path)
    (a / "DONE").write_text("2026-01-01T00:00:00Z\n")  # as records were written before manifests existed
    with pytest.raises(LorafairError, match="runs verify --adopt"):
        store.load("exp", {"lr": 0.01})
    assert main(["runs", "verify", "--adopt", "--results-dir", str(tmp_path)]) == 0
    assert "1 record(s) written before" in capsys.readouterr().out
    assert store.load("exp", {"lr": 0.01}).metrics == {"acc": 0.5}


def test_review_inputs_are_one_line(tmp_path, capsys):
    deep = {"a": 1}
    for _ in range(800):
        deep = {"x": deep}
    f = smoke_line(tmp_path, dataset_kwargs={"render": deep})
    one_line(capsys, 2, ["exec", str(f), "--results-dir", str(tmp_path / "store")], "line 1")
    f = smoke_line(tmp_path, split_design={"kind": "by_unit", "unit": "drawing", "caps": "abc"})
    one_line(capsys, 2, ["exec", str(f), "--results-dir", str(tmp_path / "store")], "split_design.caps is 'abc'")
    f = smoke_line(tmp_path, experiment="generation_fairness")
    one_line(capsys, 2, ["exec", str(f), "--results-dir", str(tmp_path / "store")],
             "experiment is 'generation_fairness': an experiment of classification runs")
    f = smoke_line(tmp_path, experiment="llm_classification")
    one_line(capsys, 2, ["exec", str(f), "--results-dir", str(tmp_path / "store")],
             "a text dataset for experiment llm_classification")
    one_line(capsys, 2, ["plan", V, "--profile", "smoke", "-p", "seeds", "[" * 3000 + "]" * 3000], "parameter seeds")
    f = smoke_line(tmp_path, method="lora", target_modules=["layernorm_before"], rank=2, alpha=4.0, layer_fraction=1.0,
                   placement="front")
    one_line(capsys, 2, ["exec", str(f), "--results-dir", str(tmp_path / "store")], "peft cannot build lora")


def test_a_runspec_not_made_by_build_is_checked_again_and_cannot_be_reinitialised():
    good = spec.thaw(launch.listing(V, "smoke", results_dir="/nonexistent")[0]["config"])
    forged = spec.RunSpec({**good, "lr": float("nan")})
    with pytest.raises(LorafairError, match="lr is nan"):
        spec.as_spec(forged)
    built = spec.build(good)
    with pytest.raises(TypeError):
        built.__init__({"experiment": "x"})
    import pickle

    assert spec.as_spec(pickle.loads(pickle.dumps(built))) == built


def test_a_stale_claim_taken_over_first_by_another_process_is_left_to_it(tmp_path, monkeypatch):
    claim = runs.Claim(tmp_path / ".claim-x")
    claim.path.write_text(json.dumps({"host": "gone", "pid": 1, "started_utc": "x"}))
    old = time.time() - runs.claim_stale_s() - 5
    os.utime(claim.path, (old, old))
    real = runs.Claim.is_stale

    def other_process_wins(self):  # it is judged stale; meanwhile another process takes it over first
        stale = real(self)
        self.path.unlink()
        self.path.write_text(json.dumps({"host": runs._host(), "pid": os.getpid(), "started_utc": "now"}))
        return stale
    monkeypatch.setattr(runs.Claim, "is_stale", other_process_wins)
    assert claim.acquire() is False
    assert json.loads(claim.path.read_text())["started_utc"] == "now"  # the winner's claim is back in place
