import json

import pandas as pd
import pytest

from lorafair.errors import LorafairError
from lorafair.runs import RunStore, is_main_process, load_record, run_id


def compute_factory(counter, value=1):
    def compute():
        counter.append(1)
        return pd.DataFrame({"example_id": ["a"], "x": [value]}), {"accuracy": value}
    return compute


def test_run_id_is_stable_and_config_sensitive():
    a = {"model": "m", "lr": 1e-3, "seeds": [1, 2]}
    assert run_id(a) == run_id(dict(reversed(list(a.items()))))
    assert run_id(a) != run_id({**a, "lr": 2e-3})
    assert len(run_id(a)) == 12


def test_completed_run_is_reused_not_recomputed(tmp_path):
    store, calls = RunStore(tmp_path), []
    cfg = {"k": 1}
    r1 = store.get_or_run("exp", cfg, compute_factory(calls))
    r2 = store.get_or_run("exp", cfg, compute_factory(calls, value=2))
    assert len(calls) == 1 and r2.metrics == {"accuracy": 1}
    assert sorted(p.name for p in r1.path.iterdir()) == ["DONE", "config.json", "metrics.json", "predictions.parquet"]
    meta = json.loads((r1.path / "config.json").read_text())
    assert meta["config"] == cfg and "packages" in meta["environment"] and meta["environment"]["device"] == "cpu"
    store.get_or_run("exp", cfg, compute_factory(calls, value=3), force=True)
    assert len(calls) == 2 and store.load("exp", cfg).metrics == {"accuracy": 3}


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path):
    store = RunStore(tmp_path)

    def boom():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.get_or_run("exp", {"k": 2}, boom)
    assert not store.path("exp", {"k": 2}).exists()
    assert list((tmp_path / "exp").iterdir()) == []  # no temporary leftovers


def test_incomplete_directory_is_recomputed_and_never_read(tmp_path):
    store, calls = RunStore(tmp_path), []
    cfg = {"k": 3}
    p = store.path("exp", cfg)
    p.mkdir(parents=True)
    (p / "metrics.json").write_text('{"accuracy": 999}')  # a crashed writer's leftovers, no DONE
    with pytest.raises(FileNotFoundError, match="incomplete"):
        load_record(p)
    assert store.records("exp") == []
    r = store.get_or_run("exp", cfg, compute_factory(calls))
    assert calls == [1] and r.metrics == {"accuracy": 1}
    assert [x.run_id for x in store.records("exp")] == [p.name]


def test_only_rank_zero_writes_even_before_the_process_group_exists(tmp_path, monkeypatch):
    """Under torchrun / accelerate launch the store is consulted before training creates the process
    group; the launcher's RANK must already keep rank 1 from writing (it once raced rank 0)."""
    monkeypatch.delenv("RANK", raising=False)
    assert is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(LorafairError, match="RANK is 1 but WORLD_SIZE"):  # no launcher: a stray variable
        is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not is_main_process()
    calls = []
    with pytest.raises(FileNotFoundError):  # rank 1 computes (collectives need it) but reads rank 0's record
        RunStore(tmp_path).get_or_run("exp", {"k": 1}, compute_factory(calls))
    assert calls == [1] and not any(tmp_path.rglob("*"))


@pytest.mark.parametrize("damage, problem", [
    (lambda p: (p / "predictions.parquet").write_bytes((p / "predictions.parquet").read_bytes()[:40]),
     "predictions.parquet has 40 bytes"),
    (lambda p: (p / "metrics.json").unlink(), "metrics.json is missing"),
    (lambda p: (p / "config.json").write_text("{garbage" + " " * (len((p / "config.json").read_text()) - 8)),
     "config.json is not valid JSON|its JSON does not parse"),
])
def test_a_damaged_record_is_refused_named_and_repaired(tmp_path, damage, problem, capsys):
    from lorafair.cli import main
    from lorafair.errors import LorafairError

    store = RunStore(tmp_path)
    cfg = {"a": 1}
    rec = store.get_or_run("exp", cfg, lambda: (pd.DataFrame({"x": range(50)}), {"accuracy": 0.5}))
    damage(rec.path)
    with pytest.raises(LorafairError, match=f"run record {rec.path} is damaged .*lorafair runs verify --repair"):
        store.load("exp", cfg).predictions()
    assert main(["runs", "verify", "--results-dir", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert "damaged" in out.out and "1 damaged" in out.out and problem.split("|")[0].split(" ")[0] in out.out
    assert main(["runs", "verify", "--repair", "--results-dir", str(tmp_path)]) == 0
    assert not store.is_done("exp", cfg)
    again = store.get_or_run("exp", cfg, lambda: (pd.DataFrame({"x": range(50)}), {"accuracy": 0.5}))
    assert len(again.predictions()) == 50 and main(["runs", "verify", "--results-dir", str(tmp_path)]) == 0


PARENT = """
import sys, time
sys.path.insert(0, {lib!r})
from lorafair.runs import map_in_workers
import os
def task(path):
    open(path, "a").write(str(os.getpid()) + "\\n")
    time.sleep(120)
if __name__ == "__main__":
    map_in_workers(task, [({out!r},), ({out!r},)], 2, lambda: None)
"""


def test_workers_die_when_their_sweep_is_killed(tmp_path):
    """SIGKILL of the parent (a killed notebook kernel or shell): its worker processes end too."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from lorafair.runs import pid_alive

    out = tmp_path / "pids"
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(lib=str(Path(__file__).resolve().parents[1] / "lib"), out=str(out)))
    parent = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or len(out.read_text().split()) < 2):
        time.sleep(0.2)
    pids = [int(p) for p in out.read_text().split()]
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(pid_alive(p) for p in pids), "orphaned workers outlived their killed parent"


def _strict_loads(text):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_records_are_standard_json_with_null_for_a_missing_number(tmp_path):
    import numpy as np

    store = RunStore(tmp_path)
    metrics = {"auc": float("nan"), "inf": float("inf"), "ok": np.float32(0.25), "per_epoch": [np.nan, 0.5]}
    rec = store.get_or_run("exp", {"k": 9}, lambda: (pd.DataFrame({"x": [1]}), metrics))
    parsed = _strict_loads((rec.path / "metrics.json").read_text())
    assert parsed == {"auc": None, "inf": None, "ok": 0.25, "per_epoch": [None, 0.5]}
    _strict_loads((rec.path / "config.json").read_text())


def test_the_committed_records_are_standard_json():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "results"
    files = sorted(root.glob("*/*/*.json"))
    assert len(files) > 100
    bad = []
    for f in files:
        try:
            _strict_loads(f.read_text())
        except ValueError as e:
            bad.append(f"{f.relative_to(root)}: {e}")
    assert not bad, bad[:5]
