"""Seed-level inference: coverage on simulated data with a known difference and a known seed
variance, equivalence tests, power, multiplicity and the five-way verdict."""

import numpy as np
import pandas as pd
import pytest

from lorafair import findings, inference, metrics


def _simulate(rng, k, delta, tau, n=300, base=0.8):
    """Per-seed paired differences of two methods' test accuracy: each seed's true difference is
    ``delta`` plus a training effect N(0, tau^2); each method's test correctness is Bernoulli."""
    true = delta + rng.normal(0, tau, k)
    ca = rng.random((k, n)) < (base + true)[:, None]
    cb = rng.random((k, n)) < base
    return ca.mean(axis=1) - cb.mean(axis=1), ca, cb


@pytest.mark.parametrize("k", [3, 5, 10])
def test_seed_level_interval_covers_the_true_difference(k):
    rng = np.random.default_rng(k)
    delta, tau, sims = 0.03, 0.05, 600
    hits = pooled_hits = 0
    for _ in range(sims):
        d, ca, cb = _simulate(rng, k, delta, tau)
        s = inference.seed_summary(d, 0.02)
        hits += s["lo"] <= delta <= s["hi"]
        # the interval that resamples test examples only (seeds fixed): its SE ignores training noise
        pa, pb, n = ca.mean(), cb.mean(), ca.size
        se = np.sqrt(pa * (1 - pa) / n + pb * (1 - pb) / n)
        pooled_hits += abs(pa - pb - delta) <= 1.96 * se
    assert 0.92 <= hits / sims <= 0.98
    assert pooled_hits / sims < 0.85   # the example-only interval under-covers when seeds vary


def test_tost_mde_and_power():
    rng = np.random.default_rng(0)
    same = inference.seed_summary(rng.normal(0, 0.004, 10), 0.02)
    assert same["p_tost"] < 0.05 and same["p"] > 0.01          # equivalent within +/-0.02
    noisy = inference.seed_summary(rng.normal(0, 0.05, 3), 0.02)
    assert noisy["p_tost"] > 0.05                                # 3 noisy seeds cannot show equivalence
    assert inference.mde(0.02, 5) > inference.mde(0.02, 10) > 0
    k = inference.seeds_for(0.03, 0.02)
    assert inference.mde(0.02, k) <= 0.03 < inference.mde(0.02, k - 1)
    k_eq = inference.seeds_for_equivalence(0.02, 0.03)
    assert inference.tost_power(k_eq, 0.03, 0.02) >= 0.8 > inference.tost_power(k_eq - 1, 0.03, 0.02)
    # simulated: at k_eq seeds and no true difference, TOST shows equivalence at least 80% of the time
    sims = rng.normal(0, 0.03, (2000, k_eq))
    shown = np.mean([inference.seed_summary(d, 0.02)["p_tost"] < 0.05 for d in sims[:400]])
    assert shown >= 0.75
    assert inference.planted_effect({1: -0.2, 2: -0.15, 3: -0.18}, higher=False)["detected"]
    assert not inference.planted_effect({1: -0.2, 2: 0.1, 3: -0.18}, higher=False)["detected"]
    assert not inference.planted_effect({1: 0.3}, higher=True)["detected"]           # one seed: no interval
    one = inference.seed_summary([0.1], 0.02)
    assert one["seeds"] == 1 and np.isnan(one["lo"]) and np.isnan(one["p"])
    with pytest.raises(Exception, match="no equivalence margin for metric 'f2'"):
        inference.margin("f2")


def test_five_way_verdicts_with_holm_within_families():
    rows = [
        # one clear difference, one equivalence, one undecided, one with two seeds: utility family
        {"metric_key": "accuracy", "comparison": "LoRA - full", "seeds": 5, "difference": -0.05, "p": 0.001, "p_tost": 0.9},
        {"metric_key": "accuracy", "comparison": "LoRA - full", "seeds": 5, "difference": 0.001, "p": 0.8, "p_tost": 0.004},
        {"metric_key": "accuracy", "comparison": "LoRA - full", "seeds": 5, "difference": 0.01, "p": 0.04, "p_tost": 0.3},
        {"metric_key": "accuracy", "comparison": "LoRA - full", "seeds": 2, "difference": -0.2, "p": 0.0001, "p_tost": 0.9},
        # fairness family: attack AUC higher is worse for privacy
        {"metric_key": "lira_auc", "comparison": "LoRA - full (utility-matched)", "seeds": 3, "difference": -0.04,
         "p": 0.01, "p_tost": 0.5},
    ]
    out = inference.decide(pd.DataFrame(rows).assign(experiment="x"), {"accuracy": True, "lira_auc": False})
    assert out["verdict"].tolist() == ["LoRA worse", "equivalent", "inconclusive", "no verdict", "LoRA better"]
    assert out.loc[2, "p_holm"] == pytest.approx(0.08)           # 0.04 x 2 (second of three)
    assert out.loc[0, "p_holm"] == pytest.approx(0.003) and np.isnan(out.loc[3, "p_holm"])
    assert out.loc[4, "family"] == "x | LoRA - full | fairness"
    counts = findings.counts(out)
    assert counts.loc[("LoRA - full", "utility")].tolist() == [0, 1, 1, 1, 1]
    assert counts.loc[("LoRA - full", "fairness"), "LoRA better"] == 1


