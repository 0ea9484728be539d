"""The committed offline run records are the published record: re-running one cheap committed
configuration from scratch must reproduce its predictions and metrics."""

from pathlib import Path

import numpy as np
import pytest

from lorafair import experiments as ex
from lorafair.runs import RunStore, run_id

ROOT = Path(__file__).resolve().parents[1]


def committed(experiment, **match):
    store = RunStore(ROOT / "results")
    for r in store.records(experiment):
        if all(r.config.get(k) == v for k, v in match.items()):
            return r
    return None


def test_committed_records_are_complete_and_consistent():
    recs = RunStore(ROOT / "results").records("vision_classification")
    assert recs, "no committed offline run records"
    for r in recs:
        assert r.run_id == run_id(r.config)  # the directory name is the hash of the stored config
        p = r.predictions()
        t = p[p["split"] == "test"]
        assert r.metrics["accuracy"]["value"] == pytest.approx((t["label"] == t["pred"]).mean())
        assert r.metrics["n"] == len(t)


def test_cheap_committed_run_reproduces(tmp_path):
    rec = committed("vision_classification", model="mobilenet_v2", method="head", seed=42, profile="offline")
    if rec is None:
        pytest.fail("the committed head-only MobileNetV2 seed-42 record is missing")
    kw = rec.config["dataset_kwargs"]
    runner = ex.ClassificationRunner(RunStore(tmp_path), rec.config["dataset"], kw, progress=False)
    again = runner.run(rec.config)
    old, new = rec.predictions(), again.predictions()
    assert (old["example_id"] == new["example_id"]).all() and (old["split"] == new["split"]).all()
    assert (old["pred"] == new["pred"]).all()
    np.testing.assert_allclose(new["prob"], old["prob"], atol=1e-5)
    assert again.metrics["accuracy"] == rec.metrics["accuracy"]
    assert again.meta["history"]["val_accuracy"] == pytest.approx(rec.meta["history"]["val_accuracy"])


def test_committed_vision_splits_keep_each_person_drawing_on_one_side():
    """Every committed vision and vision membership-inference record names the person drawing of
    each prediction (no skin-tone modifier), and no drawing is on two sides of its split."""
    store = RunStore(ROOT / "results")
    recs = store.records("vision_classification") + [
        r for r in store.records("membership_inference") if r.config["dataset"] == "openmoji_people"]
    assert recs
    for r in recs:
        p = r.predictions()
        assert "split_unit" in p, r.run_id
        assert not p["split_unit"].str.contains("1F3F[B-F]", regex=True).any(), r.run_id
        used = p[p["split"] != "unused"]  # capped splits' and down-sampling controls' left-out examples aside
        assert (used.groupby("split_unit")["split"].nunique() == 1).all(), r.run_id


def same_predictions(old, new, atol):
    """Identical predictions: the same rows and columns, every non-float column equal, every float
    column within ``atol`` (the committed fp32 records were made on another CPU: the order of a
    matrix product's sums differs by a few units in the last place)."""
    import json

    assert list(old.columns) == list(new.columns) and len(old) == len(new)
    for c in old.columns:
        if old[c].dtype.kind == "f":
            np.testing.assert_allclose(new[c].to_numpy(), old[c].to_numpy(), atol=atol, rtol=atol, err_msg=c)
        elif len(old) and isinstance(old[c].iloc[0], str) and old[c].iloc[0].startswith("["):  # lists of numbers as text
            for x, y in zip(old[c], new[c]):
                x, y = json.loads(x), json.loads(y)
                assert len(x) == len(y), f"column {c} differs"
                np.testing.assert_allclose(np.array(y, dtype=float), np.array(x, dtype=float), atol=atol, rtol=atol,
                                           err_msg=c)
        else:
            assert old[c].equals(new[c]), f"column {c} differs"


@pytest.mark.parametrize("experiment, match", [
    ("llm_classification", {"model": "minilm", "method": "head", "seed": 13, "dataset": "identity_attack"}),
    ("performance", {"workload": "vit_base:full"}),
], ids=["llm-minilm-head", "performance-estimate"])
def test_committed_offline_records_reproduce_at_head(experiment, match, tmp_path):
    """Cheap committed offline records of the other kinds re-run at HEAD, in the precision each record
    states, give the predictions committed under their id."""
    from lorafair import sweep

    rec = committed(experiment, **match)
    assert rec is not None, f"no committed {experiment} record matching {match}"
    prec = rec.meta["environment"].get("precision")
    again = sweep.run_one(RunStore(tmp_path), rec.config, train_options={"precision": prec} if prec else {},
                          progress=False)
    assert again.run_id == rec.run_id
    same_predictions(rec.predictions(), again.predictions(), atol=1e-5)
    same_metrics(rec.metrics, again.metrics, atol=1e-5)


def same_metrics(old, new, atol, path="metrics"):
    """The same metrics: numbers within ``atol``, everything else equal, at every key (times aside)."""
    if isinstance(old, dict):
        assert isinstance(new, dict) and set(old) == set(new), f"{path}: keys differ"
        for k in old:
            if not str(k).endswith("seconds"):  # how long something took is not what it computed
                same_metrics(old[k], new[k], atol, f"{path}.{k}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(old) == len(new), f"{path}: lengths differ"
        for i, (a, b) in enumerate(zip(old, new)):
            same_metrics(a, b, atol, f"{path}[{i}]")
    elif isinstance(old, (int, float)) and not isinstance(old, bool) and old is not None:
        assert new == pytest.approx(old, abs=atol, rel=atol), f"{path}: {old} -> {new}"
    else:
        assert old == new, f"{path}: {old!r} -> {new!r}"


GOLDEN = ROOT / "tests" / "golden"
GOLDEN_RECORDS = [r for d in sorted(GOLDEN.iterdir()) if d.is_dir() for r in RunStore(GOLDEN).records(d.name)]


def test_the_golden_records_are_one_per_experiment_and_method():
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    import make_golden

    assert sorted(r.run_id for r in GOLDEN_RECORDS) == sorted(run_id(c) for c in make_golden.sample())
    kinds = {(r.config["experiment"], r.config.get("part"), r.config.get("method")) for r in GOLDEN_RECORDS}
    assert {("vision_classification", None, m) for m in ("head", "lora", "full")} <= kinds
    assert {("generation_fairness", p, "lora") for p in ("pronoun", "token_bias")} <= kinds


@pytest.mark.parametrize("rec", GOLDEN_RECORDS, ids=[f"{r.config['experiment']}-{r.config.get('part') or ''}-"
                                                     f"{r.config.get('method') or r.config.get('workload')}-{r.run_id}"
                                                     for r in GOLDEN_RECORDS])
def test_a_golden_smoke_record_reproduces_at_head(rec, tmp_path):
    """One smoke run per experiment and method (``tests/make_golden.py``, fp32) re-run at HEAD gives the
    predictions stored under its id: a change of the code that changes what a run computes cannot
    leave its id, and so its committed record, unchanged without this test failing."""
    from lorafair import sweep

    again = sweep.run_one(RunStore(tmp_path), rec.config, train_options={"precision": "fp32"}, progress=False)
    assert again.run_id == rec.run_id
    same_predictions(rec.predictions(), again.predictions(), atol=1e-4)
    same_metrics(rec.metrics, again.metrics, atol=1e-4)
