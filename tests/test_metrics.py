import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lorafair import metrics as M


def binary_frame():
    # group a: labels 1,1,0,0 preds 1,0,0,0 ; group b: labels 1,0,1,0 preds 1,1,1,0
    return pd.DataFrame({
        "example_id": [f"e{i}" for i in range(8)],
        "split": ["test"] * 8,
        "label": [1, 1, 0, 0, 1, 0, 1, 0],
        "pred": [1, 0, 0, 0, 1, 1, 1, 0],
        "prob": [0.9, 0.4, 0.2, 0.1, 0.8, 0.7, 0.6, 0.3],
        "loss": [0.1] * 8,
        "group_g": ["a"] * 4 + ["b"] * 4,
    }).assign(prob_0=lambda d: 1 - d["prob"], prob_1=lambda d: d["prob"])


def test_accuracy_groups_gaps_hand_computed():
    m = M.classification_metrics(binary_frame(), n_boot=200)
    assert m["accuracy"]["value"] == pytest.approx(6 / 8)
    g = m["attributes"]["g"]
    assert g["groups"]["a"]["accuracy"] == pytest.approx(3 / 4)
    assert g["groups"]["b"]["accuracy"] == pytest.approx(3 / 4)
    assert g["groups"]["a"]["count"] == 4
    assert g["worst_group_accuracy"]["value"] == pytest.approx(0.75)
    assert g["accuracy_gap"]["value"] == pytest.approx(0.0)
    # selection rate a = 1/4, b = 3/4 -> DP difference 0.5
    assert g["demographic_parity_difference"] == pytest.approx(0.5)
    # TPR a = 1/2, b = 2/2 ; FPR a = 0/2, b = 1/2 -> EO difference max(0.5, 0.5) = 0.5
    assert g["equalized_odds_difference"] == pytest.approx(0.5)
    assert g["groups"]["a"]["tpr"] == pytest.approx(0.5)
    assert g["groups"]["b"]["fpr"] == pytest.approx(0.5)


def test_binary_ece_hand_computed():
    # all probabilities 0.85 (one bin), 3 of 4 positive -> |0.85 - 0.75| = 0.10
    df = pd.DataFrame({"label": [1, 1, 1, 0], "prob": [0.85] * 4, "prob_0": [0.15] * 4, "prob_1": [0.85] * 4})
    assert M.ece(df) == pytest.approx(0.10)
    # two bins: 0.15 (2 examples, 1 positive: |0.15 - 0.5| = 0.35) and 0.95 (2 ex., 2 pos.: 0.05)
    df = pd.DataFrame({"label": [1, 0, 1, 1], "prob": [0.15, 0.15, 0.95, 0.95]})
    df["prob_0"], df["prob_1"] = 1 - df["prob"], df["prob"]
    assert M.ece(df) == pytest.approx(0.5 * 0.35 + 0.5 * 0.05)


def test_multiclass_top_label_ece_hand_computed():
    probs = np.array([[0.65, 0.2, 0.15], [0.65, 0.15, 0.2], [0.1, 0.75, 0.15], [0.05, 0.05, 0.9]])
    labels = [0, 1, 1, 2]
    df = pd.DataFrame(probs, columns=["prob_0", "prob_1", "prob_2"]).assign(label=labels)
    # bins [0.6,0.7): 2 ex., 1 correct: |0.65-0.5|=0.15; [0.7,0.8): 1 correct: 0.25; [0.9,1]: 0.1
    expected = (2 * 0.15 + 0.25 + 0.1) / 4
    assert M.ece(df) == pytest.approx(expected)


def test_wilson_interval_formula():
    k, n, z = 7, 10, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = M.wilson_interval(k, n)
    assert lo == pytest.approx(centre - half, abs=1e-6)
    assert hi == pytest.approx(centre + half, abs=1e-6)


def test_bootstrap_intervals_contain_estimate_and_are_reproducible():
    rng = np.random.default_rng(1)
    n = 300
    df = pd.DataFrame({"example_id": range(n), "split": "test", "label": rng.integers(0, 2, n)})
    df["prob"] = np.clip(df["label"] * 0.6 + rng.random(n) * 0.4, 0, 1)
    df["pred"] = (df["prob"] > 0.5).astype(int)
    df["prob_0"], df["prob_1"], df["loss"] = 1 - df["prob"], df["prob"], 0.0
    df["group_g"] = rng.choice(["x", "y", "z"], n, p=[0.6, 0.3, 0.1])
    m1 = M.classification_metrics(df, n_boot=300, seed=3)
    m2 = M.classification_metrics(df, n_boot=300, seed=3)
    w = m1["attributes"]["g"]["worst_group_accuracy"]
    assert w["ci"][0] <= w["value"] <= w["ci"][1]
    assert m1 == m2