def test_findings_decide_gives_no_verdict_to_cases_the_count_rules_exclude():
    cases = pd.DataFrame([
        {"experiment": "llm_classification", "dataset": "d", "settings": "{}", "model": "m", "comparison": "LoRA - full",
         "metric_key": "accuracy", "seeds": 8, "difference": -0.05, "p": 0.001, "p_tost": 0.9},
        {"experiment": "vision_classification", "dataset": "v", "settings": "{}", "model": "m",
         "comparison": "LoRA - full", "metric_key": "accuracy", "seeds": 8, "difference": 0.05, "p": 0.001, "p_tost": 0.9},
    ])
    ctrl = pd.DataFrame([{"scope": "llm_classification:d", "detected": "detected"},
                         {"scope": "vision_classification:v", "detected": "NOT detected"}])
    out = findings.decide(findings.apply_count_rules(cases, ctrl))
    assert out["verdict"].tolist() == ["LoRA worse", "no verdict"]
    t = findings.counts(out)
    assert t.loc[("LoRA - full", "utility"), "LoRA worse"] == 1 and t.loc[("LoRA - full", "utility"), "no verdict"] == 1


def test_ece_of_a_calibrated_model_is_large_on_small_groups():
    """ECE is biased upwards on small groups: labels drawn from a model's own probabilities (a
    perfectly calibrated model) still show an ECE that shrinks as the group grows."""
    from lorafair import metrics

    rng = np.random.default_rng(0)

    def frame(n):
        p = rng.uniform(0.05, 0.95, n)
        return pd.DataFrame({"label": (rng.random(n) < p).astype(int), "prob": p, "prob_0": 1 - p, "prob_1": p,
                             "pred": (p > 0.5).astype(int)})
    small, large = metrics.ece_if_calibrated(frame(20), 50), metrics.ece_if_calibrated(frame(2000), 50)
    assert small > 0.1 > 0.03 > large
    multi = pd.DataFrame({"label": [0, 1, 2] * 10, "pred": [0] * 30,
                          **{f"prob_{k}": [v] * 30 for k, v in enumerate((0.5, 0.3, 0.2))}})
    assert 0 < metrics.ece_if_calibrated(multi, 20) < 1


def test_design_table_sizes_seeds_from_the_pilot_sd_and_checks_the_target():
    """The design table matches pilot and present cases on task, model, comparison and metric, asks
    for more seeds where the pilot SD is larger, and says whether the present MDE meets the target."""
    def case(task, model, sd, seeds, mde=np.nan, key="accuracy"):
        return {"experiment": "vision_classification", "dataset": "d", "settings": f'{{"task": "{task}"}}',
                "model": model, "comparison": "LoRA - full", "metric": key, "metric_key": key, "seeds": seeds,
                "sd": sd, "mde": mde}
    pilot = pd.DataFrame([case("gender", "a", 0.01, 3), case("gender", "b", 0.06, 3), case("activity", "a", np.nan, 1),
                          case("gender", "a", 0.01, 3, key="ece")])  # not a sized metric
    now = pd.DataFrame([case("gender", "a", 0.01, 5, inference.mde(0.01, 5)), case("gender", "b", 0.06, 5,
                                                                                inference.mde(0.06, 5)),
                        case("activity", "a", np.nan, 1)])
    t = findings.design_table(pilot, now, target=0.03)
    assert t["model"].tolist() == ["a", "b"]                         # one-seed pilot cases are not sized
    need = dict(zip(t["model"], t["seeds at the pilot SD"]))
    assert need["a"] <= 5 < 20 < need["b"]
    for model, sd in (("a", 0.01), ("b", 0.06)):                   # the fewest seeds that reach the target
        assert inference.mde(sd, need[model]) <= 0.03 < inference.mde(sd, need[model] - 1)
    assert t["target met"].tolist() == [True, False] and (t["seeds now"] == 5).all()
    # the conservative SD is the 90% upper limit from 3 seeds, so it asks for more seeds
    assert (t["conservative SD"] > t["pilot SD"]).all()
    assert (t["seeds at the conservative SD"] > t["seeds at the pilot SD"]).all()
    # without a target, each case is sized for its own margin
    t2 = findings.design_table(pilot, now)
    assert (t2["MDE target"] == inference.margin("accuracy")).all()


