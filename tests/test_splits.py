"""Split designs: units kept together, the down-sampling positive control, and the analysis that
must detect the control's planted effect."""

import numpy as np
import pandas as pd
import pytest

from lorafair import data, splits
from lorafair import experiments as ex
from lorafair.errors import LorafairError
from lorafair.runs import RunRecord


def _ds(n_units=60, per_unit=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_units):
        label, tone = int(rng.random() < 0.5), rng.choice(["a", "b", "c"])
        for k in range(per_unit):
            rows.append({"example_id": f"e{u:03d}{k}", "input": "", "label": label, "group_tone": tone,
                         "glyph": f"g{u:03d}"})
    return data.Dataset("toy", pd.DataFrame(rows), ["x", "y"], "image", ["tone"])


def test_unit_split_keeps_every_unit_on_one_side_and_stratifies():
    ds = _ds()
    s = splits.split_for(ds, 13, design={"kind": "by_unit", "unit": "glyph"})
    assert set(s) == {"train", "val", "test"}
    assert (ds.table.assign(split=s).groupby("glyph")["split"].nunique() == 1).all()
    assert splits.unit_column(ds, {"kind": "by_unit", "unit": "glyph"}) == "glyph"
    assert splits.unit_column(ds, None) is None
    bad = _ds()
    bad.table.loc[0, "label"] = 1 - bad.table.loc[0, "label"]
    with pytest.raises(LorafairError, match="the label varies within a glyph unit"):
        splits.split_for(bad, 13, design={"kind": "by_unit", "unit": "glyph"})


def test_unit_split_by_person_drawing_with_tones_inside_a_unit():
    """A person drawing appears in several tones: the split keeps the drawing on one side and
    stratifies by label only (the tone is not constant within a drawing)."""
    ds = _ds(n_units=60, per_unit=6)
    ds.table["group_tone"] = np.resize(["a", "b", "c"], len(ds.table))   # every drawing in every tone
    assert splits.unit_strata(ds.table, "glyph", ["label", "group_tone"]) == ["label"]
    s = splits.split_for(ds, 13, design={"kind": "by_unit", "unit": "glyph"})
    t = ds.table.assign(split=s)
    assert (t.groupby("glyph")["split"].nunique() == 1).all()
    for _, g in t.groupby("label"):
        assert set(g["split"]) == {"train", "val", "test"}
    m = ds.table.assign(split=splits.split_for(ds, 13, design={"kind": "mia_target", "seed": 13, "unit": "glyph"}))
    assert (m.groupby("glyph")["split"].nunique() == 1).all()


def test_downsample_thins_only_the_groups_training_examples():
    ds = _ds(n_units=100, per_unit=4)
    base = splits.split_for(ds, 7)
    design = {"kind": "downsample", "attribute": "tone", "group": "a", "keep": 0.1}
    s = splits.split_for(ds, 7, design=design)
    g = ds.table["group_tone"] == "a"
    n_train = int(((base == "train") & g).sum())
    assert int(((s == "train") & g).sum()) == max(1, round(0.1 * n_train))
    assert (s[~g] == base[~g]).all()                              # other groups untouched
    assert (s[base != "train"] == base[base != "train"]).all()    # validation and test untouched
    assert set(s[(base == "train") & g]) == {"train", "unused"}
    with pytest.raises(LorafairError, match="unknown tone group 'q'; valid choices: a, b, c"):
        splits.split_for(ds, 7, design={**design, "group": "q"})


def _record(seed, correct, groups, tag):
    preds = pd.DataFrame({"example_id": [f"x{i}" for i in range(len(correct))], "split": "test",
                          "label": 1, "pred": np.asarray(correct, dtype=int), "group_t": groups})
    r = RunRecord(path=None, config={"model": "m", "method": "lora", "seed": seed}, metrics={}, meta={})
    r.predictions = lambda p=preds: p  # an in-memory record
    return r


