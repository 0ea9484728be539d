"""Seed-level inference: the independent training run (a seed) is the unit.

A case's evidence is its per-seed paired differences ``d_1 .. d_k`` (LoRA minus the other method on
the same seed's split and test examples). Each ``d_s`` already contains the seed's test-sampling
noise, so the spread of the ``d_s`` carries both sources of randomness: training (initialisation,
order, the split itself) and test sampling. The interval is the one-sample t-interval on the ``d_s``
(a random-effects mean with one random effect per seed, equal weights), the p-value its two-sided
t-test, and equivalence the two one-sided t-tests (TOST) against the margin of the registered
design (``MARGINS``; book/design.md says when each was fixed and lists the later deviations). Beside
the t-test, the exact sign-flip test over seeds (``sign_flip_p``) makes no normality assumption; a
better / worse verdict it does not support is flagged. ``tests/test_inference.py`` checks the coverage on simulated data with a known
difference and a known seed variance.

Multiplicity: within each family of comparisons (``family``: one experiment's comparison on
utility or on fairness metrics), Holm's step-down adjustment decides
the verdicts, and Benjamini-Hochberg adjusted p-values are reported beside them
(``statsmodels.stats.multitest``). The equivalence p-values are Holm-adjusted in the same families.

Five verdicts: *LoRA better* / *LoRA worse* (Holm-adjusted p < 0.05, direction from the metric),
*equivalent* (Holm-adjusted TOST p < 0.05), *inconclusive* (neither), *no verdict* (fewer than
``MIN_SEEDS`` seeds, the floor below which no interval is read at all). Which cases are *counted*
is decided before this, by the findings' count rule (``findings.COUNT_SEEDS``: 8 seeds after the
per-run gate, so that the exact sign-flip test can reach p < 0.01, and a detected positive control);
the others carry no verdict. The minimum detectable effect (``mde``) is the true difference a two-sided
t-test at 0.05 would detect with 80% power at the observed seed-to-seed SD and the case's seeds.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from .errors import LorafairError

MIN_SEEDS = 3
ALPHA = 0.05
POWER = 0.80
#: Equivalence margins, per metric key (justified in the methods chapter; book/design.md says when
#: they were fixed): the largest difference the study would call practically negligible.
MARGINS = {
    "accuracy": 0.02, "lira_auc": 0.02, "loss_auc": 0.02, "flip_rate": 0.02,
    "worst_group_accuracy": 0.05, "accuracy_gap": 0.05, "ece": 0.02, "ece_ts": 0.02,
    "calibration_gap": 0.05, "calibration_gap_raw": 0.05,
    "stereotype_excess": 0.05, "pro_preference": 0.05,
}
#: Which metrics measure utility; all others are fairness (groups, group calibration, leakage, bias).
#: Overall calibration (ECE, raw and temperature-scaled) is utility-side (amendment 6 of book/design.md):
#: it is computed over all examples, so it says nothing about groups.
UTILITY = ("accuracy", "ece", "ece_ts")
VERDICTS = ("LoRA better", "LoRA worse", "equivalent", "inconclusive", "no verdict")


def margin(metric_key: str) -> float:
    if metric_key not in MARGINS:
        raise LorafairError(f"no equivalence margin for metric {metric_key!r}; margins exist for: {', '.join(MARGINS)}")
    return MARGINS[metric_key]


def seed_summary(diffs, margin_: float) -> dict:
    """Mean, 95% t-interval, two-sided p, TOST p and 80%-power MDE of per-seed differences."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[~np.isnan(d)]
    k = len(d)
    nan = float("nan")
    out = {"seeds": k, "difference": float(d.mean()) if k else nan, "lo": nan, "hi": nan, "sd": nan,
           "p": nan, "p_tost": nan, "mde": nan, "p_signflip": nan}
    if k < 2:
        return out
    out["p_signflip"] = sign_flip_p(d)
    sd = float(d.std(ddof=1))
    se = sd / np.sqrt(k)
    t = stats.t.ppf(1 - ALPHA / 2, k - 1)
    out.update(sd=sd, lo=float(d.mean() - t * se), hi=float(d.mean() + t * se))
    if se == 0:  # every seed gave the same difference
        out.update(p=0.0 if d.mean() != 0 else 1.0, p_tost=0.0 if abs(d.mean()) < margin_ else 1.0, mde=0.0)
        return out
    out["p"] = float(2 * stats.t.sf(abs(d.mean()) / se, k - 1))  # the one-sample t-test
    lower = stats.t.sf((d.mean() + margin_) / se, k - 1)    # H0: diff <= -margin
    upper = stats.t.cdf((d.mean() - margin_) / se, k - 1)   # H0: diff >= +margin
    out["p_tost"] = float(max(lower, upper))
    out["mde"] = mde(sd, k)
    return out


