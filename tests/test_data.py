import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lorafair import data, splits
from lorafair.errors import LorafairError


@pytest.mark.parametrize("name,expected", [
    ("25_0_1_20170116174525125.jpg.chip.jpg", (25, 0, 1)),
    ("1_1_4_20161221193016140.jpg.chip.jpg", (1, 1, 4)),
    ("61_1_20170109150557335.jpg.chip.jpg", None),       # race missing (one of the 3 known files)
    ("39_1_20170116174525125.jpg.chip.jpg", None),
    ("25_0_7_20170116174525125.jpg.chip.jpg", None),     # race out of range
    ("25_2_1_20170116174525125.jpg.chip.jpg", None),     # gender out of range
    ("0_0_1_20170116174525125.jpg.chip.jpg", None),      # age 0 is outside the bins
    ("25_0_1_2017.jpg", None),
    ("notes.txt", None),
])
def test_parse_utkface_name(name, expected):
    assert data.parse_utkface_name(name) == expected


@pytest.mark.parametrize("age,bin_", [(1, 0), (10, 0), (11, 1), (20, 1), (21, 2), (80, 7), (81, 8), (116, 8)])
def test_utk_age_bins_are_right_inclusive(age, bin_):
    assert data.utk_age_bin(age) == bin_


def _utk_fixture(d):
    names = ["25_0_0_20170116174525125.jpg.chip.jpg", "31_1_1_20170116174525126.jpg.chip.jpg",
             "8_1_2_20170116174525127.jpg.chip.jpg", "85_0_3_20170116174525128.jpg.chip.jpg",
             "44_1_4_20170116174525129.jpg.chip.jpg",
             "61_1_20170109150557335.jpg.chip.jpg",   # malformed
             "39_1_20170116174525125.jpg.chip.jpg"]   # malformed
    for i, n in enumerate(names):
        Image.new("RGB", (200, 200), (i * 30, 100, 100)).save(d / n)
    (d / "README.txt").write_text("not an image")


def test_load_utkface_counts_skipped_records(tmp_path):
    _utk_fixture(tmp_path)
    ds = data.load_utkface(tmp_path, task="gender")
    assert len(ds.table) == 5
    assert ds.skipped == {"malformed_name": 2, "not_an_image": 1}
    assert ds.table.set_index("example_id").loc["31_1_1_20170116174525126", "label"] == 1
    assert sorted(ds.table["group_race"]) == sorted(data.UTK_RACES)
    age = data.load_utkface(tmp_path, task="age")
    assert age.num_labels == 9
    assert dict(zip(age.table["age"], age.table["label"])) == {25: 2, 31: 3, 8: 0, 85: 8, 44: 4}


def test_missing_utkface_dir_says_where_to_get_it(tmp_path):
    with pytest.raises(LorafairError, match="susanqq.github.io/UTKFace.*data/UTKFace"):
        data.load_utkface(tmp_path / "nope")


def test_unknown_dataset_and_task_name_valid_choices(tmp_path):
    with pytest.raises(LorafairError, match="valid choices: openmoji_people, utkface"):
        data.load("celeba")
    with pytest.raises(LorafairError, match="valid choices: gender, activity"):
        data.load_openmoji_people(task="age")


def _table(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"example_id": [f"x{i:04d}" for i in range(n)], "label": rng.integers(0, 2, n),
                         "group_g": rng.choice(["a", "b", "c"], n, p=[0.7, 0.25, 0.05])})


def test_splits_disjoint_complete_stratified_deterministic():
    t = _table()
    s = splits.assign_splits(t, 13, stratify=["label", "group_g"])
    assert set(s) == {"train", "val", "test"}
    assert s.notna().all()  # every example in exactly one split
    ids = {k: set(t.loc[s == k, "example_id"]) for k in data.SPLITS}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert abs((s == "train").mean() - 0.6) < 0.03
    for g in "abc":  # every group, even the 5% one, is in every split
        assert set(s[t["group_g"] == g]) == {"train", "val", "test"}
    assert s.equals(splits.assign_splits(t, 13, stratify=["label", "group_g"]))
    # row order does not matter, only ids and seed
    shuffled = t.sample(frac=1, random_state=3)
    assert splits.assign_splits(shuffled, 13, stratify=["label", "group_g"]).sort_index().equals(s.sort_index())
    assert not s.equals(splits.assign_splits(t, 42, stratify=["label", "group_g"]))


def test_bad_split_fractions():
    with pytest.raises(LorafairError, match="fractions"):
        splits.assign_splits(_table(), 0, fractions=(0.5, 0.5, 0.5))


def test_openmoji_glyph_inventory():
    g = data.openmoji_people_glyphs()
    per_role = g.groupby("role").size()
    assert (per_role == 10).all()  # man/woman x five tones
    assert set(g["tone"]) == set(data.TONE_MIX)
    assert set(data.ACTIVITY_OF) <= set(g["role"])
    assert data.person_drawing("1F469-1F3FD-200D-1F33E") == data.person_drawing("1F469-1F3FF-200D-1F33E") == "1F469-200D-1F33E"
    assert data.person_drawing("1F3C3-1F3FB-200D-2640-FE0F") == "1F3C3-200D-2640-FE0F"


def test_openmoji_rendering_is_deterministic(tmp_path):
    kw = {"task": "gender", "n": 12, "data_seed": 5, "render": {"size": 32}}
    a = data.load_openmoji_people(cache_dir=tmp_path / "a", **kw)
    b = data.load_openmoji_people(cache_dir=tmp_path / "b", **kw)
    for pa, pb in zip(a.table["input"], b.table["input"]):
        assert np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))
    assert a.table.drop(columns="input").equals(b.table.drop(columns="input"))
    assert Image.open(a.table["input"][0]).size == (32, 32)
    act = data.load_openmoji_people(task="activity", n=40, data_seed=1, render={"size": 32}, cache_dir=tmp_path / "r")
    assert act.label_names == ["work", "sport", "gesture", "fantasy"] and act.table["label"].between(0, 3).all()
    assert (act.table.groupby("drawing")["label"].nunique() == 1).all()   # one activity per person drawing
    assert (act.table["drawing"] == act.table["sequence"].str.replace(r"-1F3F[B-F]", "", regex=True)).all()
