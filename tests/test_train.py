"""End-to-end classification runs on the smoke dataset with tiny random ViT / Swin-v2 models."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from lorafair import data
from lorafair import experiments as ex
from lorafair import models, splits, sweep, train
from lorafair.runs import RunStore


def cfg(kw, model="vit_tiny_random", method="lora", seed=13, **extra):
    return ex.classification_config("vision_classification", "smoke", "openmoji_people", kw, model, method,
                                    seed, 1, 1e-3, 16, n_boot=50, **extra)


@pytest.fixture(scope="module")
def lora_record(smoke_kwargs, tmp_path_factory):
    runner = ex.ClassificationRunner(RunStore(tmp_path_factory.mktemp("store")), "openmoji_people",
                                     smoke_kwargs, progress=False)
    return runner, runner.run(cfg(smoke_kwargs))


def test_record_contract(lora_record):
    _, rec = lora_record
    p = rec.predictions()
    for col in ["example_id", "split", "label", "pred", "prob", "prob_0", "prob_1", "loss",
                "confidence_logit", "group_skin_tone"]:
        assert col in p.columns
    assert len(p) == 60 and set(p["split"]) == {"train", "val", "test"}
    assert np.allclose(p["prob_0"] + p["prob_1"], 1)
    assert np.allclose(p["confidence_logit"], np.log(np.where(p["label"] == 1, p["prob_1"], p["prob_0"]))
                       - np.log(np.where(p["label"] == 1, p["prob_0"], p["prob_1"])), atol=1e-6)
    assert rec.meta["adaptation"]["method"] == "lora"
    assert rec.meta["history"]["selected_epoch"] == 1


def test_metrics_json_equals_independent_recomputation(lora_record):
    _, rec = lora_record
    p = rec.predictions()
    t = p[p["split"] == "test"]
    m = rec.metrics
    assert m["n"] == len(t)
    assert m["accuracy"]["value"] == pytest.approx(accuracy_score(t["label"], t["pred"]))
    a = m["attributes"]["skin_tone"]
    accs = {}
    for g, sub in t.groupby("group_skin_tone"):
        accs[g] = (sub["label"] == sub["pred"]).mean()
        assert a["groups"][g]["count"] == len(sub)
        assert a["groups"][g]["accuracy"] == pytest.approx(accs[g])
        rate = (sub["pred"] == 1).mean()
        assert a["groups"][g]["selection_rate"] == pytest.approx(rate)
    assert a["worst_group_accuracy"]["value"] == pytest.approx(min(accs.values()))
    assert a["accuracy_gap"]["value"] == pytest.approx(max(accs.values()) - min(accs.values()))
    rates = t.groupby("group_skin_tone")["pred"].mean()
    assert a["demographic_parity_difference"] == pytest.approx(rates.max() - rates.min())
    both = t.groupby("group_skin_tone")["label"].transform("nunique") == 2  # TPR and FPR defined
    tpr = t[both & (t["label"] == 1)].groupby("group_skin_tone")["pred"].mean()
    fpr = t[both & (t["label"] == 0)].groupby("group_skin_tone")["pred"].mean()
    assert a["equalized_odds_difference"] == pytest.approx(max(tpr.max() - tpr.min(), fpr.max() - fpr.min()))
    # ECE by hand: 10 equal-width bins of the positive-class probability
    bins = np.minimum((t["prob"].to_numpy() * 10).astype(int), 9)
    ece = sum(abs(t["prob"][bins == b].mean() - t["label"][bins == b].mean()) * (bins == b).sum()
              for b in range(10) if (bins == b).any()) / len(t)
    assert m["ece"]["value"] == pytest.approx(ece, abs=1e-6)


def test_same_seed_gives_identical_predictions(smoke_kwargs, lora_record, tmp_path):
    _, rec = lora_record
    runner = ex.ClassificationRunner(RunStore(tmp_path), "openmoji_people", smoke_kwargs, progress=False)
    again = runner.run(cfg(smoke_kwargs))
    assert again.run_id == rec.run_id
    pd.testing.assert_frame_equal(again.predictions(), rec.predictions())


def test_evaluated_split_is_the_training_split(smoke_kwargs, lora_record):
    """The split column of the predictions is the assignment that chose the training examples, and
    the optimiser only ever saw training examples."""
    runner, rec = lora_record
    table = runner.dataset.table
    expected = splits.assign_splits(table, 13, stratify=["label", "group_skin_tone"])
    p = rec.predictions().set_index("example_id")
    assert (p.loc[table["example_id"], "split"].to_numpy() == expected.to_numpy()).all()

    seen = []
    spec = models.get_spec("vit_tiny_random")
    enc = runner.encoder(spec)

    def spy(ids, train, generator=None):
        if train:
            seen.extend(ids)
        return enc(ids, train, generator)

    import torch

    m, _ = models.build("vit_tiny_random", 2, seed=0)
    m, info = models.adapt(m, spec, "head")
    labels = torch.from_numpy(np.array(table["label"], dtype=np.int64))
    train.fit_predict(m, True, spy, labels, expected, train.TrainConfig(epochs=1, batch_size=16), progress=False)
    assert seen and set(seen) == set(np.flatnonzero((expected == "train").to_numpy()))


def test_methods_differ_and_sweep_resumes(smoke_kwargs, tmp_path):
    configs = [cfg(smoke_kwargs, "swinv2_tiny_random", m) for m in ("head", "lora", "full")]
    recs = sweep.run(RunStore(tmp_path), configs, progress=False)
    params = [r.meta["adaptation"]["trainable_params"] for r in recs]
    assert params[0] < params[1] < params[2]
    # simulate a sweep killed during the second run: its DONE is missing
    (recs[1].path / "DONE").unlink()
    stamps = {r.run_id: (r.path / "DONE").stat().st_mtime_ns for r in (recs[0], recs[2])}
    again = sweep.run(RunStore(tmp_path), configs, progress=False)
    assert [r.run_id for r in again] == [r.run_id for r in recs]
    assert (again[1].path / "DONE").exists()
    for r in (again[0], again[2]):
        assert (r.path / "DONE").stat().st_mtime_ns == stamps[r.run_id]  # not recomputed


def test_base_and_head_share_one_record(smoke_kwargs):
    assert cfg(smoke_kwargs, method="base") == cfg(smoke_kwargs, method="head")


def test_gradient_checkpointing_and_loader_workers_do_not_change_results(smoke_kwargs, tmp_path):
    """Speed options are not part of the run hash, so they must not change what a run computes."""
    c = cfg(smoke_kwargs, method="full")
    plain = ex.ClassificationRunner(RunStore(tmp_path / "a"), "openmoji_people", smoke_kwargs, progress=False).run(c)
    fast = ex.ClassificationRunner(RunStore(tmp_path / "b"), "openmoji_people", smoke_kwargs, progress=False,
                                   train_options={"gradient_checkpointing": True, "num_workers": 1}).run(c)
    assert plain.path.name == fast.path.name
    np.testing.assert_allclose(plain.predictions()["prob"], fast.predictions()["prob"], atol=1e-5)


def test_merged_lora_predicts_like_the_unmerged_adapter():
    import torch

    model, spec = models.build("vit_tiny_random", 2, seed=0)
    model, _ = models.adapt(model, spec, "lora", rank=4)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # peft starts B at zero; make the adapter do something
    x = torch.randn(5, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        before = model(x)
        merged = train.merged_for_inference(model)
        after = merged(x)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-4)


def test_pilot_table_lists_pilots_and_chapter_runs_of_the_dataset():
    from pathlib import Path

    from lorafair.runs import RunRecord

    def rec(method, lr, dataset="identity_attack", seed=13, val=(0.7, 0.8)):
        cfg = {"model": "m", "method": method, "lr": lr, "epochs": len(val), "max_length": 32, "seed": seed,
               "dataset": dataset}
        return RunRecord(Path("x"), cfg, {}, {"history": {"val_accuracy": list(val),
                                                         "selected_val_accuracy": max(val)}})

    t = ex.pilot_table([rec("lora", 5e-3), rec("lora", 1e-4, val=(0.5,)), rec("lora", 1e-3, dataset="stereoset")],
                       [rec("lora", 2e-3, val=(0.9, 0.85))], "identity_attack")
    assert list(t["lr"]) == [1e-4, 2e-3, 5e-3]                     # other datasets left out, rates in order
    assert list(t["record"]) == ["pilot", "chapter", "pilot"]
    assert list(t["val accuracy per epoch"]) == ["0.500", "0.900, 0.850", "0.700, 0.800"]
    assert list(t["selected val accuracy"]) == [0.5, 0.9, 0.8]
    assert ex.pilot_table([], [], "identity_attack").empty
