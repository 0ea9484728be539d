"""The powered text task (book/design.md): the UCI Adult rows, the ``sized`` split that tops the test
split up for small groups, the per-run learned gate, exact intervals for small groups, and the
committed offline records of the task."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lorafair import assets, chapters, data, findings, metrics, profiles, spec, splits
from lorafair.errors import LorafairError

ROOT = Path(__file__).resolve().parents[1]
DESIGN = {"kind": "sized", "sizes": {"train": 3000, "val": 1000, "test": 1500}, "min_test_group": 200,
          "pools": [0.4, 0.1, 0.5]}


@pytest.fixture(scope="module")
def adult():
    return data.load("adult")


def test_adult_is_the_whole_census_with_its_groups(adult):
    t = adult.table
    assert len(t) == 48842 and int(t["label"].sum()) == 11687 and adult.skipped == {"malformed": 0}
    assert t["example_id"].is_unique
    assert t["group_race"].value_counts().to_dict() == {"White": 41762, "Black": 4685, "Asian-Pac-Islander": 1519,
                                                        "Amer-Indian-Eskimo": 470, "Other": 406}
    assert t["group_sex"].value_counts().to_dict() == {"Male": 32650, "Female": 16192}
    assert adult.attributes == ["race", "sex"] and adult.kind == "text"
    first = t["input"].iloc[0]
    assert first.startswith("age 39, male, White, bachelors") and "capital gain 2174" in first


def test_a_subsample_keeps_every_race(adult):
    small = data.load("adult", n=100, data_seed=3)
    assert 100 <= len(small.table) <= 125
    assert set(small.table["group_race"]) == set(adult.table["group_race"])
    assert small.table["example_id"].equals(data.load("adult", n=100, data_seed=3).table["example_id"])


def test_a_changed_census_file_is_refused(monkeypatch):
    a = assets.ASSETS["adult_data"]
    monkeypatch.setitem(assets.ASSETS, "adult_data", dataclasses.replace(a, sha256_prefix="0000000000000000"))
    with pytest.raises(LorafairError, match="is corrupt: sha256 5b00264637dbfec3... does not start with 0000"):
        data.load("adult")


def test_the_sized_split_gives_every_group_its_test_examples(adult):
    s = splits.split_for(adult, 42, design=DESIGN)
    counts = s.value_counts()
    assert counts["train"] == 3000 and counts["val"] == 1000
    assert 1500 < counts["test"] < 1500 + 5 * 200           # topped up, not rebuilt
    t = adult.table.assign(split=s)
    for a in adult.attributes:
        assert t[t["split"] == "test"].groupby(f"group_{a}").size().min() >= 200
    # training keeps the census's imbalance: the smallest race stays rare there
    train = t[t["split"] == "train"]["group_race"].value_counts(normalize=True)
    assert train["Other"] < 0.02 and train["White"] > 0.8
    # the top-up comes from the test pool only: nothing moves between the pools of another seed
    base = splits.standard_split(adult, 42, (0.4, 0.1, 0.5))
    assert (base[s == "test"] == "test").all() and (base[s == "train"] == "train").all()
    assert s.equals(splits.split_for(adult, 42, design=DESIGN))
    assert not s.equals(splits.split_for(adult, 13, design=DESIGN))
    assert splits.stores_used_only(DESIGN) and splits.stores_used_only(
        {"kind": "relabel", "attribute": "race", "group": "Black", "fraction": 0.5, "to_label": 1, "base": DESIGN})
    assert not splits.stores_used_only({"kind": "standard"})


def test_a_group_smaller_than_the_minimum_gets_all_its_test_pool(adult):
    s = splits.split_for(adult, 7, design={**DESIGN, "min_test_group": 400})
    t = adult.table.assign(split=s)
    pool = splits.standard_split(adult, 7, (0.4, 0.1, 0.5))
    other = t["group_race"] == "Other"
    assert int(((s == "test") & other).sum()) == int(((pool == "test") & other).sum()) < 400


@pytest.mark.parametrize("change, message", [
    ({"pools": [0.5, 0.5]}, "split_design.pools is [0.5, 0.5]"),
    ({"pools": [0.4, 0.1, 0.4]}, "sum to 1"),
    ({"sizes": {"train": 0}}, "split_design.sizes"),
    ({"sizes": {"holdout": 10}}, "split_design.sizes"),
    ({"min_test_group": -1}, "split_design.min_test_group is -1"),
])
def test_a_bad_sized_design_is_one_line(change, message):
    good = spec.thaw(chapters.configs("llm_classification", profiles.resolve("llm_classification", "smoke"))["powered"][0])
    assert good["split_design"]["kind"] == "sized"
    with pytest.raises(LorafairError) as e:
        spec.build({**good, "split_design": {**good["split_design"], **change}}, "test")
    assert message in str(e.value) and "\n" not in str(e.value)


def _preds(labels, preds, split="val"):
    return pd.DataFrame({"split": split, "label": labels, "pred": preds})


def test_the_learned_gate_by_hand():
    labels = [0] * 70 + [1] * 30                         # majority rate 0.70
    assert metrics.learned_gate(_preds(labels, [0] * 100))["reason"].startswith("predicts one class")
    # 73 right: beats 0.70 by 0.03 > 0.02
    g = metrics.learned_gate(_preds(labels, [0] * 70 + [1] * 3 + [0] * 27))
    assert g["passed"] and g["val_accuracy"] == pytest.approx(0.73) and g["majority"] == pytest.approx(0.70)
    # 72 right: 0.72 is not more than 0.70 + 0.02
    g = metrics.learned_gate(_preds(labels, [0] * 70 + [1] * 2 + [0] * 28))
    assert g["passed"] is False and "does not beat the majority rate 0.700 by 0.02" in g["reason"]
    # a tie with the margin on 400 examples (217 right, 209 of the majority class: 0.5425 = 0.5225 + 0.02)
    # fails whatever the float rounding, and one more right answer passes
    tie = [0] * 209 + [1] * 191
    g = metrics.learned_gate(_preds(tie, [0] * 209 + [1] * 8 + [0] * 183))
    assert g["passed"] is False and g["val_accuracy"] == pytest.approx(0.5425)
    assert metrics.learned_gate(_preds(tie, [0] * 209 + [1] * 9 + [0] * 182))["passed"]
    # test rows never enter the gate
    both = pd.concat([_preds(labels, [0] * 70 + [1] * 30), _preds(labels, [1] * 100, "test")])
    assert metrics.learned_gate(both)["passed"] and metrics.learned_gate(both)["val_accuracy"] == 1.0
    assert metrics.learned_gate(_preds(labels, labels, "train"))["passed"] is None


@pytest.mark.parametrize("k, n", [(0, 12), (5, 12), (12, 12), (180, 200), (31, 406)])
def test_exact_interval_is_clopper_pearson(k, n):
    lo = stats.beta.ppf(0.025, k, n - k + 1) if k else 0.0
    hi = stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    assert metrics.exact_interval(k, n) == pytest.approx([lo, hi], abs=1e-9)
    assert all(np.isnan(metrics.exact_interval(0, 0)))


class _Run:
    """A run record as lr_pilot_choice reads it: config, selected validation accuracy, predictions."""
    def __init__(self, lr, seed, val_acc, learned):
        self.config = {"method": "lora", "lr": lr, "seed": seed}
        self.meta = {"history": {"selected_val_accuracy": val_acc}}
        label = np.array([0] * 75 + [1] * 25)
        pred = label.copy() if learned else np.zeros(100, int)
        self._p = pd.DataFrame({"split": "val", "label": label, "pred": pred})

    def predictions(self):
        return self._p


def test_the_learning_rate_rule_prefers_rates_that_learn_on_every_seed_then_validation_accuracy():
    runs = [_Run(5e-4, s, 0.80, True) for s in (13, 42)] + [_Run(1e-3, s, 0.84, True) for s in (13, 42)] \
        + [_Run(2e-3, 13, 0.90, True), _Run(2e-3, 42, 0.75, False)]
    table, lr = findings.lr_pilot_choice(runs, "lora")
    # 2e-3 has the best mean validation accuracy of a single seed but fails the gate on one: 1e-3 wins
    assert lr == 1e-3 and table.set_index("lr")["passed the gate"].to_dict() == {5e-4: 2, 1e-3: 2, 2e-3: 1}
    assert table.loc[table["chosen"], "lr"].tolist() == [1e-3]
    runs[2].meta["history"]["selected_val_accuracy"] = runs[3].meta["history"]["selected_val_accuracy"] = 0.79
    assert findings.lr_pilot_choice(runs, "lora")[1] == 5e-4  # the tie on passes goes to validation accuracy
    none, lr = findings.lr_pilot_choice(runs, "full")
    assert none.empty and lr is None


def _pilot_records():
    out = []
    for d in sorted((ROOT / "results" / "pilot_lr_llm").iterdir()):
        cfg = json.loads((d / "config.json").read_text())["config"]
        if cfg["dataset"] == "adult":
            out.append(d)
    return out


def test_the_committed_powered_task_uses_the_learning_rate_its_registered_pilot_chose():
    """Amendment 7: every pilot run exists, on the task's split, and LoRA's rate in the profile is
    the one the registered rule picks from the pilot's records."""
    from lorafair.runs import load_record
    T = profiles.resolve("llm_classification", "offline")["powered"]
    recs = [load_record(d) for d in _pilot_records()]
    want = {(me, float(lr), s) for me, rates in T["lr_pilot"]["lrs"].items() for lr in rates for s in T["lr_pilot"]["seeds"]}
    assert {(r.config["method"], float(r.config["lr"]), r.config["seed"]) for r in recs} == want
    assert all(r.config["split_design"] == DESIGN for r in recs)
    assert findings.lr_pilot_choice(recs, "lora")[1] == T["lrs"]["lora"]


