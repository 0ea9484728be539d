"""Membership inference per subgroup: the loss-threshold attack and offline LiRA.

Data design (``lorafair.splits``: ``mia_target`` and ``mia_shadow``): for a seed, every example is
in the target's ``train`` split (its *members*), ``val`` (not attacked), ``test`` (its *non-members*)
or ``pool`` (the shadow models' data; each shadow trains on a random half of it). Shadows never see M or N, so every shadow is an OUT model for every attacked example (offline
LiRA, as the original study). Fix over the original: membership labels are read from the target's
own stored ``split`` column, i.e. its real training set.

Scores (higher = "member"): loss attack ``-loss``; LiRA the one-sided z-score
``(phi_target - mean(phi_shadows)) / std(phi_shadows)`` of the logit-scaled confidence
``phi = log p_y - log(1 - p_y)`` (per-example variance, or one global variance: the mean over
examples of the per-example variance, as Carlini et al.'s offline LiRA pools it). ROC metrics are
invariant to monotone transforms, so z stands for ``Phi(z)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score, roc_curve

from .metrics import percentile_interval, stratified_indices, verdict

def membership(target: pd.DataFrame) -> pd.DataFrame:
    """The attacked examples of a target: members (its train split) and non-members (its test split)."""
    d = target[target["split"].isin(["train", "test"])].copy()
    d["member"] = (d["split"] == "train").astype(int)
    return d.sort_values("example_id").reset_index(drop=True)


def loss_scores(target: pd.DataFrame) -> pd.DataFrame:
    d = membership(target)
    d["score"] = -d["loss"]
    return d


def lira_scores(target: pd.DataFrame, shadows: list[pd.DataFrame], global_variance: bool = False) -> pd.DataFrame:
    """Offline LiRA: per example, a Gaussian fitted to the OUT shadows' logit-scaled confidence."""
    d = membership(target)
    if len(shadows) < 2:
        raise ValueError("offline LiRA needs at least 2 shadow models")
    phis = []
    for s in shadows:
        s = s.set_index("example_id")
        trained = set(s.index[s["split"] == "train"])
        if trained & set(d["example_id"]):
            raise ValueError("a shadow model was trained on an attacked example; shadows must be OUT models")
        phis.append(s.loc[d["example_id"], "confidence_logit"].to_numpy())
    phi = np.stack(phis)  # (shadows, examples)
    mu = phi.mean(axis=0)
    if global_variance:  # one variance for all examples: the mean of the per-example (within) variances
        sd = np.full(phi.shape[1], np.sqrt(np.mean(phi.var(axis=0, ddof=1))))
    else:
        sd = phi.std(axis=0, ddof=1)
    d["shadow_mean"], d["shadow_std"] = mu, sd
    d["score"] = (d["confidence_logit"].to_numpy() - mu) / np.maximum(sd, 1e-8)
    return d


def tpr_at_fpr(member: np.ndarray, score: np.ndarray, fpr_level: float) -> float:
    """TPR at a fixed false-positive rate, interpolated on the ROC curve."""
    return tprs_at_fprs(member, score, [fpr_level])[0]


def tprs_at_fprs(member: np.ndarray, score: np.ndarray, fpr_levels) -> list[float]:
    """TPR at each false-positive rate, from one ROC curve."""
    fpr, tpr, _ = roc_curve(member, score)
    return [float(np.interp(f, fpr, tpr)) for f in fpr_levels]


