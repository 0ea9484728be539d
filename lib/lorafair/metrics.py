"""Subgroup utility, fairness gaps, calibration and intervals, computed from a predictions table.

Thin wrappers: per-group rates through ``fairlearn.metrics.MetricFrame``, parity gaps through
fairlearn, calibration error through torchmetrics, per-group accuracy intervals through
``scipy.stats.binomtest`` (Wilson), other intervals through ``scipy.stats.bootstrap`` (percentile),
and, where examples must be resampled within strata or as clusters (members and non-members of a
membership attack; all variants of one probed text), through ``stratified_bootstrap``: every
resampling of the study goes through these two helpers.

The metric registry ``METRICS`` says, for every metric the chapters and findings compare, its label,
its per-example score (what a paired analysis pairs), its aggregation and whether higher is better.

Conventions (also in book/methods.md):
- ``ece`` for a binary task is the expected calibration error of the *positive-class probability*
  against the observed positive frequency (torchmetrics' binary definition), 10 equal-width bins, L1.
  For K classes it is the top-label ECE (torchmetrics' multiclass definition), 10 bins.
- ``accuracy_gap`` = max - min of per-group accuracy over groups with at least one example.
- ``equalized_odds_difference`` is taken over the groups that contain both classes (TPR or FPR is
  undefined otherwise); NaN if fewer than two such groups.
- Headline numbers carry a 95% percentile bootstrap interval; the bootstrap for group-level
  statistics resamples *within* each group, so group sizes stay fixed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score
from torchmetrics.functional.classification import (
    binary_calibration_error,
    multiclass_calibration_error,
)

from . import inference

N_BINS = 10
CONFIDENCE = 0.95
#: the quantiles of a 95% percentile interval
PERCENTILES = (0.025, 0.975)


@dataclass(frozen=True)
class Metric:
    name: str
    label: str                          # as shown in tables and in the findings
    higher_is_better: bool              # from the point of view of fairness and privacy
    aggregation: str                    # mean, worst group, gap, calibration, AUC
    per_example: str                    # the per-example score a paired analysis pairs
    score: Callable | None = None       # that score, from a predictions table, where it is a column function


def _correct(preds: pd.DataFrame) -> np.ndarray:
    return (preds["label"].to_numpy() == preds["pred"].to_numpy()).astype(np.float64)


METRICS: dict[str, Metric] = {}


def register_metric(m: Metric) -> Metric:
    METRICS[m.name] = m
    return m


def get_metric(name: str) -> Metric:
    """A metric by key or by label; errors name the valid keys."""
    for m in METRICS.values():
        if name in (m.name, m.label):
            return m
    raise KeyError(f"unknown metric {name!r}; valid choices: {', '.join(METRICS)}")


for _m in (
    Metric("accuracy", "accuracy", True, "mean", "correct (0/1)", _correct),
    Metric("worst_group_accuracy", "worst group accuracy", True, "worst group", "correct (0/1), by group", _correct),
    Metric("accuracy_gap", "accuracy gap", False, "gap (best - worst group)", "correct (0/1), by group", _correct),
    Metric("ece", "ECE", False, "calibration (10 bins)", "confidence and correctness"),
    Metric("ece_ts", "ECE after temperature scaling", False, "calibration (10 bins), one temperature per run "
           "fitted on its validation split", "confidence and correctness"),
    Metric("calibration_gap", "calibration gap (temperature-scaled)", False,
           "largest minus smallest group ECE, after temperature scaling", "confidence and correctness, by group"),
    Metric("calibration_gap_raw", "calibration gap (raw)", False, "largest minus smallest group ECE",
           "confidence and correctness, by group"),
    Metric("lira_auc", "LiRA attack AUC", False, "AUC", "LiRA z-score of member vs non-member"),
    Metric("loss_auc", "loss attack AUC", False, "AUC", "negative loss of member vs non-member"),
    Metric("flip_rate", "token-bias flip rate", False, "mean", "a text's flips, averaged over prompt variants"),
    Metric("stereotype_excess", "stereotype excess, pro - anti", False, "mean",
           "a generation's score: pro +1, anti -1, neutral and unknown 0"),
    Metric("pro_preference", "pro-stereotypical preference (forced choice)", False, "mean",
           "1 if the pro-stereotypical reference is more likely than the anti-stereotypical one"),
):
    register_metric(_m)


def stratified_bootstrap(statistic: Callable[[np.ndarray], object], strata: list[np.ndarray], n_boot: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Statistics of ``n_boot`` resamples, shape (n_boot, k): each resample draws every stratum (an
    array of positions or cluster indices) with replacement at its own size, in order, and passes the
    concatenated draw to ``statistic`` (which may return several values)."""
    out = [np.atleast_1d(np.asarray(statistic(idx), dtype=np.float64)) for idx in stratified_indices(strata, n_boot, rng)]
    return np.array(out).reshape(len(out), -1) if out else np.empty((0, 1))