def _adult_records():
    out = []
    for d in sorted((ROOT / "results" / "llm_classification").iterdir()):
        cfg = json.loads((d / "config.json").read_text())["config"]
        if cfg["dataset"] == "adult":
            out.append((cfg, d))
    return out


def test_the_committed_powered_records_follow_the_registered_design():
    """Every committed record of the powered task: the registered seeds and methods, a test split
    sized for every group (at least 200 people of every race and sex a seed), the same test people
    for the methods and the control of a seed, and only the used examples stored."""
    P = profiles.resolve("llm_classification", "offline")
    T = P["powered"]
    recs = _adult_records()
    # a run per seed and method, and one per seed and planted control size (amendment 7: 35% only)
    assert len(recs) == len(T["seeds"]) * (len(T["methods"]) + len(T["control"]["fractions"]))
    tests = {}
    for cfg, d in recs:
        assert cfg["split_design"] == DESIGN or cfg["split_design"]["base"] == DESIGN
        p = pd.read_parquet(d / "predictions.parquet")
        assert set(p["split"]) == {"train", "val", "test"} and p["example_id"].is_unique
        assert (p["split"] == "train").sum() == 3000 and (p["split"] == "val").sum() == 1000
        test = p[p["split"] == "test"]
        assert test.groupby("group_race").size().min() >= 200 and test.groupby("group_sex").size().min() >= 200
        tests.setdefault(cfg["seed"], set()).add(frozenset(test["example_id"]))
        gate = metrics.learned_gate(p)
        assert gate["val_n"] == 1000 and gate["passed"] in (True, False)
    assert sorted(tests) == sorted(T["seeds"]) and all(len(v) == 1 for v in tests.values())