def test_the_conservative_sd_is_the_chi_square_upper_limit():
    """From 4 seeds at SD 0.031 the 90% upper limit is 0.070 (the registered design's amendment 6), and
    the limit covers the true SD about 90% of the time on simulated seeds."""
    assert inference.sd_upper(0.031, 4) == pytest.approx(0.0703, abs=5e-4)
    rng = np.random.default_rng(0)
    sds = rng.normal(0, 1.0, (4000, 5)).std(axis=1, ddof=1)
    cover = np.mean([inference.sd_upper(s, 5) >= 1.0 for s in sds])
    assert 0.88 < cover < 0.92
    assert np.isnan(inference.sd_upper(0.1, 1))


def test_seeds_for_a_tiny_sd_is_the_minimum():
    """A seed SD far below the target needs only the minimum number of seeds (the power solver
    itself fails there)."""
    assert inference.seeds_for(0.02, 0.0029) == inference.MIN_SEEDS
    assert inference.seeds_for(0.03, 0.05) > inference.MIN_SEEDS


@pytest.mark.parametrize("k", [2, 3])
def test_vectorised_expected_ece_equals_the_ece_of_each_draw(k):
    """ece_if_calibrated draws every label set at once; each draw's ECE must be metrics.ece's (the
    torchmetrics binning), so the mean equals the mean of the one-at-a-time computation."""
    rng = np.random.default_rng(1)
    n, n_sim = 150, 7
    p = rng.dirichlet(np.ones(k), n)
    p[0] = np.eye(k)[0]                                      # a confidence of exactly 1 (the last bin edge)
    df = pd.DataFrame({f"prob_{j}": p[:, j] for j in range(k)})
    df["prob"] = p[:, 1]
    draw = np.random.default_rng(5)
    ref = []
    for _ in range(n_sim):
        if k == 2:
            labels = (draw.random(n) < p[:, 1]).astype(int)
        else:
            cum = np.cumsum(p, axis=1)
            labels = np.minimum((draw.random((n, 1)) > cum).sum(axis=1), k - 1)
        ref.append(metrics.ece(df.assign(label=labels, pred=p.argmax(axis=1))))
    assert metrics.ece_if_calibrated(df.assign(label=0), n_sim, seed=5) == pytest.approx(np.mean(ref), abs=1e-6)  # torchmetrics bins in float32


def test_sign_flip_p_is_exact_and_cannot_go_below_two_over_two_to_the_k():
    import itertools
    rng = np.random.default_rng(0)
    for k in (5, 8):
        d = rng.normal(0.01, 0.02, k)
        brute = np.mean([abs((d * np.array(s)).mean()) >= abs(d.mean()) - 1e-12
                         for s in itertools.product([1, -1], repeat=k)])
        assert inference.sign_flip_p(d) == pytest.approx(brute)
    assert inference.sign_flip_p(np.ones(5)) == pytest.approx(2 / 32)      # 5 seeds: never below 0.0625
    assert inference.sign_flip_p(np.arange(1, 9)) == pytest.approx(2 / 256)  # 8 seeds: can reach 0.0078
    assert np.isnan(inference.sign_flip_p([0.1])) and inference.sign_flip_p([0, 0, 0]) == 1.0
    assert "p_signflip" in inference.seed_summary([0.1, 0.2, 0.3], 0.02)
    # beyond 16 seeds, random sign patterns: close to the exact p, and fast
    d = rng.normal(0.004, 0.02, 20)
    signs = np.array(list(itertools.product([1, -1], repeat=16)))
    exact16 = np.mean(np.abs((signs * d[:16]).mean(axis=1)) >= abs(d[:16].mean()) - 1e-12)
    assert inference.sign_flip_p(d[:16]) == pytest.approx(exact16)
    import time
    t0 = time.perf_counter()
    p20 = inference.sign_flip_p(d)
    assert time.perf_counter() - t0 < 2 and 0 < p20 <= 1 and p20 == inference.sign_flip_p(d)  # seeded
    bits = (np.arange(2 ** 20)[:, None] >> np.arange(20)) & 1                   # every one of the 2^20 patterns
    exact20 = np.mean(np.abs(((1 - 2 * bits) * d).mean(axis=1)) >= abs(d.mean()) - 1e-12)
    assert p20 == pytest.approx(exact20, abs=0.015)


