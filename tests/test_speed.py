"""The CPU speed work keeps results: head-only on cached features trains exactly like the per-step
loop, trimmed text batches give the same logits, early-stopped decoding scores the same text, and
the precision policy and `lorafair bench --cpu` behave as documented."""

import numpy as np
import pandas as pd
import pytest
import torch

from lorafair import cli, cpubench, data, models, precision, train
from lorafair.errors import LorafairError


def _split(n, seed=0):
    rng = np.random.default_rng(seed)
    return pd.Series(rng.choice(["train", "val", "test"], size=n, p=[0.6, 0.2, 0.2]))


@pytest.mark.parametrize("name", ["llama_tiny_random", "vit_tiny_random"])
def test_head_on_cached_features_equals_the_per_step_loop(name, smoke_kwargs):
    """No dropout inside these backbones: the two paths see the same features, augmentation draws
    and dropout masks, so their predictions agree to float precision."""
    spec = models.get_spec(name)
    if spec.kind == "text":
        texts = [f"comment number {i} " + "word " * (i % 7) for i in range(40)]
        enc = data.TextEncoder(texts, spec.tokenizer(), 16)
    else:
        ds = data.load("openmoji_people", **smoke_kwargs)
        enc = data.ImageEncoder(ds.table["input"].tolist()[:40], spec.image_size, spec.mean, spec.std)
    labels = torch.arange(40) % 2
    splits = _split(40)
    cfg = train.TrainConfig(epochs=2, lr=1e-2, batch_size=8, eval_batch_size=16, seed=3)
    outs = []
    for cached in (False, True):
        m, _ = models.build(name, 2, seed=5)
        m, info = models.adapt(m, spec, "head")
        if cached:
            out, hist = train.fit_predict_head(m, spec.head, None, enc, labels, splits, cfg, progress=False)
            assert hist["cached_features"]["views"] == enc.views
        else:
            out, hist = train.fit_predict(m, info["freeze_norm_stats"], enc, labels, splits, cfg, progress=False)
        outs.append((out, hist))
    (a, ha), (b, hb) = outs
    assert (a["pred"] == b["pred"]).all()
    np.testing.assert_allclose(a["prob"], b["prob"], atol=1e-5)
    assert ha["val_accuracy"] == pytest.approx(hb["val_accuracy"])


def test_trimmed_text_batches_give_the_padded_logits():
    spec = models.get_spec("bert_tiny_random")
    tok = spec.tokenizer()
    texts = ["a short one", "a somewhat longer comment with more words in it", "mid length text here"]
    enc = data.TextEncoder(texts, tok, 32)
    m, _ = models.build("bert_tiny_random", 2, seed=0)
    m.eval()
    batch = enc.view([0, 2])
    assert batch["input_ids"].shape[1] == int(enc.lengths[[0, 2]].max()) < 32
    with torch.no_grad():
        trimmed = m(**batch)
        full = m(input_ids=enc.input_ids[[0, 2]], attention_mask=enc.attention_mask[[0, 2]])
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)


def test_predict_returns_outputs_in_the_order_asked_whatever_the_length_order():
    spec = models.get_spec("bert_tiny_random")
    texts = ["x " * k for k in (9, 1, 5, 3, 7)]
    enc = data.TextEncoder(texts, spec.tokenizer(), 16)
    m, _ = models.build("bert_tiny_random", 2, seed=0)
    labels = torch.zeros(5, dtype=torch.long)
    acc = train.make_accelerator("fp32")
    out = train.predict(m, enc, [4, 0, 2], labels, acc, batch_size=2)
    m.eval()
    with torch.no_grad():
        ref = torch.cat([m(**enc.view([i])) for i in (4, 0, 2)])
    torch.testing.assert_close(out["logits"], ref, atol=1e-5, rtol=1e-5)


