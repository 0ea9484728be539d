import numpy as np
import pandas as pd
import pytest

from lorafair import experiments as ex
from lorafair import mia, splits
from lorafair.runs import RunStore


def synthetic(n=4000, n_shadows=16, signal=1.0, seed=0):
    """Per-example difficulty varies a lot (hard examples have low confidence for every model);
    members get ``signal`` extra logit-confidence in the target. Shadows are OUT models."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 3, n)                 # per-example mean confidence
    member = rng.random(n) < 0.5
    ids = [f"x{i:05d}" for i in range(n)]
    target_phi = difficulty + rng.normal(0, 0.3, n) + signal * member
    target = pd.DataFrame({"example_id": ids, "split": np.where(member, "train", "test"),
                           "confidence_logit": target_phi, "loss": np.log1p(np.exp(-target_phi)),
                           "group_g": rng.choice(["a", "b"], n)})
    shadows = [pd.DataFrame({"example_id": ids, "split": "test",
                             "confidence_logit": difficulty + rng.normal(0, 0.3, n)}) for _ in range(n_shadows)]
    return target, shadows


def test_planted_signal_detected_and_lira_beats_loss_at_low_fpr():
    target, shadows = synthetic(signal=1.0)
    loss = mia.attack_metrics(mia.loss_scores(target), "g", n_boot=50)["overall"]
    lira = mia.attack_metrics(mia.lira_scores(target, shadows), "g", n_boot=50)["overall"]
    assert loss["auc"] > 0.55 and lira["auc"] > 0.9
    assert lira["tpr_at_0.01_fpr"] > 5 * max(loss["tpr_at_0.01_fpr"], 0.01)
    assert lira["auc_ci"][0] > 0.85
    lo, hi = lira["tpr_at_0.01_fpr_ci"]
    assert lo <= lira["tpr_at_0.01_fpr"] <= hi and lo > loss["tpr_at_0.01_fpr"]


def test_no_signal_gives_auc_near_half():
    target, shadows = synthetic(signal=0.0, seed=1)
    for scores in (mia.loss_scores(target), mia.lira_scores(target, shadows),
                   mia.lira_scores(target, shadows, global_variance=True)):
        m = mia.attack_metrics(scores, "g", n_boot=100)["overall"]
        assert abs(m["auc"] - 0.5) < 0.04
        assert m["auc_ci"][0] < 0.5 < m["auc_ci"][1]


def test_shadow_trained_on_attacked_example_is_rejected():
    target, shadows = synthetic(n=100, n_shadows=3)
    shadows[0].loc[0, "split"] = "train"
    with pytest.raises(ValueError, match="OUT models"):
        mia.lira_scores(target, shadows)


def test_tpr_at_fpr_hand_case():
    member = np.array([1, 1, 1, 0, 0, 0, 0])
    score = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.3, 0.05])
    # threshold above 0.7: FPR 0, TPR 2/3
    assert mia.tpr_at_fpr(member, score, 0.0) == pytest.approx(2 / 3)


def test_mia_splits_and_membership_is_the_targets_training_set(smoke_kwargs, tmp_path):
    runner = ex.ClassificationRunner(RunStore(tmp_path), "openmoji_people", smoke_kwargs, progress=False)
    ds = runner.dataset
    base = splits.mia_target_split(ds, 13)
    assert base.value_counts().to_dict().keys() == {"train", "val", "test", "pool"}
    sh = splits.mia_shadow_split(ds, 13, 2044)
    assert set(sh[sh == "train"].index) <= set(base[base == "pool"].index)
    assert not (set(sh[sh == "train"].index) & set(base[base.isin(["train", "test"])].index))

    def cfg(method, design):
        return ex.classification_config("membership_inference", "smoke", "openmoji_people", smoke_kwargs,
                                        "vit_tiny_random", method, 13, 1, 1e-3, 16, n_boot=20,
                                        split_design=design, select="last" if design["kind"] == "mia_shadow" else "best_val")

    target = runner.run(cfg("lora", {"kind": "mia_target", "seed": 13}))
    shadows = [runner.run(cfg("lora", {"kind": "mia_shadow", "seed": 13, "shadow_seed": s})) for s in (1, 2)]
    t = target.predictions()
    d = mia.membership(t)
    ids = ds.table["example_id"].to_numpy()
    assert set(d.loc[d["member"] == 1, "example_id"]) == set(ids[(base == "train").to_numpy()])
    assert set(d.loc[d["member"] == 0, "example_id"]) == set(ids[(base == "test").to_numpy()])
    scores = mia.lira_scores(t, [s.predictions() for s in shadows])
    assert len(scores) == (base.isin(["train", "test"])).sum()


def test_paired_auc_difference():
    target, shadows = synthetic(signal=1.0, seed=3)
    lira, loss = mia.lira_scores(target, shadows), mia.loss_scores(target)
    d = mia.paired_auc_difference(lira, loss, n_boot=100)
    assert d["verdict"] == "higher" and d["ci"][0] <= d["difference"] <= d["ci"][1]
    same = mia.paired_auc_difference(lira, lira, n_boot=50)
    assert same["difference"] == 0 and same["verdict"] == "indistinguishable"


def test_global_variance_pools_the_within_example_variance():
    """With per-example means far apart, the global SD must be the within-example SD (about the
    shadows' noise, 0.3 here), not the SD of the whole matrix (dominated by the 3.0 spread of means)."""
    target, shadows = synthetic(n=500, signal=0.0, seed=2)
    d = mia.lira_scores(target, shadows, global_variance=True)
    assert d["shadow_std"].nunique() == 1
    assert d["shadow_std"].iloc[0] == pytest.approx(0.3, abs=0.03)
    per_example = mia.lira_scores(target, shadows)
    assert per_example["shadow_std"].mean() == pytest.approx(0.3, abs=0.03)


def test_low_fpr_is_flagged_when_non_members_cannot_resolve_it():
    assert mia.resolves(100, 0.01) and not mia.resolves(99, 0.01)
    assert mia.resolves(1000, 0.001) and not mia.resolves(999, 0.001)
    target, shadows = synthetic(n=300, signal=1.0, seed=3)
    res = {("lora", "lira"): mia.attack_metrics(mia.lira_scores(target, shadows), "g", n_boot=10)}
    t = mia.attack_table(res, "g").set_index("group")
    for g, row in t.iterrows():
        assert row["tpr_at_1%_resolved"] == (row["non_members"] >= 100)
        assert not row["tpr_at_0.1%_resolved"]  # ~150 non-members cannot resolve 0.1%


def test_resampled_auc_equals_roc_auc_score_on_every_resample():
    """The rank form used inside the bootstraps gives scikit-learn's AUC, ties included, on the very
    resamples the per-resample loop would draw."""
    from sklearn.metrics import roc_auc_score

    from lorafair import metrics

    rng = np.random.default_rng(4)
    y = (rng.random(120) < 0.4).astype(int)
    s = np.round(rng.normal(size=120) + 0.5 * y, 1)  # rounded: many ties
    strata = [np.flatnonzero(y == 1), np.flatnonzero(y == 0)]
    idx = metrics.stratified_indices(strata, 25, np.random.default_rng(9))
    fast = mia._resampled_auc(y, s, idx)
    slow = metrics.stratified_bootstrap(lambda i: roc_auc_score(y[i], s[i]), strata, 25, np.random.default_rng(9))[:, 0]
    assert np.allclose(fast, slow, atol=1e-12)


def test_resampled_tprs_equal_the_roc_curve_interpolation_on_every_resample():
    """The check-free ROC inside the TPR bootstraps gives the TPR scikit-learn's roc_curve
    interpolates at each FPR (ties and collinear points included) on every resample."""
    from lorafair import metrics

    rng = np.random.default_rng(6)
    y = (rng.random(300) < 0.5).astype(int)
    s = np.round(rng.normal(size=300) + 0.8 * y, 1)  # rounded: many ties
    idx = metrics.stratified_indices([np.flatnonzero(y == 1), np.flatnonzero(y == 0)], 40, np.random.default_rng(2))
    levels = [0.01, 0.05, 0.2, 0.5]
    fast = mia._resampled_tprs(y, s, idx, levels)
    slow = np.array([mia.tprs_at_fprs(y[i], s[i], levels) for i in idx])
    assert np.allclose(fast, slow, atol=1e-12)