#: the sign-flip test enumerates all 2^k sign patterns up to this many seeds (65,536 at 16)
SIGNFLIP_EXACT_UP_TO = 16


def sign_flip_p(diffs) -> float:
    """The exact two-sided sign-flip (one-sample permutation) p-value of per-seed differences: under
    the null each seed's difference is as likely negative as positive, so all 2^k sign patterns are
    equally likely (``scipy.stats.permutation_test``, exact up to ``SIGNFLIP_EXACT_UP_TO`` seeds; with
    more, 9,999 random sign patterns from a fixed seed, whose p is within about 0.002 of the exact
    one near 0.05). With k seeds it cannot go below 2 / 2^k (0.0625 at 5 seeds, 0.0078 at 8). NaN
    with fewer than 2 seeds."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return float("nan")
    if np.all(d == 0):
        return 1.0
    exact = len(d) <= SIGNFLIP_EXACT_UP_TO
    res = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf if exact else 9_999,
                                 alternative="two-sided", random_state=None if exact else 0)
    return float(min(1.0, res.pvalue))


def planted_effect(per_seed: dict, higher: bool) -> dict:
    """A positive control read at the seed level: the seed summary of its per-seed planted effects
    (``{seed: effect}``) and ``detected``: the 95% seed-level interval excludes zero in the planted
    direction (``higher``: the effect must be positive). Fewer than 2 seeds: never detected."""
    s = seed_summary(list(per_seed.values()), margin_=0.0)
    s["detected"] = bool(s["lo"] > 0) if higher else bool(s["hi"] < 0)
    s["per_seed"] = dict(sorted(per_seed.items()))
    return s


def interval_text(summary: dict) -> str:
    """A seed summary's interval as "[lo, hi]", or why there is none."""
    if np.isnan(summary["lo"]):
        return "(fewer than 2 seeds: no interval)"
    return f"[{summary['lo']:+.3f}, {summary['hi']:+.3f}]"