def stratified_indices(strata: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """The (n_boot, n) positions ``stratified_bootstrap`` draws, in the same order from ``rng``, for
    statistics that are computed on all resamples at once."""
    rows = [np.concatenate([rng.choice(np.asarray(s), len(s)) for s in strata]) for _ in range(max(0, n_boot))]
    return np.array(rows, dtype=np.int64).reshape(len(rows), -1)


def percentile_interval(values) -> list[float]:
    """The 95% percentile interval of resampled values (NaN when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return [float("nan"), float("nan")]
    return [float(np.quantile(v, PERCENTILES[0])), float(np.quantile(v, PERCENTILES[1]))]


def group_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("group_")]


def prob_matrix(df: pd.DataFrame) -> np.ndarray:
    """(n, K) class probabilities from ``prob_0..prob_{K-1}`` columns."""
    cols = sorted((c for c in df.columns if c.startswith("prob_") and c[5:].isdigit()),
                  key=lambda c: int(c[5:]))
    return df[cols].to_numpy(dtype=np.float64)


def is_binary(df: pd.DataFrame) -> bool:
    return prob_matrix(df).shape[1] == 2


def ece(df: pd.DataFrame) -> float:
    """Expected calibration error (see module docstring for the convention)."""
    if len(df) == 0:
        return float("nan")
    target = torch.from_numpy(np.array(df["label"], dtype=np.int64))
    if is_binary(df):
        p = torch.from_numpy(np.array(df["prob"], dtype=np.float64))
        return float(binary_calibration_error(p, target, n_bins=N_BINS, norm="l1"))
    probs = torch.from_numpy(np.array(prob_matrix(df)))
    return float(multiclass_calibration_error(probs, target, num_classes=probs.shape[1],
                                              n_bins=N_BINS, norm="l1"))


def fit_temperature(val: pd.DataFrame) -> float:
    """The temperature T that minimises the log loss of a run's validation predictions with every
    log-probability divided by T (temperature scaling, Guo et al. 2017): one number per run, fitted
    on validation only. T > 1 softens an over-confident model; predictions (the argmax) never change.
    A validation split without both classes' examples or with one example gives T = 1."""
    if len(val) < 2 or val["label"].nunique() < 2:
        return 1.0
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    logp = np.log(np.clip(prob_matrix(val), 1e-12, 1.0))
    y = val["label"].to_numpy(dtype=np.int64)

    def nll(log_t):
        return float(-log_softmax(logp / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())
    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def temperature_scaled(df: pd.DataFrame, temperature: float) -> pd.DataFrame:
    """``df`` with its class probabilities (``prob_k`` and, for two classes, ``prob``) softened or
    sharpened by ``temperature``; labels and predictions unchanged."""
    from scipy.special import softmax

    p = softmax(np.log(np.clip(prob_matrix(df), 1e-12, 1.0)) / temperature, axis=1)
    out = df.copy()
    for k in range(p.shape[1]):
        out[f"prob_{k}"] = p[:, k].astype(np.float32)
    if "prob" in out and p.shape[1] == 2:
        out["prob"] = p[:, 1].astype(np.float32)
    return out


def calibration_gap(df: pd.DataFrame, groups: pd.Series, eligible: list[str]) -> float:
    """The largest minus the smallest ECE among the ``eligible`` groups (``groups``: each row's group)."""
    if len(eligible) < 2:
        return float("nan")
    e = [ece(df[groups.to_numpy() == g]) for g in eligible]
    return float(max(e) - min(e))


def ece_if_calibrated(df: pd.DataFrame, n_sim: int = 100, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model with these predicted probabilities would show on this
    many examples: labels drawn from the model's own probabilities ``n_sim`` times, the mean ECE.
    ECE is biased upwards on small groups; a group's ECE means something only beside this value.

    All draws at once: the confidence and its bin do not depend on the label, so each draw's ECE is
    the sum over bins of |correct - confidence| summed in the bin, over n (the binning of ``ece``:
    ``N_BINS`` equal-width bins, right-closed, as torchmetrics; a test checks the two agree)."""
    if len(df) == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    binary = is_binary(df)
    n = len(df)
    if binary:
        conf = np.array(df["prob"], dtype=np.float64)
        correct = rng.random((n_sim, n)) < conf                       # the drawn label is 1: "correct"
    else:
        probs = np.asarray(prob_matrix(df), dtype=np.float64)
        cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
        u = rng.random((n_sim, n))
        labels = np.minimum((u[:, :, None] > cum[None]).sum(axis=2), probs.shape[1] - 1)
        conf = probs.max(axis=1)
        correct = labels == probs.argmax(axis=1)[None]
    bins = np.searchsorted(np.linspace(0, 1, N_BINS + 1), conf, side="right") - 1
    onehot = np.zeros((n, N_BINS + 1))
    onehot[np.arange(n), bins] = 1.0
    per_draw = np.abs(correct.astype(np.float64) @ onehot - conf @ onehot).sum(axis=1) / n
    return float(per_draw.mean())


def wilson_interval(k: int, n: int) -> list[float]:
    if n == 0:
        return [float("nan"), float("nan")]
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return [float(ci.low), float(ci.high)]


def _bootstrap(samples: tuple, statistic, n_boot: int, seed: int, paired: bool = False) -> list[float]:
    if n_boot <= 0 or any(len(s) < 2 for s in samples):
        return [float("nan"), float("nan")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples (all equal) are fine for percentiles
        res = stats.bootstrap(samples, statistic, n_resamples=n_boot, confidence_level=CONFIDENCE,
                              method="percentile", paired=paired, vectorized=True,
                              random_state=np.random.default_rng(seed))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def _worst(*groups, axis=-1):
    return np.min(np.stack([g.mean(axis=axis) for g in groups]), axis=0)


def _gap(*groups, axis=-1):
    accs = np.stack([g.mean(axis=axis) for g in groups])
    return accs.max(axis=0) - accs.min(axis=0)


#: The smallest number of test examples a group needs *in every seed* to enter a worst-group
#: accuracy or an accuracy gap (amendment 8 of book/design.md; 30 before). Smaller groups are reported
#: apart, with their counts: the accuracy of a group of 30 has a sampling SD of up to 0.09, nearly
#: twice the worst-group margin; at 100 it is at most 0.05.
MIN_GROUP_N = 100


def claim_groups(groups, blocks=None, min_n: int = MIN_GROUP_N) -> tuple[list[str], dict[str, int]]:
    """The groups big enough to carry a worst-group claim and every group's smallest per-block count.

    ``groups``: the group of each test row; ``blocks``: the seed (or run) of each row, when several
    seeds' test sets are stacked. A group qualifies if it has at least ``min_n`` rows in every block
    (a group missing from a block has 0 there), and only if at least two groups do: a worst group
    and a gap compare groups. Returns (qualifying groups, {group: smallest count})."""
    g = pd.Series(np.asarray(groups).astype(str))
    b = pd.Series(np.zeros(len(g)) if blocks is None else np.asarray(blocks))
    counts = pd.crosstab(g, b)  # groups x blocks, 0 where absent
    smallest = {str(k): int(v) for k, v in counts.min(axis=1).items()}
    eligible = sorted(k for k, v in smallest.items() if v >= min_n)
    return (eligible if len(eligible) >= 2 else []), smallest


def exact_interval(k: int, n: int) -> list[float]:
    """Clopper-Pearson (exact binomial) 95% interval of ``k`` successes in ``n``: for small groups."""
    if n == 0:
        return [float("nan"), float("nan")]
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return [float(ci.low), float(ci.high)]


#: A run counts as having learned its task only if, on its own validation split, its accuracy beats
#: the validation majority-class rate by more than this margin and it predicts more than one class
#: (``learned_gate``). Registered in book/design.md.
GATE_MARGIN = 0.02


def learned_gate(preds: pd.DataFrame, margin: float = GATE_MARGIN) -> dict:
    """The per-run gate, read on the run's validation split only (never test, never pooled over
    seeds): ``passed`` if validation accuracy > majority rate + ``margin`` and more than one class is
    predicted on validation; with the numbers and the reason it failed. A run without a validation
    split (a shadow model) has ``passed`` None. The comparison is made on counts (correct minus
    majority-class examples against ``margin`` times the split's size, to 1e-9), so a run exactly at
    the majority rate plus ``margin`` fails ("more than") whatever the floating-point rounding."""
    v = preds[preds["split"] == "val"]
    if not len(v):
        return {"passed": None, "val_n": 0, "val_accuracy": float("nan"), "majority": float("nan"),
                "classes_predicted": 0, "reason": "no validation split"}
    acc = float((v["label"] == v["pred"]).mean())
    majority = float(v["label"].value_counts(normalize=True).max())
    classes = int(v["pred"].nunique())
    reasons = []
    if classes < 2:
        reasons.append("predicts one class on validation")
    n_major = int(v["label"].value_counts().max())
    if not int((v["label"] == v["pred"]).sum()) - n_major > margin * len(v) + 1e-9:
        reasons.append(f"validation accuracy {acc:.3f} does not beat the majority rate {majority:.3f} by {margin}")
    return {"passed": not reasons, "val_n": int(len(v)), "val_accuracy": acc, "majority": majority,
            "classes_predicted": classes, "reason": "; ".join(reasons)}


def seed_worst_group_difference(correct_a, correct_b, groups, blocks=None, min_n: int = MIN_GROUP_N) -> dict:
    """Worst-group accuracy of A minus that of B on the same test rows, with the seed as the unit:
    per block (the seed of each row, when several seeds' test sets are stacked), each method's own
    worst group among the groups that ``claim_groups`` lets carry a claim, and the difference of
    their accuracies; the mean over blocks with its t-interval over blocks (``inference.seed_summary``,
    no interval from one block). A percentile bootstrap of a minimum over groups would be biased, so
    none is used. Also names the eligible groups (``groups``), every block's worst groups (``worst``)
    and the too-small groups with their smallest count (``small_groups``)."""
    g = np.asarray(groups).astype(str)
    b = np.zeros(len(g)) if blocks is None else np.asarray(blocks)
    a, c = np.asarray(correct_a, dtype=np.float64), np.asarray(correct_b, dtype=np.float64)
    eligible, smallest = claim_groups(g, b, min_n)
    per_seed, worst = {}, set()
    for blk in pd.unique(b):
        m = (b == blk) & np.isin(g, eligible)
        if not m.any():
            continue
        acc_a = pd.Series(a[m]).groupby(g[m]).mean()
        acc_b = pd.Series(c[m]).groupby(g[m]).mean()
        per_seed[blk.item() if hasattr(blk, "item") else blk] = float(acc_a.min() - acc_b.min())
        worst |= {acc_a.idxmin(), acc_b.idxmin()}
    s = inference.seed_summary(list(per_seed.values()), inference.margin("worst_group_accuracy"))
    return {"difference": s["difference"], "ci": [s["lo"], s["hi"]], "per_seed": per_seed, "seeds": s["seeds"],
            "groups": eligible, "worst": sorted(worst),
            "small_groups": {k: v for k, v in smallest.items() if k not in eligible}}


def group_gap_summary(correct, groups, eligible, n_boot: int = 1000, seed: int = 0) -> dict:
    """Worst group, worst-group accuracy and accuracy gap over the ``eligible`` groups only (one run's
    test rows), with percentile bootstrap intervals (groups resampled separately)."""
    correct = np.asarray(correct, dtype=np.float64)
    groups = np.asarray(groups).astype(str)
    per = {g: correct[groups == g] for g in eligible if (groups == g).any()}
    if not per:
        nan = float("nan")
        return {"worst_group": None, "worst_group_accuracy": {"value": nan, "ci": [nan, nan]},
                "accuracy_gap": {"value": nan, "ci": [nan, nan]}}
    acc = {g: float(v.mean()) for g, v in per.items()}
    worst = min(acc, key=acc.get)
    return {"worst_group": worst,
            "worst_group_accuracy": {"value": acc[worst], "ci": _bootstrap(tuple(per.values()), _worst, n_boot, seed)},
            "accuracy_gap": {"value": max(acc.values()) - acc[worst],
                             "ci": _bootstrap(tuple(per.values()), _gap, n_boot, seed)}}


def _binary_rates(df: pd.DataFrame, sensitive: pd.Series) -> pd.DataFrame:
    from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate

    mf = MetricFrame(
        metrics={"tpr": true_positive_rate, "fpr": false_positive_rate,
                 "selection_rate": selection_rate,
                 "f1": lambda y, p: f1_score(y, p, zero_division=0)},
        y_true=df["label"], y_pred=df["pred"], sensitive_features=sensitive,
    )
    return mf.by_group


def classification_metrics(df: pd.DataFrame, split: str = "test", n_boot: int = 1000,
                           seed: int = 0) -> dict:
    """All aggregates of one evaluated split of a predictions table (see the run-record contract)."""
    # imported here so that the training path imports without fairlearn (the GPU image lacks it)
    from fairlearn.metrics import MetricFrame, count, demographic_parity_difference, equalized_odds_difference

    d = df[df["split"] == split].reset_index(drop=True)
    if len(d) == 0:
        raise ValueError(f"no rows with split == {split!r}")
    correct = (d["label"].to_numpy() == d["pred"].to_numpy()).astype(np.float64)
    binary = is_binary(d)
    out: dict = {
        "split": split,
        "n": int(len(d)),
        "task": "binary" if binary else f"multiclass_{prob_matrix(d).shape[1]}",
        "accuracy": {"value": float(accuracy_score(d["label"], d["pred"])),
                     "ci": wilson_interval(int(correct.sum()), len(d))},
        "macro_f1": float(f1_score(d["label"], d["pred"], average="macro", zero_division=0)),
        "mean_loss": float(d["loss"].mean()),
        "ece": {"value": ece(d), "ci": _bootstrap(
            (np.arange(len(d)),), lambda i, axis=-1: _ece_vectorized(d, i), min(n_boot, 200), seed)},
        "attributes": {},
    }
    for col in group_columns(d):
        attr = col[len("group_"):]
        sens = d[col].astype(str)
        mf = MetricFrame(metrics={"accuracy": accuracy_score, "count": count},
                         y_true=d["label"], y_pred=d["pred"], sensitive_features=sens)
        by = mf.by_group
        groups = {}
        per_group_correct = []
        for g in by.index:
            mask = (sens == g).to_numpy()
            n_g = int(by.loc[g, "count"])
            k_g = int(correct[mask].sum())
            groups[str(g)] = {"count": n_g, "accuracy": float(by.loc[g, "accuracy"]),
                              "accuracy_ci": wilson_interval(k_g, n_g), "ece": ece(d[mask])}
            per_group_correct.append(correct[mask])
        entry = {
            "groups": groups,
            "worst_group": str(by["accuracy"].idxmin()),
            "worst_group_accuracy": {"value": float(mf.group_min()["accuracy"]),
                                     "ci": _bootstrap(tuple(per_group_correct), _worst, n_boot, seed)},
            "accuracy_gap": {"value": float(mf.difference(method="between_groups")["accuracy"]),
                             "ci": _bootstrap(tuple(per_group_correct), _gap, n_boot, seed)},
        }
        eces = [v["ece"] for v in groups.values()]
        entry["ece_gap"] = float(np.nanmax(eces) - np.nanmin(eces))
        if binary:
            rates = _binary_rates(d, sens)
            for g in rates.index:
                groups[str(g)].update({k: float(v) for k, v in rates.loc[g].items()})
            entry["demographic_parity_difference"] = float(
                demographic_parity_difference(d["label"], d["pred"], sensitive_features=sens))
            # TPR/FPR are undefined for a group without positives/negatives (fairlearn would count
            # them as 0): equalized odds is computed over the groups that contain both classes.
            both = d.groupby(sens)["label"].transform("nunique").to_numpy() == 2
            entry["equalized_odds_difference"] = float(
                equalized_odds_difference(d["label"][both], d["pred"][both], sensitive_features=sens[both])
            ) if sens[both].nunique() >= 2 else float("nan")
        out["attributes"][attr] = entry
    return out


def _ece_vectorized(d: pd.DataFrame, idx: np.ndarray) -> np.ndarray:
    idx = np.atleast_2d(idx)
    return np.array([ece(d.iloc[row]) for row in idx])


def verdict(ci) -> str:
    """"higher" / "lower" when a difference's interval excludes zero, else "indistinguishable"."""
    if not np.isnan(ci[0]) and ci[0] > 0:
        return "higher"
    if not np.isnan(ci[1]) and ci[1] < 0:
        return "lower"
    return "indistinguishable"


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of ``a - b`` over paired observations with a percentile bootstrap interval.

    Used for LoRA-minus-full differences: ``a`` and ``b`` are per-example correctness (same test
    examples) or per-seed metric values (same seeds)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    diff = float(np.mean(a - b))
    ci = _bootstrap((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis), n_boot, seed, paired=True)
    return {"difference": diff, "ci": ci, "n": int(a.size), "verdict": verdict(ci)}
