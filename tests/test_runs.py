import json

import pandas as pd
import pytest

from lorafair.runs import RunStore, load_record, run_id


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
    assert meta["config"] == cfg and "packages" in meta["environment"]
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