def test_paired_difference_verdicts():
    a = np.array([1, 1, 1, 1, 0, 1, 1, 1] * 20)
    same = M.paired_difference(a, a, n_boot=200)
    assert same["difference"] == 0 and same["verdict"] == "indistinguishable"
    better = M.paired_difference(np.ones(160), np.zeros(160) + (np.arange(160) % 2), n_boot=200)
    assert better["difference"] == pytest.approx(0.5) and better["verdict"] == "higher"
    with pytest.raises(ValueError):
        M.paired_difference(np.ones(3), np.ones(4))


def test_seed_worst_group_difference_is_per_seed_with_a_seed_level_interval():
    """Each seed's own worst groups (which may differ between the methods), the mean over seeds and
    the t-interval over them; no percentile bootstrap of a minimum."""
    # seed 0: A worst 0.5 (group b), B worst 0.25 (group a) -> +0.25
    # seed 1: A worst 0.0 (group a), B worst 1.0 (both)    -> -1.0
    # seed 2: A worst 0.5 (a), B worst 0.5 (b)              ->  0.0
    g = np.array(["a"] * 4 + ["b"] * 4 + ["a"] * 2 + ["b"] * 2 + ["a"] * 2 + ["b"] * 2)
    blocks = np.array([0] * 8 + [1] * 4 + [2] * 4)
    ca = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 1, 1])
    cb = np.array([1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    d = M.claim_groups(g, blocks, min_n=2)[0]
    assert d == ["a", "b"]
    w = M.seed_worst_group_difference(ca, cb, g, blocks, min_n=2)
    assert w["per_seed"] == {0: pytest.approx(0.25), 1: pytest.approx(-1.0), 2: pytest.approx(0.0)}
    assert w["difference"] == pytest.approx(-0.25) and w["worst"] == ["a", "b"]
    half = stats.t.ppf(0.975, 2) * np.std([0.25, -1.0, 0.0], ddof=1) / np.sqrt(3)
    assert w["ci"] == pytest.approx([-0.25 - half, -0.25 + half])


def _overconfident(n, temperature, seed):
    """Binary predictions whose true log-odds are the reported log-odds divided by ``temperature``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, n)                       # reported log-odds
    y = (rng.random(n) < 1 / (1 + np.exp(-z / temperature))).astype(int)
    p1 = 1 / (1 + np.exp(-z))
    return pd.DataFrame({"label": y, "pred": (p1 > 0.5).astype(int), "prob": p1, "prob_0": 1 - p1, "prob_1": p1})


def test_temperature_scaling_recovers_a_planted_temperature_and_removes_the_miscalibration():
    val, test = _overconfident(4000, 2.5, 0), _overconfident(4000, 2.5, 1)
    t = M.fit_temperature(val)
    assert t == pytest.approx(2.5, rel=0.1)
    scaled = M.temperature_scaled(test, t)
    assert (scaled["pred"] == test["pred"]).all() and np.allclose(scaled["prob"], scaled["prob_1"], atol=1e-6)
    assert M.ece(test) > 0.08 and M.ece(scaled) < 0.03
    # a calibrated model keeps T near 1; a validation split of one class gives T = 1
    assert M.fit_temperature(_overconfident(4000, 1.0, 2)) == pytest.approx(1.0, abs=0.1)
    assert M.fit_temperature(val[val["label"] == 1]) == 1.0
    # multi-class: the scaled rows still sum to 1 and keep their argmax
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(4) * 0.3, 500)
    df = pd.DataFrame({f"prob_{k}": p[:, k] for k in range(4)}).assign(label=rng.integers(0, 4, 500), pred=p.argmax(1))
    s = M.temperature_scaled(df, 3.0)
    assert np.allclose(M.prob_matrix(s).sum(1), 1, atol=1e-5) and (M.prob_matrix(s).argmax(1) == p.argmax(1)).all()


def test_calibration_gap_is_the_spread_of_eligible_groups_ece():
    a, b = _overconfident(1000, 1.0, 4), _overconfident(1000, 4.0, 5)
    df = pd.concat([a, b], ignore_index=True)
    g = pd.Series(["a"] * 1000 + ["b"] * 1000)
    gap = M.calibration_gap(df, g, ["a", "b"])
    assert gap == pytest.approx(abs(M.ece(b) - M.ece(a)), abs=1e-9) and gap > 0.05
    assert np.isnan(M.calibration_gap(df, g, ["a"]))
