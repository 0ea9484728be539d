import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from lorafair import data
from lorafair import experiments as ex
from lorafair import models, splits
from lorafair.errors import LorafairError
from lorafair.runs import RunStore

AXES = data.MHS_AXES


def mhs_rows():
    """Annotation rows in the upstream layout of ucberkeley-dlab/measuring-hate-speech."""
    base = {"platform": 0, "sentiment": 2.0, "respect": 2.0, "insult": 1.0, "hatespeech": 1.0,
            "annotator_gender": "woman", "annotator_educ": "college_grad_ba"}
    flags = {f"target_{a}": False for a in AXES} | {f"target_{a}_{g}": False for a in AXES for g in AXES[a]}
    rows = []

    def add(cid, aid, text, score, **on):
        r = {**base, **flags, "comment_id": cid, "annotator_id": aid, "text": text, "hate_speech_score": score}
        r.update(on)
        rows.append(r)

    # comment 1: hateful, about religion; muslim flagged by the first annotator only, christian by 2 of 3
    add(1, 10, "text one", 0.8, target_religion=True, target_religion_muslim=True, target_religion_christian=True)
    add(1, 11, "text one", 0.8, target_religion=True, target_religion_christian=True)
    add(1, 12, "text one", 0.8)
    # comment 2: not about religion (race only)
    add(2, 10, "text two", -1.2, target_race=True, target_race_black=True)
    add(2, 13, "text two", -1.2, target_race=True, target_race_black=True)
    # comment 3: score exactly at the threshold -> not hate; religion, jewish
    add(3, 14, "text three", 0.5, target_religion=True, target_religion_jewish=True)
    # comment 4: religion according to a minority of its annotators only (first says yes)
    add(4, 15, "text four", 2.1, target_religion=True, target_religion_atheist=True)
    add(4, 16, "text four", 2.1)
    add(4, 17, "text four", 2.1)
    # an empty comment
    add(5, 18, "", 0.0, target_religion=True)
    return pd.DataFrame(rows)


def test_mhs_majority_aggregation():
    t, info = data.prepare_measuring_hate_speech(mhs_rows(), "religion", "majority")
    assert info["skipped"] == {"empty_text": 1}
    assert list(t["example_id"]) == ["1", "3"]        # comment 4 targets religion only for 1 of 3
    assert list(t["label"]) == [1, 0]                 # 0.8 > 0.5 ; 0.5 is not > 0.5
    row1 = t.set_index("example_id").loc["1"]
    assert row1["group_christian"] and not row1["group_muslim"]
    assert t.set_index("example_id").loc["3", "group_jewish"]
    assert {c[len("group_"):] for c in t.columns if c.startswith("group_")} == set(AXES["religion"])


def test_mhs_first_annotator_rule_reproduces_original():
    t, _ = data.prepare_measuring_hate_speech(mhs_rows(), "religion", "first")
    assert list(t["example_id"]) == ["1", "3", "4"]   # first rows decide
    assert t.set_index("example_id").loc["1", "group_muslim"]
    assert t.set_index("example_id").loc["4", "label"] == 1


def test_mhs_threshold_and_all_axes():
    t, info = data.prepare_measuring_hate_speech(mhs_rows(), "all", "majority", threshold=-2.0)
    assert len(t) == 4 and t["label"].tolist() == [1, 1, 1, 1]
    assert "group_race_black" in t.columns and "group_religion_christian" in t.columns
    with pytest.raises(LorafairError, match="valid choices: race, religion, age, gender, sexuality, all"):
        data.prepare_measuring_hate_speech(mhs_rows(), "politics")
    with pytest.raises(LorafairError, match="lacks columns"):
        data.prepare_measuring_hate_speech(mhs_rows().drop(columns="target_religion_hindu"), "religion")


def test_mhs_from_local_file_and_split_disjointness(tmp_path):
    rows = []
    rng = np.random.default_rng(0)
    for cid in range(60):  # a larger fixture: 60 comments x 2 annotators
        for aid in range(2):
            rows.append({"comment_id": cid, "annotator_id": aid, "text": f"comment {cid}",
                         "hate_speech_score": float(rng.normal()), "target_religion": True,
                         **{f"target_religion_{g}": bool(rng.random() < 0.3) for g in AXES["religion"]}})
    path = tmp_path / "mhs.parquet"
    pd.DataFrame(rows).to_parquet(path)
    ds = data.load("measuring_hate_speech", axis="religion", source=str(path))
    assert len(ds.table) == 60 and ds.kind == "text"
    split = splits.split_for(ds, 13)
    ids = {k: set(ds.table.loc[split == k, "example_id"]) for k in data.SPLITS}
    assert sum(map(len, ids.values())) == 60
    assert not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"]) and not (ids["train"] & ids["val"])


