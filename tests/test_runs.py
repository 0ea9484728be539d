import json

import pandas as pd
import pytest

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
    assert not is_main_process()
    calls = []
    with pytest.raises(FileNotFoundError):  # rank 1 computes (collectives need it) but reads rank 0's record
        RunStore(tmp_path).get_or_run("exp", {"k": 1}, compute_factory(calls))
    assert calls == [1] and not any(tmp_path.rglob("*"))