def _roc_points(member: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve's points (FPR, TPR) at every distinct score, from (0, 0), without input
    checks: scikit-learn's ``roc_curve`` without dropping collinear points, which leaves every
    linear interpolation on the curve unchanged (tested), at a fraction of the cost per resample."""
    order = np.argsort(-score, kind="mergesort")
    y, s = member[order].astype(np.float64), score[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # the last row of each tied score
    tps, fps = np.cumsum(y)[last], np.cumsum(1 - y)[last]
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def _resampled_tprs(member: np.ndarray, score: np.ndarray, idx: np.ndarray, fpr_levels) -> np.ndarray:
    """TPR at each FPR level for every resample (rows of ``idx``): (resamples, levels)."""
    out = np.empty((len(idx), len(fpr_levels)))
    for k, i in enumerate(idx):
        fpr, tpr = _roc_points(member[i], score[i])
        out[k] = np.interp(fpr_levels, fpr, tpr)
    return out


def _resampled_auc(member: np.ndarray, score: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """ROC AUC of every resample (rows of ``idx``) at once, from average ranks (the Mann-Whitney
    form, equal to scikit-learn's ``roc_auc_score`` with ties counted half). Members and
    non-members must be resampled separately, so every row has the same counts of each."""
    y, s = member[idx], score[idx]
    n1 = y[0].sum()
    n0 = y.shape[1] - n1
    ranks = rankdata(s, axis=1)
    return ((ranks * y).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def attack_metrics(d: pd.DataFrame, attribute: str | None = None, n_boot: int = 200, seed: int = 0,
                   fpr_levels=(0.01, 0.001)) -> dict:
    """AUC (with a bootstrap interval) and TPR at fixed FPRs, overall and per group."""
    def one(sub: pd.DataFrame) -> dict:
        y, s = sub["member"].to_numpy(), sub["score"].to_numpy()
        out = {"members": int(y.sum()), "non_members": int((1 - y).sum())}
        if y.min() == y.max():
            return {**out, "auc": float("nan"), "auc_ci": [float("nan")] * 2,
                    **{f"tpr_at_{f:g}_fpr": float("nan") for f in fpr_levels}}
        out["auc"] = float(roc_auc_score(y, s))

        # members and non-members resampled separately (stratified); a TPR at an FPR that the
        # non-members cannot resolve (``resolves``) gets no interval, so its resamples are skipped
        idx = stratified_indices([np.flatnonzero(y == 1), np.flatnonzero(y == 0)], n_boot, np.random.default_rng(seed))
        out["auc_ci"] = percentile_interval(_resampled_auc(y, s, idx))
        levels = [f for f in fpr_levels if resolves(out["non_members"], f)]
        tprs = _resampled_tprs(y, s, idx, levels) if levels else np.empty((0, 0))
        for f in fpr_levels:
            out[f"tpr_at_{f:g}_fpr"] = tpr_at_fpr(y, s, f)
            out[f"tpr_at_{f:g}_fpr_ci"] = (percentile_interval(tprs[:, levels.index(f)]) if f in levels
                                           else [float("nan"), float("nan")])
        return out

    res = {"overall": one(d)}
    if attribute:
        res["groups"] = {str(g): one(sub) for g, sub in d.groupby(f"group_{attribute}", sort=True)}
    return res


def _fmt_ci(ci) -> str:
    return "" if not ci or np.isnan(ci[0]) else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def roc_points(d: pd.DataFrame) -> pd.DataFrame:
    fpr, tpr, _ = roc_curve(d["member"], d["score"])
    return pd.DataFrame({"fpr": fpr, "tpr": tpr})


def resolves(non_members: int, fpr_level: float) -> bool:
    """Whether ``non_members`` can resolve a false-positive rate: at least 1 / FPR of them (below
    that, "TPR at this FPR" is the TPR at zero false positives)."""
    return non_members * fpr_level >= 1 - 1e-9


def attack_table(results: dict, attribute: str) -> pd.DataFrame:
    """Rows (method, attack, group) from {(method, attack): attack_metrics(...)}; ``tpr_at_*_resolved``
    says whether the group's non-members can resolve that FPR (``resolves``)."""
    rows = []
    for (method, attack), m in results.items():
        for g, v in [("all", m["overall"])] + sorted(m.get("groups", {}).items()):
            rows.append({"method": method, "attack": attack, "group": g, "members": v["members"],
                         "non_members": v["non_members"], "auc": v["auc"], "auc_lo": v["auc_ci"][0],
                         "auc_hi": v["auc_ci"][1], "tpr_at_1%_fpr": v.get("tpr_at_0.01_fpr"),
                         "tpr_at_1%_ci": _fmt_ci(v.get("tpr_at_0.01_fpr_ci")),
                         "tpr_at_0.1%_fpr": v.get("tpr_at_0.001_fpr"),
                         "tpr_at_0.1%_ci": _fmt_ci(v.get("tpr_at_0.001_fpr_ci")),
                         "tpr_at_1%_resolved": resolves(v["non_members"], 0.01),
                         "tpr_at_0.1%_resolved": resolves(v["non_members"], 0.001)})
    return pd.DataFrame(rows)


def _paired_scores(a: pd.DataFrame, b: pd.DataFrame):
    m = a[["example_id", "member", "score"]].merge(b[["example_id", "member", "score"]], on="example_id",
                                                   suffixes=("_a", "_b"))
    if len(m) != len(a) or len(m) != len(b) or not (m["member_a"] == m["member_b"]).all():
        raise ValueError("paired AUC difference needs the same attacked examples and membership labels")
    return m["member_a"].to_numpy(), m["score_a"].to_numpy(), m["score_b"].to_numpy()


def auc_difference(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """AUC of attack scores ``a`` minus ``b`` on the same attacked examples (checked)."""
    y, sa, sb = _paired_scores(a, b)
    return float(roc_auc_score(y, sa) - roc_auc_score(y, sb))


def paired_auc_difference(a: pd.DataFrame, b: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """AUC of attack scores ``a`` minus ``b`` on the same attacked examples (same members and
    non-members), with a paired bootstrap (members and non-members resampled separately)."""
    y, sa, sb = _paired_scores(a, b)
    diff = float(roc_auc_score(y, sa) - roc_auc_score(y, sb))
    idx = stratified_indices([np.flatnonzero(y == 1), np.flatnonzero(y == 0)], n_boot, np.random.default_rng(seed))
    ci = percentile_interval(_resampled_auc(y, sa, idx) - _resampled_auc(y, sb, idx))
    return {"difference": diff, "ci": ci, "n": int(len(y)), "verdict": verdict(ci)}


def leakage_at_equal_fit(targets: pd.DataFrame, method: str = "lora", reference: str = "full") -> dict:
    """Whether ``method`` leaks less than ``reference`` *at equal fit*: an ordinary least-squares fit
    of the attack AUC on the target's generalisation gap (train minus test accuracy), the method
    (a term per method, ``reference`` the baseline) and the seed (a term per seed), over every attacked
    target of one task (main targets, over-fitted controls and utility-matched targets alike: all
    targets of a seed share their members and non-members). ``targets``: one row per target with
    columns ``seed``, ``method``, ``gap`` and ``auc``.

    Returns the method's coefficient (the AUC difference at the same gap and seed) with its 95%
    interval from heteroskedasticity-robust (HC3) standard errors and t critical values (few residual
    degrees of freedom), the gap's slope, the number of targets (and per method: ``per_method``,
    which shows whose points set the slope), and the raw difference (the mean over seeds of ``method`` minus ``reference`` among the
    main targets, where a ``main`` column marks them). The fit assumes one linear slope shared by all
    methods, and its interval treats the targets as independent although targets of a seed share
    their attacked examples: read it as a description of these targets, not a verdict."""
    import statsmodels.formula.api as smf

    need = {"seed", "method", "gap", "auc"}
    if not need <= set(targets.columns):
        raise ValueError(f"targets lacks columns {sorted(need - set(targets.columns))}")
    d = targets.assign(seed=targets["seed"].astype(str)).reset_index(drop=True)
    if not {method, reference} <= set(d["method"]):
        raise ValueError(f"targets need both {method!r} and {reference!r}; they have {sorted(set(d['method']))}")
    terms = 1 + 1 + (d["method"].nunique() - 1) + (d["seed"].nunique() - 1)
    out = {"targets": len(d), "method": method, "reference": reference,
           "per_method": d["method"].value_counts().sort_index().to_dict()}
    main = d[d["main"]] if "main" in d else d
    per_seed = main.pivot_table(index="seed", columns="method", values="auc", aggfunc="mean")
    out["raw"] = float((per_seed[method] - per_seed[reference]).mean()) if {method, reference} <= set(per_seed) else float("nan")
    if len(d) <= terms + 1:  # no residual degrees of freedom to speak of
        return {**out, "coef": float("nan"), "lo": float("nan"), "hi": float("nan"), "slope": float("nan")}
    fit = smf.ols(f"auc ~ gap + C(method, Treatment({reference!r})) + C(seed)", data=d).fit(cov_type="HC3", use_t=True)
    name = f"C(method, Treatment({reference!r}))[T.{method}]"
    lo, hi = fit.conf_int().loc[name]
    return {**out, "coef": float(fit.params[name]), "lo": float(lo), "hi": float(hi), "slope": float(fit.params["gap"])}
