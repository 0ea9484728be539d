"""A user's own dataset file (dataset ``file``, ``lorafair run llm --data FILE``): the same table
contract as the built-in datasets, every refusal in one line before anything trains, and nothing
written to the store when a file is refused."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lorafair import cli, data, userdata
from lorafair.errors import LorafairError


def _frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 2, n)
    return pd.DataFrame({"text": [f"row {i} is {'kind' if v else 'rude'}" for i, v in enumerate(lab)],
                         "label": np.where(lab == 1, "toxic", "fine"), "group": rng.choice(["a", "b"], n)})


def test_a_file_becomes_the_dataset_contract_with_ids_that_follow_the_rows(tmp_path):
    f = tmp_path / "mine.csv"
    t = _frame()
    t.to_csv(f, index=False)
    ds = data.load("file", path=str(f), sha256=userdata.file_sha256(f))
    assert ds.kind == "text" and ds.attributes == ["group"] and ds.label_names == ["fine", "toxic"]
    assert list(ds.table.columns) == ["example_id", "input", "label", "group_group"]
    assert ds.table["example_id"].is_unique and set(ds.table["label"]) == {0, 1}
    # the same rows in another order keep their ids; parquet and JSON lines read the same
    t.iloc[::-1].to_parquet(tmp_path / "mine.parquet")
    t.to_json(tmp_path / "mine.jsonl", orient="records", lines=True)
    for other in ("mine.parquet", "mine.jsonl"):
        again = data.load("file", path=str(tmp_path / other))
        assert set(again.table["example_id"]) == set(ds.table["example_id"])
        assert again.table.set_index("example_id")["label"].equals(ds.table.set_index("example_id")["label"]
                                                                    .loc[again.table["example_id"]])


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop(columns="label"), "no column 'label' (its columns: text, group); name the right one with --label-col"),
    (lambda t: t.assign(label="fine"), "column 'label' has one label ('fine'); a classifier needs at least two"),
    (lambda t: t.assign(label=np.linspace(0, 1, len(t))), "holds numbers that are not whole"),
    (lambda t: t.assign(text=[""] + list(t["text"][1:])), "column 'text' is empty in 1 rows (the first is row 1)"),
    (lambda t: pd.concat([t, t.iloc[:2]]), "2 rows repeat an earlier row's 'text'"),
    (lambda t: t.drop(columns="group"), "no column 'group'"),
])
def test_a_bad_file_is_refused_in_one_line(tmp_path, change, message):
    f = tmp_path / "bad.csv"
    change(_frame()).to_csv(f, index=False)
    with pytest.raises(LorafairError) as e:
        data.load("file", path=str(f))
    assert message in str(e.value) and "\n" not in str(e.value) and str(f) in str(e.value)


def test_a_changed_file_is_refused_under_its_old_hash(tmp_path):
    f = tmp_path / "mine.csv"
    _frame().to_csv(f, index=False)
    old = userdata.file_sha256(f)
    _frame(seed=1).to_csv(f, index=False)
    with pytest.raises(LorafairError, match="the file changed since this run was configured"):
        data.load("file", path=str(f), sha256=old)


def test_image_paths_must_exist_inside_the_files_folder(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.png")
    t = pd.DataFrame({"image": ["img/a.png", "img/b.png"], "label": [0, 1], "group": ["x", "y"]})
    t.to_csv(tmp_path / "images.csv", index=False)
    with pytest.raises(LorafairError, match="row 2, column 'image': no image 'img/b.png' next to the file"):
        data.load("file", path=str(tmp_path / "images.csv"), image_col="image")
    t.assign(image=["img/a.png", "../outside.png"]).to_csv(tmp_path / "escape.csv", index=False)
    with pytest.raises(LorafairError, match="leaves the file's folder"):
        data.load("file", path=str(tmp_path / "escape.csv"), image_col="image")
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "b.png")
    ds = data.load("file", path=str(tmp_path / "images.csv"), image_col="image")
    assert ds.kind == "image" and ds.table["input"].map(lambda p: p.endswith(".png")).all()


def test_small_groups_are_named_with_their_counts(tmp_path):
    f = tmp_path / "mine.csv"
    _frame(200).to_csv(f, index=False)
    small = userdata.small_groups(data.load("file", path=str(f)), 0.2, 100)
    assert set(small["group"]) == {"a", "b"} and sum(small["group"].values()) == 200


def test_the_command_refuses_a_bad_file_before_anything_is_written(tmp_path, capsys):
    f = tmp_path / "bad.csv"
    _frame().drop(columns="label").to_csv(f, index=False)
    store = tmp_path / "store"
    assert cli.main(["run", "llm", "--profile", "smoke", "--data", str(f), "--results-dir", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lorafair: error: --data") and "--label-col" in err and len(err.splitlines()) == 1
    assert not store.exists()


def test_the_command_trains_lora_on_a_users_file(tmp_path, capsys):
    f = tmp_path / "mine.csv"
    _frame(80).to_csv(f, index=False)
    store = tmp_path / "store"
    assert cli.main(["run", "llm", "--profile", "smoke", "--data", str(f), "--method", "lora",
                     "--results-dir", str(store), "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert "too small to carry a claim" in out and "test accuracy" in out
    from lorafair.runs import RunStore

    (rec,) = RunStore(store).records("llm_classification")
    assert rec.config["dataset"] == "file" and rec.config["dataset_kwargs"]["sha256"] == userdata.file_sha256(f)
    p = rec.predictions()
    assert set(p["split"]) == {"train", "val", "test"} and "group_group" in p