def test_the_powered_control_is_reported_against_its_own_dataset():
    c = pd.read_csv(ROOT / "results" / "controls.csv")
    rows = c[c["scope"] == "llm_classification:adult"]
    fractions = profiles.resolve("llm_classification", "offline")["powered"]["control"]["fractions"]
    assert sorted(rows["planted"]) == sorted(f"{f:.0%} of its other-class training examples relabelled 1" for f in fractions)
    for r in rows.itertuples():
        assert (r.detected == "detected") == (r.seeds >= 2 and r.hi < 0)
        ratio = abs(r.effect) / r.margin
        assert r.margin == 0.05 and r.size.startswith("gross" if ratio >= 2 else "at the margin" if ratio >= 0.5 else "below")


def test_every_committed_control_row_reads_its_own_per_seed_effects():
    """results/controls.csv, read back with scipy alone: each row's effect is the mean of its per-seed
    effects, its interval the seed-level t-interval, "detected" the interval clearing zero in the
    planted direction, and the leave-one-seed-out count recomputed from the same per-seed values."""
    c = pd.read_csv(ROOT / "results" / "controls.csv", keep_default_na=False)
    assert {"vision_classification", "llm_classification", "membership_inference", "generation_fairness"} <= set(c["experiment"])

    def interval(v):
        v = np.asarray(v, float)
        h = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
        return v.mean() - h, v.mean() + h

    for _, r in c.iterrows():
        v = [float(x) for x in str(r["per seed"]).split(", ")] if r["per seed"] != "" else []
        higher = r["experiment"] in ("membership_inference", "generation_fairness")   # more leakage / bias / order
        assert len(v) == int(r["seeds"]) and abs(np.mean(v) - float(r["effect"])) < 1e-3, r
        if len(v) >= 2:
            lo, hi = interval(v)
            assert abs(lo - float(r["lo"])) < 2e-3 and abs(hi - float(r["hi"])) < 2e-3, r
            assert (r["detected"] == "detected") == bool(lo > 0 if higher else hi < 0), r
        if len(v) >= 3:
            kept = sum(bool(interval(v[:i] + v[i + 1:])[0] > 0) if higher else bool(interval(v[:i] + v[i + 1:])[1] < 0)
                       for i in range(len(v)))
            assert r["detected leaving one seed out"] == f"{kept}/{len(v)}", r
    # the probe's planted control moves in its planted direction (amendment 3 of book/design.md)
    tb = c[c["scope"] == "generation_fairness:token_bias"]
    assert len(tb) >= 1 and (tb["effect"].astype(float) > 0).all() and (tb["detected"] == "detected").all()


def test_a_planted_runs_gate_is_read_outside_its_planted_group():
    """A relabel control flips its group's validation predictions; the gate must not drop the run for
    that (amendment 5 of book/design.md), but still drops a run that learned nothing elsewhere."""
    from lorafair import findings

    class Run:
        def __init__(self, preds):
            self._p = preds
            self.config = {"split_design": {"kind": "relabel", "attribute": "race", "group": "Black"}}

        def predictions(self):
            return self._p

    labels = np.array([0] * 70 + [1] * 30)
    race = np.array(["Black"] * 40 + ["White"] * 60)
    learned = labels.copy()
    learned[race == "Black"] = 1                     # the plant: every Black person predicted 1
    dull = np.zeros(100, int)                        # one class everywhere
    runs = [Run(pd.DataFrame({"split": "val", "label": labels, "pred": p, "group_race": race})) for p in (learned, dull)]
    assert metrics.learned_gate(runs[0].predictions())["passed"] is False     # the whole-split gate drops it
    assert findings.learned_runs(runs) == [runs[0]]