def test_control_effect_detects_a_planted_drop_and_not_a_null():
    rng = np.random.default_rng(0)
    groups = np.array(["a"] * 120 + ["b"] * 280)  # both groups big enough to carry a claim (metrics.MIN_GROUP_N)
    refs, drops, nulls = [], [], []
    for seed in (1, 2, 3):
        base = rng.random(400) < 0.85
        dropped = base & ~((groups == "a") & (rng.random(400) < 0.4))    # group a loses ~40% of its hits
        refs.append(_record(seed, base, groups, "ref"))
        drops.append(_record(seed, dropped, groups, "ctl"))
        nulls.append(_record(seed, base, groups, "null"))
    eff = ex.control_effect(refs, drops, "t", "a", n_boot=300)
    assert eff["detected"] and eff["group_accuracy"]["difference"] < -0.2 and eff["group_test_examples"] == 360
    assert eff["worst_group_accuracy"]["difference"] < 0
    null = ex.control_effect(refs, nulls, "t", "a", n_boot=300)
    assert not null["detected"] and null["group_accuracy"]["difference"] == 0
    assert "not detected" in ex.control_reading(null, "t", 0.05)


def test_mia_unit_split_keeps_members_non_members_and_pool_apart():
    ds = _ds(n_units=80, per_unit=4)
    t = ds.table.assign(split=splits.split_for(ds, 13, design={"kind": "mia_target", "seed": 13, "unit": "glyph"}))
    assert (t.groupby("glyph")["split"].nunique() == 1).all() and set(t["split"]) == set(splits.MIA_SPLITS)
    sh = ds.table.assign(split=splits.split_for(ds, 13, design={"kind": "mia_shadow", "seed": 13, "shadow_seed": 5,
                                                                "unit": "glyph"}))
    trained = set(sh.loc[sh["split"] == "train", "glyph"])
    assert trained and trained <= set(t.loc[t["split"] == "pool", "glyph"])  # shadows train on pool units only
    assert splits.unit_column(ds, {"kind": "mia_target", "seed": 13, "unit": "glyph"}) == "glyph"
    # without a unit the design is the one every committed membership-inference record used
    plain = splits.split_for(ds, 13, design={"kind": "mia_target", "seed": 13})
    assert plain.equals(splits.mia_target_split(ds, 13))


def test_unit_split_falls_back_to_label_strata_when_groups_are_too_small():
    ds = _ds(n_units=30, per_unit=2)  # ~5 units per (label, tone) stratum at most; some have fewer than 3
    s = splits.split_for(ds, 3, design={"kind": "by_unit", "unit": "glyph"})
    t = ds.table.assign(split=s)
    assert (t.groupby("glyph")["split"].nunique() == 1).all()
    for _, g in t.groupby("label"):
        assert set(g["split"]) == {"train", "val", "test"}


def test_unit_split_caps_keep_units_apart_and_leave_test_whole():
    """Caps thin the training and validation examples (seeded, the same for the same seed), never
    the test split, and a capped split still keeps every unit on one side; a downsampling control
    thins the capped training set."""
    ds = _ds(n_units=100, per_unit=6)
    plain = splits.split_for(ds, 13, (0.45, 0.1, 0.45), {"kind": "by_unit", "unit": "glyph"})
    design = {"kind": "by_unit", "unit": "glyph", "caps": {"train": 120, "val": 30}}
    s = splits.split_for(ds, 13, (0.45, 0.1, 0.45), design)
    assert (s == "train").sum() == 120 and (s == "val").sum() == 30
    assert (s == "test").equals(plain == "test")                       # the test split is untouched
    assert set(s[plain == "train"]) == {"train", "unused"} and (s[plain != "train"] != "train").all()
    t = ds.table.assign(split=s)
    used = t[t["split"] != "unused"]
    assert (used.groupby("glyph")["split"].nunique() == 1).all()
    assert s.equals(splits.split_for(ds, 13, (0.45, 0.1, 0.45), design))
    assert not s.equals(splits.split_for(ds, 14, (0.45, 0.1, 0.45), design))
    ctrl = splits.split_for(ds, 13, (0.45, 0.1, 0.45), {"kind": "downsample", "attribute": "tone", "group": "a",
                                                         "keep": 0.1, "base": design})
    assert (ctrl == "train").sum() < 120 and ((ctrl == "train") <= (s == "train")).all()
    from lorafair import chapters
    for bad, msg in (({"train": 0}, "positive integer, got 0"), ({"pool": 5}, "capped split")):
        with pytest.raises(LorafairError, match=msg):
            splits.split_for(ds, 13, design={"kind": "by_unit", "unit": "glyph", "caps": bad})
        with pytest.raises(LorafairError, match=msg):  # a chapter's grid refuses it before anything trains
            chapters.unit_design({"split_unit": "glyph", "split_caps": bad})