def test_decoding_stops_at_a_line_break_without_changing_the_scored_text():
    from lorafair import generation as gen

    model, tok = models.build_causal_lm("llama_tiny_random", seed=0)
    prompts = ["English: the nurse said English:", "English: a much longer prompt about the doctor and the lawyer English:"]
    cues = ("Turkish:", "English:")
    full = gen.generate(model, tok, prompts, 24)
    short = gen.generate(model, tok, prompts, 24, stop=("\n", *cues))
    for f, s in zip(full, short):
        assert f.startswith(s) and gen.scored_text(f, cues) == gen.scored_text(s, cues)


def test_precision_policy(monkeypatch):
    monkeypatch.delenv(precision.ENV_VAR, raising=False)
    if torch.cuda.is_available():
        pytest.skip("the CPU policy applies without a GPU")
    # the convolutional networks never use bf16 on a CPU
    assert precision.choose_precision("mobilenet_v2")[0] == "fp32"
    prec, why = precision.choose_precision("minilm")
    assert prec == ("bf16" if precision.native_bf16() else "fp32")
    if not precision.native_bf16():
        assert "no native bf16" in why
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    assert precision.choose_precision("minilm")[0] == "bf16"
    assert precision.choose_precision("efficientnet_lite0")[0] == "fp32"
    monkeypatch.setenv(precision.ENV_VAR, "fp32")
    assert precision.choose_precision("minilm") == ("fp32", f"set by {precision.ENV_VAR}=fp32")
    monkeypatch.setenv(precision.ENV_VAR, "half")
    with pytest.raises(LorafairError, match="valid choices: auto, fp32, bf16"):
        precision.choose_precision("minilm")


def test_records_state_precision_and_cpu(smoke_kwargs, tmp_path):
    from lorafair import experiments as ex
    from lorafair.runs import RunStore

    runner = ex.ClassificationRunner(RunStore(tmp_path), "openmoji_people", smoke_kwargs, progress=False)
    rec = runner.run(ex.classification_config("vision_classification", "smoke", "openmoji_people", smoke_kwargs,
                                              "vit_tiny_random", "head", 13, 1, 1e-2, 16, n_boot=20))
    env = rec.meta["environment"]
    assert env["precision"] in ("fp32", "bf16") and env["precision_reason"]
    assert set(env["cpu"]) == {"name", "capability", "avx512_bf16", "amx"}
    assert rec.meta["history"]["cached_features"]["views"] == 2


def test_bench_cpu_on_tiny_models_interleaves_every_variant(capsys):
    rows = cpubench.run(["vit_tiny_random", "bert_tiny_random"], methods=["head", "lora"],
                        variants=["fp32", "bf16", "channels_last"], batch=4, seq=8, steps=2, warmup=1)
    keys = {(r["model"], r["method"], r["variant"]) for r in rows}
    # channels_last only for the image model
    assert ("vit_tiny_random", "lora", "channels_last") in keys and ("bert_tiny_random", "lora", "channels_last") not in keys
    assert len(rows) == 2 * 3 + 2 * 2
    for r in rows:
        assert r["step_ms"] > 0 and r["eval_ms"] > 0 and r["rounds"] == 2
        if r["variant"] == "fp32":
            assert r["step_speedup"] == pytest.approx(1.0)
    assert cli.main(["bench", "--cpu", "--models", "bert_tiny_random", "--methods", "full", "--variants", "fp32",
                     "bf16", "--steps", "1", "--warmup", "0", "--batch-size", "2", "--seq-len", "8"]) == 0
    out = capsys.readouterr().out
    assert "native bf16" in out and "bert_tiny_random trains in" in out and "step_speedup" in out


def test_bench_cpu_errors_name_valid_choices(capsys):
    with pytest.raises(LorafairError, match="valid choices: head, head_per_step, lora, full, dora, ia3"):
        cpubench.measure("bert_tiny_random", "qlora")
    assert cli.main(["bench", "--cpu", "--variants", "fp16"]) == 2
    assert "valid choices: fp32, bf16, channels_last, compile" in capsys.readouterr().err