def test_mhs_fixture_trains_tiny_llama_end_to_end(tmp_path):
    """The paper path on a Measuring Hate Speech fixture: boolean, overlapping subgroup columns."""
    rows, rng = [], np.random.default_rng(1)
    for cid in range(60):
        for aid in range(2):
            rows.append({"comment_id": cid, "annotator_id": aid, "text": f"comment number {cid} about things",
                         "hate_speech_score": float(rng.normal()), "target_religion": True,
                         **{f"target_religion_{g}": bool(rng.random() < 0.4) for g in AXES["religion"]}})
    path = tmp_path / "mhs.parquet"
    pd.DataFrame(rows).to_parquet(path)
    kw = {"axis": "religion", "source": str(path)}
    runner = ex.ClassificationRunner(RunStore(tmp_path / "runs"), "measuring_hate_speech", kw, progress=False)
    cfg = ex.classification_config("llm_classification", "smoke", "measuring_hate_speech", kw, "llama_tiny_random",
                                   "lora", 13, 1, 1e-3, 16, n_boot=20)
    rec = runner.run(cfg)
    assert set(rec.metrics["attributes"]) == set(AXES["religion"])  # one entry per subgroup column
    muslim = rec.metrics["attributes"]["muslim"]["groups"]
    assert set(muslim) <= {"True", "False"}
    t = rec.predictions()
    t = t[t["split"] == "test"]
    assert muslim["True"]["count"] == int(t["group_muslim"].sum())


def test_mhs_without_network_points_to_offline_profile(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LorafairError, match="--profile offline"):
        data.load("measuring_hate_speech", axis="religion")


def test_stereoset_pairs_and_split_keeps_pairs_together():
    ds = data.load("stereoset", n_pairs=200, data_seed=0)
    t = ds.table
    assert (t.groupby("pair_id")["label"].agg(sorted) .map(tuple) == (0, 1)).all()
    assert set(t["group_bias_type"]) == {"race", "profession", "gender", "religion"}
    assert t["group_bias_type"].value_counts().min() >= 20  # at least 10 pairs per type
    s = splits.split_for(ds, 42)
    assert (t.assign(s=s).groupby("pair_id")["s"].nunique() == 1).all()
    full = data.load("stereoset")
    assert full.table["pair_id"].nunique() == 4229 and full.skipped == {"missing_field": 0}


def test_crows_pairs_fills_masks():
    ds = data.load("crows_pairs")
    assert ds.table["pair_id"].nunique() == 1018 and len(ds.attributes) == 1
    assert not ds.table["input"].str.contains(r"\[MASK\]").any()
    assert ds.table["group_bias_type"].nunique() == 9


@pytest.mark.parametrize("name,expected", [("minilm", 74_498), ("smollm2_135m", 461_952)])
def test_offline_text_lora_counts(name, expected):
    m, spec = models.build(name, 2, seed=0)
    _, info = models.adapt(m, spec, "lora", rank=8, alpha=16)
    assert info["trainable_params"] == expected  # counted independently from the architecture


def test_pad_token_is_set_explicitly():
    tok = models.get_spec("smollm2_135m").tokenizer()
    assert tok.pad_token == "<|im_end|>" and tok.padding_side == "right"
    m, _ = models.build("llama_tiny_random", 2, seed=0)
    assert m.net.config.pad_token_id == tok.pad_token_id


@pytest.mark.parametrize("model", ["llama_tiny_random", "mistral_tiny_random", "bert_tiny_random"])
def test_text_run_end_to_end(model, tmp_path):
    kw = {"n_pairs": 30, "data_seed": 0}
    runner = ex.ClassificationRunner(RunStore(tmp_path), "stereoset", kw, progress=False)
    cfg = ex.classification_config("llm_classification", "smoke", "stereoset", kw, model, "lora", 13, 1, 1e-3, 16,
                                   n_boot=50)
    rec = runner.run(cfg)
    p = rec.predictions()
    t = p[p["split"] == "test"]
    assert rec.metrics["accuracy"]["value"] == pytest.approx(accuracy_score(t["label"], t["pred"]))
    assert cfg["max_length"] == 48 and "truncated_inputs" in rec.meta
    # the two sentences of a pair are always in the same split
    pair = p["example_id"].str[:-1]
    assert (p.assign(pair=pair).groupby("pair")["split"].nunique() == 1).all()


@pytest.mark.parametrize("text,group", [
    ("women are the worst", "gender"),
    ("those blacks again", "race"),
    ("gay people and muslims", "other identity"),   # two groups -> several -> merged
    ("the muslims did it", "other identity"),        # religion is merged (too small alone)
    ("you are an idiot", "none"),
    ("Womanizer", "none"),                           # whole words only
])
def test_identity_target_lexicon(text, group):
    assert data.target_group(text) == group


def test_identity_attack_dataset():
    ds = data.load("identity_attack")
    t = ds.table
    assert len(t) == 993 and ds.skipped == {"missing_field": 0}
    assert t["label"].sum() == (t["identity_attack"] > 0.5).sum()
    assert set(t["group_target"]) == {"gender", "race", "other identity", "none"}
    small = data.load("identity_attack", n=60, data_seed=0)
    assert len(small.table) == 60 and set(small.table["example_id"]) <= set(t["example_id"])