def _with_reserve(ds, per_unit_tone=2):
    """``ds`` plus reserve rows: ``per_unit_tone`` renderings of every unit in every tone."""
    units = ds.table.drop_duplicates("glyph")[["glyph", "label"]]
    rows = [{"example_id": f"r{u}{t}{k}", "input": "", "label": int(lab), "group_tone": t, "glyph": u, "reserve": True}
            for u, lab in units.itertuples(index=False) for t in ("a", "b", "c") for k in range(per_unit_tone)]
    table = pd.concat([ds.table.assign(reserve=False), pd.DataFrame(rows)], ignore_index=True)
    return data.Dataset("toy", table, ds.label_names, "image", ["tone"])


def test_test_top_up_uses_only_reserve_renderings_of_test_units_and_changes_nothing_else():
    """The registered vision design (book/design.md, amendment 6): reserve renderings reach only the
    test split, only of the test units, until every tone has ``min_test_group`` test examples; the
    train and validation examples are exactly those of the same design without a reserve."""
    ds = _ds(n_units=100, per_unit=6)
    ds.table["group_tone"] = np.resize(["a", "a", "a", "a", "b", "c"], len(ds.table))  # tone c is rare
    big = _with_reserve(ds, per_unit_tone=2)
    plain_design = {"kind": "by_unit", "unit": "glyph", "caps": {"train": 120, "val": 30}}
    design = dict(plain_design, min_test_group=60)
    for seed in (13, 42):
        plain = splits.split_for(ds, seed, (0.4, 0.2, 0.4), plain_design)
        s = splits.split_for(big, seed, (0.4, 0.2, 0.4), design)
        n = len(ds.table)
        assert s[:n].equals(plain)                                    # the dataset's own examples: unchanged
        reserve = big.table["reserve"].to_numpy()
        assert set(s[reserve]) <= {"test", "unused"}                  # never trained on, never validation
        t = big.table.assign(split=s)
        test_units = set(t.loc[:n - 1].query("split == 'test'")["glyph"])
        assert set(t[reserve & (s == "test").to_numpy()]["glyph"]) <= test_units
        counts = t[t["split"] == "test"].groupby("group_tone").size()
        before = ds.table.assign(split=plain)[plain == "test"].groupby("group_tone").size()
        assert before["c"] < 60 <= counts["c"] == 60                   # the rare tone topped up to exactly 60
        assert counts["a"] == before["a"]                              # a tone with enough is left alone
        assert (t[t["split"] != "unused"].groupby("glyph")["split"].nunique() == 1).all()
        assert s.equals(splits.split_for(big, seed, (0.4, 0.2, 0.4), design))
        assert splits.stores_used_only(design) and not splits.stores_used_only(plain_design)
    with pytest.raises(LorafairError, match="needs reserve test examples"):
        splits.split_for(ds, 13, (0.4, 0.2, 0.4), design)
    with pytest.raises(LorafairError, match="only the by_unit design can use"):
        splits.split_for(big, 13, (0.4, 0.2, 0.4), {"kind": "mia_target", "seed": 13, "unit": "glyph"})
    with pytest.raises(LorafairError, match="positive whole number"):
        splits.split_for(big, 13, (0.4, 0.2, 0.4), dict(design, min_test_group=0))


def test_openmoji_reserve_renders_every_emoji_apart_from_the_main_renderings(tmp_path):
    """``test_reserve`` adds that many renderings of every emoji, from their own random stream: the
    ``n`` main renderings are byte-identical with or without it."""
    kw = {"task": "gender", "n": 24, "data_seed": 0, "render": {"size": 16}}
    a = data.load_openmoji_people(**kw, cache_dir=tmp_path / "a")
    b = data.load_openmoji_people(**kw, test_reserve=1, cache_dir=tmp_path / "b")
    glyphs = data.openmoji_people_glyphs()
    assert len(b.table) == 24 + len(glyphs) and b.table["reserve"].sum() == len(glyphs)
    assert not a.table["reserve"].any()
    for i in range(24):
        assert open(a.table["input"][i], "rb").read() == open(b.table["input"][i], "rb").read()
    r = b.table[b.table["reserve"]]
    assert r.groupby("drawing")["group_skin_tone"].nunique().eq(5).all()
    with pytest.raises(LorafairError, match="test_reserve must be"):
        data.load_openmoji_people(**kw, test_reserve=-1, cache_dir=tmp_path / "c")