def test_a_verdict_the_sign_flip_test_does_not_support_is_flagged():
    """Five seeds all of one sign: the t-test can call it (p tiny), the exact sign-flip p cannot go
    below 0.0625, so the verdict is flagged; at 8 seeds it is supported."""
    rows = []
    for k in (5, 8):
        d = 0.05 + 0.001 * np.arange(k)
        rows.append({"experiment": "e", "comparison": "LoRA - full", "metric_key": "accuracy", "per_seed": dict(enumerate(d)),
                     **inference.seed_summary(d, 0.02)})
    rows[1]["experiment"] = "e2"  # its own family
    out = inference.decide(pd.DataFrame(rows), {"accuracy": True})
    assert out["verdict"].tolist() == ["LoRA better", "LoRA better"]
    assert out["signflip_flag"].tolist() == ["not supported by the sign-flip test", ""]


def test_lr_robustness_reads_the_neighbouring_rates_per_verdict():
    base = {"experiment": "vision_classification", "dataset": "d", "settings": "{}", "model": "m", "comparison": "LoRA - full",
            "metric_key": "accuracy", "margin": 0.02}
    cases = pd.DataFrame([
        {**base, "lr_neighbour": "", "verdict": "LoRA worse", "difference": -0.05, "seeds": 16},
        {**base, "lr_neighbour": "LoRA at lr 0.003", "verdict": "no verdict", "difference": -0.03, "seeds": 3},
        {**base, "lr_neighbour": "full at lr 0.0003", "verdict": "no verdict", "difference": +0.01, "seeds": 3},
        {**base, "metric_key": "ece", "lr_neighbour": "", "verdict": "equivalent", "difference": 0.0, "seeds": 16},
        {**base, "metric_key": "ece", "lr_neighbour": "LoRA at lr 0.003", "verdict": "no verdict", "difference": 0.01,
         "seeds": 3},
        {**base, "metric_key": "ece_ts", "lr_neighbour": "", "verdict": "inconclusive", "difference": 0.0, "seeds": 16},
        {**base, "model": "other", "lr_neighbour": "", "verdict": "LoRA better", "difference": 0.05, "seeds": 16},
    ])
    out = findings.lr_robustness(cases)
    assert out[0].startswith("depends on the learning rate: full at lr 0.0003 gives +0.010 (3 seeds)")
    assert out[3] == "holds at every neighbouring rate (1 neighbours)"
    assert out[5] == "" and out[1] == "" and out[6] == "no neighbouring-rate runs"


def test_a_lora_minus_base_shift_is_read_beside_full_minus_base():
    """LoRA is credited only with what full fine-tuning does not also do: each LoRA-minus-base case
    names full minus the same base, and says whether full makes the same shift."""
    base = {"experiment": "generation_fairness", "dataset": "pronoun test", "model": "m",
            "metric_key": "pro_preference", "seeds": 3}
    cases = pd.DataFrame([
        {**base, "settings": "a", "comparison": "LoRA - base", "difference": -0.10, "lo": -0.15, "hi": -0.05},
        {**base, "settings": "a", "comparison": "full - base", "difference": -0.11, "lo": -0.14, "hi": -0.08},
        {**base, "settings": "b", "comparison": "LoRA - base", "difference": -0.10, "lo": -0.15, "hi": -0.05},
        {**base, "settings": "b", "comparison": "full - base", "difference": -0.01, "lo": -0.05, "hi": 0.03},
        {**base, "settings": "c", "comparison": "LoRA - base", "difference": -0.10, "lo": -0.15, "hi": -0.05},
        {**base, "settings": "d", "comparison": "LoRA - base", "difference": 0.02, "lo": -0.03, "hi": 0.07},
        {**base, "settings": "d", "comparison": "full - base", "difference": 0.09, "lo": 0.04, "hi": 0.13},
        {**base, "settings": "e", "comparison": "LoRA - base", "difference": -0.05, "lo": np.nan, "hi": np.nan, "seeds": 1},
        {**base, "settings": "e", "comparison": "full - base", "difference": -0.04, "lo": np.nan, "hi": np.nan, "seeds": 1},
    ])
    out = findings.full_vs_base(cases)
    assert out[0].startswith("full - base -0.110 [-0.140, -0.080], 3 seeds") and "not LoRA's" in out[0]
    assert out[2].endswith("does not show the same shift")
    assert out[1] == out[3] == out[4] == ""  # full's own rows, and a case without a full run
    assert out[5].endswith("full fine-tuning shifts it, LoRA's interval includes zero")
    assert out[7] == "full - base -0.040, 1 seed: too few seeds to say whether full fine-tuning makes the same shift"
    assert findings.is_beyond(pd.DataFrame({"method_a": ["lora", "full", "dora"]})).tolist() == [False, False, True]
