"""The cluster path: a chapter's runs listed, emitted and executed by any scheduler (submitit's local
executor here), with the run store's claims making every configuration train once."""

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lorafair import launch, runs
from lorafair.cli import main
from lorafair.errors import LorafairError
from lorafair.runs import Claim, RunStore


def _slow_compute(counter: str, seconds: float = 1.5):
    def compute():
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        return pd.DataFrame({"example_id": [0], "pred": [1]}), {"accuracy": 1.0}
    return compute


def _start_one(root: str, counter: str, out: str) -> None:
    rec = RunStore(root).get_or_run("exp", {"a": 1}, _slow_compute(counter))
    Path(out).write_text(rec.meta["finished_utc"])


def test_two_processes_starting_one_run_train_it_once(tmp_path):
    counter = tmp_path / "computed"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_start_one, args=(str(tmp_path / "s"), str(counter), str(tmp_path / f"out{i}")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(counter.read_text().split()) == 1  # one trained, the other waited for its record
    assert (tmp_path / "out0").read_text() == (tmp_path / "out1").read_text()
    assert not list((tmp_path / "s" / "exp").glob(".claim-*")) and not list((tmp_path / "s" / "exp").glob(".tmp-*"))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_jobs_claim_is_taken_over_and_a_live_one_is_not(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    claim = store.claim("exp", {"a": 1})
    claim.path.parent.mkdir(parents=True)
    claim.path.write_text(json.dumps({"host": runs._host(), "pid": _dead_pid()}))
    assert store.state("exp", {"a": 1}) == "incomplete"
    rec = store.get_or_run("exp", {"a": 1}, _slow_compute(str(tmp_path / "c"), 0))
    assert rec.metrics == {"accuracy": 1.0} and not claim.path.exists()
    # another host's claim with a fresh heartbeat is live: wait=False gives up, the record is not started
    other = store.claim("exp", {"a": 2})
    other.path.write_text(json.dumps({"host": "node-b", "pid": 1}))
    assert store.state("exp", {"a": 2}) == "running"
    assert store.get_or_run("exp", {"a": 2}, _slow_compute(str(tmp_path / "c"), 0), wait=False) is None
    old = time.time() - runs.CLAIM_STALE_S - 5  # ... and one whose heartbeat stopped is stale
    os.utime(other.path, (old, old))
    assert Claim(other.path).is_stale()
    assert store.get_or_run("exp", {"a": 2}, _slow_compute(str(tmp_path / "c"), 0)) is not None


def test_a_completed_record_is_never_replaced_unless_forced(tmp_path):
    store = RunStore(tmp_path)
    first = store.get_or_run("exp", {"a": 1}, _slow_compute(str(tmp_path / "c"), 0))
    tmp = tmp_path / "exp" / ".tmp-other"
    tmp.mkdir()
    (tmp / "DONE").write_text("late\n")
    runs._publish(tmp, first.path, replace_done=False)  # a second finisher's record is discarded
    assert (first.path / "DONE").read_text().startswith(first.meta["finished_utc"] + "\n")
    again = store.get_or_run("exp", {"a": 1}, _slow_compute(str(tmp_path / "c"), 0), force=True)
    assert again.path == first.path and (again.path / "DONE").exists()
    assert not list((tmp_path / "exp").glob(".old-*"))


def test_stale_temporaries_of_dead_owners_are_removed(tmp_path):
    d = tmp_path / "exp"
    dead = d / f".tmp-abc-{runs._host()}-{_dead_pid()}-1234"
    live = d / f".tmp-abd-{runs._host()}-{os.getpid()}-1234"
    dead.mkdir(parents=True)
    live.mkdir()
    assert runs.clean_stale_temporaries(d) == 1
    assert not dead.exists() and live.exists()


def test_gpus_launcher_pins_one_worker_per_visible_device(monkeypatch, tmp_path):
    assert launch.gpu_assignments(5, 2) == [[0, 2, 4], [1, 3]]
    assert launch.gpu_assignments(1, 4) == [[0]]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # a node that gave this job two of its GPUs
    assert launch.visible_gpus() == 2
    cmds = launch.worker_commands("p.jsonl", 3, 2, str(tmp_path))
    assert [env["CUDA_VISIBLE_DEVICES"] for env, _ in cmds] == ["3", "5"]
    assert cmds[0][1][-4:] == ["--indices", "0,2", "--results-dir", str(tmp_path)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(LorafairError, match="--launch gpus found no GPU"):
        launch.launch_gpus(_emit_two(tmp_path))


def _emit_two(tmp_path) -> str:
    rows = launch.listing("vision_classification", "smoke", results_dir=str(tmp_path / "s"))[:2]
    path = tmp_path / "two.jsonl"
    launch.emit(rows, path)
    return str(path)


def test_sweep_lists_emits_and_the_file_is_checked(tmp_path, capsys):
    assert main(["sweep", "vision_classification", "--profile", "smoke", "--results-dir", str(tmp_path / "s"),
                 "--emit", str(tmp_path / "p.jsonl")]) == 0
    out = capsys.readouterr().out
    n = len(launch.read(tmp_path / "p.jsonl"))
    assert f"vision_classification on profile smoke: {n} runs; {n} pending" in out
    assert "  pending " in out and "[main]" in out and "[methods_pilot]" in out
    assert main(["exec", str(tmp_path / "p.jsonl"), "--index", str(n)]) == 2
    assert f"--index {n} is out of range: the file has {n} configurations" in capsys.readouterr().err
    good = (tmp_path / "p.jsonl").read_text().splitlines()[0]
    (tmp_path / "bad.jsonl").write_text(good + '\nnot json\n')
    assert main(["exec", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl line 2 is not JSON" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"config": {"experiment": "x"}}\n')
    assert main(["exec", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl line 1: experiment is 'x': a registered experiment" in capsys.readouterr().err
    assert main(["sweep", "nosuch"]) == 2
    assert "unknown chapter 'nosuch'" in capsys.readouterr().err
    script = launch.sbatch_script("p.jsonl", 7, 95, gpus=2, parallel=3)
    assert "#SBATCH --array=0-6%3" in script and "#SBATCH --time=01:35:00" in script
    assert f'lorafair exec {os.path.abspath("p.jsonl")} --index "$SLURM_ARRAY_TASK_ID"' in script


def test_paper_profile_runs_have_gpu_estimates():
    rows = launch.listing("vision_classification", "paper", results_dir="/nonexistent-store")
    assert len(rows) > 100 and all(r["seconds"] for r in rows)
    assert {r["state"] for r in rows} == {"pending"}


def test_book_without_compute_names_the_missing_runs_before_executing_anything(tmp_path, capsys):
    assert main(["book", "--profile", "smoke", "--no-compute", "--results-dir", str(tmp_path), "--no-build",
                 "--only", "vision_classification"]) == 2
    err = capsys.readouterr().err
    assert "runs without a record: vision_classification" in err
    assert "lorafair sweep vision_classification --profile smoke --emit pending.jsonl" in err
    assert main(["book", "--no-compute", "--recompute"]) == 2


def test_sweep_workers_take_the_visible_gpus_in_turn(monkeypatch):
    import multiprocessing as mp

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,7")
    assert runs.worker_devices() == ("2", "7")
    counter = mp.get_context("spawn").Value("i", 0)
    seen = []
    for _ in range(3):
        runs._one_thread(counter, ("2", "7"))
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["2", "7", "2"]


@pytest.mark.parametrize("argv, message", [
    (["sweep", "vision_classification", "--launch", "pbs", "--emit", "x.jsonl"], "unknown launcher 'pbs'"),
    (["sweep", "vision_classification", "--launch", "slurm"], "--launch slurm needs --emit FILE"),
    (["sweep", "vision_classification", "--workers", "0"], "--workers must be at least 1, got 0"),
    (["sweep", "vision_classification", "--retries", "-1"], "--retries must be at least 0, got -1"),
    (["sweep", "all", "-p", "seeds", "[1]"], "-p applies to one chapter"),
    (["exec", "/nonexistent.jsonl"], "no such file of configurations: /nonexistent.jsonl"),
])
def test_sweep_and_exec_mistakes_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