def mde(sd: float, seeds: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided one-sample t-test over ``seeds`` per-seed
    differences with standard deviation ``sd`` detects with probability ``power``."""
    if seeds < 2 or not np.isfinite(sd):
        return float("nan")
    return float(_detectable_effect(seeds, alpha, power) * sd)


@lru_cache(maxsize=None)
def _detectable_effect(seeds: int, alpha: float, power: float) -> float:
    """The standardised effect (mean / SD) a one-sample t-test detects at ``power``."""
    return float(TTestPower().solve_power(nobs=seeds, alpha=alpha, power=power, alternative="two-sided"))


def sd_upper(sd: float, seeds: int, confidence: float = 0.90) -> float:
    """The one-sided upper confidence limit of a seed-to-seed SD estimated from ``seeds`` runs
    (chi-square with ``seeds`` - 1 degrees of freedom): the conservative SD a design is sized from,
    since the SD of a few pilot seeds is often far too small. NaN with fewer than 2 seeds."""
    if seeds < 2 or not np.isfinite(sd):
        return float("nan")
    return float(sd * np.sqrt((seeds - 1) / stats.chi2.ppf(1 - confidence, seeds - 1)))


def seeds_for(target: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Seeds needed so that the MDE at the seed-to-seed ``sd`` is at most ``target``."""
    if sd <= 0 or mde(sd, MIN_SEEDS, alpha, power) <= target:  # (the solver fails where fewer would do)
        return MIN_SEEDS
    k = TTestPower().solve_power(effect_size=target / sd, alpha=alpha, power=power, alternative="two-sided")
    return max(MIN_SEEDS, int(np.ceil(k)))


def tost_power(seeds: int, sd: float, margin_: float, alpha: float = ALPHA) -> float:
    """Power of TOST at a true difference of zero (a lower bound: one minus the two one-sided
    tests' failure probabilities, from the noncentral t)."""
    if seeds < 2 or sd <= 0:
        return float("nan") if seeds < 2 else 1.0
    crit = stats.t.ppf(1 - alpha, seeds - 1)
    ncp = margin_ * np.sqrt(seeds) / sd
    if ncp - crit > 12:  # the noncentral t's lower tail is nil there (and scipy's cdf can return nan)
        return 1.0
    miss = stats.nct.cdf(crit, seeds - 1, ncp)
    return float(max(0.0, 1 - 2 * miss)) if np.isfinite(miss) else float("nan")


def seeds_for_equivalence(margin_: float, sd: float, power: float = POWER, alpha: float = ALPHA,
                          most: int = 10_000) -> int:
    """Seeds TOST needs to show equivalence within ``margin_`` with ``power`` if the true difference
    is zero, at the seed-to-seed ``sd`` (``most`` + 1 if even ``most`` seeds are not enough)."""
    if sd <= 0:
        return MIN_SEEDS
    lo, hi = MIN_SEEDS, most
    if tost_power(hi, sd, margin_, alpha) < power:
        return most + 1
    while lo < hi:  # power grows with the seeds
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if tost_power(mid, sd, margin_, alpha) < power else (lo, mid)
    return lo


def family(row) -> str:
    """The multiplicity family of a case, fixed by the design: its experiment, its comparison (a
    variant such as "utility-matched" joins its comparison; every method other than LoRA, head-only
    and full fine-tuning against one reference is one family, "other methods - full") and whether it
    measures utility or fairness."""
    kind = "utility" if row["metric_key"] in UTILITY else "fairness"
    a, b = row.get("method_a"), row.get("method_b")
    if isinstance(a, str) and isinstance(b, str) and a not in ("lora", "full", "head", "base"):
        comp = f"other methods - {'LoRA' if b == 'lora' else b}"
    else:
        comp = row["comparison"].split(" (")[0]
    return f"{row['experiment']} | {comp} | {kind}"


def decide(cases: pd.DataFrame, higher_is_better: dict) -> pd.DataFrame:
    """Adjusted p-values and the five-way verdict of every case (rows with ``metric_key``,
    ``comparison``, ``seeds``, ``difference``, ``p``, ``p_tost``); cases with fewer than
    ``MIN_SEEDS`` seeds get "no verdict" and take no part in the adjustment."""
    out = cases.copy()
    if out.empty:
        return out.assign(family=pd.Series(dtype=object), p_holm=np.nan, p_bh=np.nan, p_tost_holm=np.nan,
                          p_signflip_holm=np.nan, verdict=pd.Series(dtype=object), signflip_flag=pd.Series(dtype=object))
    out["family"] = out.apply(family, axis=1)
    for col in ("p_holm", "p_bh", "p_tost_holm", "p_signflip_holm"):
        out[col] = np.nan
    ok = (out["seeds"] >= MIN_SEEDS) & out["p"].notna()
    for _, idx in out[ok].groupby("family").groups.items():
        p = out.loc[idx, "p"].to_numpy(dtype=float)
        out.loc[idx, "p_holm"] = multipletests(p, alpha=ALPHA, method="holm")[1]
        if "p_signflip" in out:
            out.loc[idx, "p_signflip_holm"] = multipletests(out.loc[idx, "p_signflip"].to_numpy(dtype=float),
                                                            alpha=ALPHA, method="holm")[1]
        out.loc[idx, "p_bh"] = multipletests(p, alpha=ALPHA, method="fdr_bh")[1]
        out.loc[idx, "p_tost_holm"] = multipletests(out.loc[idx, "p_tost"].to_numpy(dtype=float), alpha=ALPHA,
                                                    method="holm")[1]

    def verdict(r):
        if r["seeds"] < MIN_SEEDS or np.isnan(r["p_holm"]):
            return "no verdict"
        if r["p_holm"] < ALPHA:
            better = (r["difference"] > 0) == higher_is_better[r["metric_key"]]
            return "LoRA better" if better else "LoRA worse"
        if r["p_tost_holm"] < ALPHA:
            return "equivalent"
        return "inconclusive"
    out["verdict"] = out.apply(verdict, axis=1)
    # a better / worse verdict the Holm-adjusted exact sign-flip p does not support is flagged
    out["signflip_flag"] = np.where(out["verdict"].isin(["LoRA better", "LoRA worse"])
                                    & ~(out["p_signflip_holm"] < ALPHA),
                                    "not supported by the sign-flip test", "")
    return out
