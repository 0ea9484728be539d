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
