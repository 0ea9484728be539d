"""Figures whose text never collides: ``plots.overlapping_texts`` finds every pair of drawn texts
whose boxes overlap, and the chapters' per-group figures pass it in the book's style."""
import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd

from lorafair import plots

TONES = ["light", "medium-light", "medium", "medium-dark", "dark"]


def _preds(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for model in ("mobilenet_v2", "efficientnet_lite0"):
        for method in ("head", "lora", "full"):
            for s in (13, 1337, 42):
                n = 400
                p = rng.uniform(0, 1, n)
                y = (rng.uniform(0, 1, n) < p).astype(int)
                rows.append(pd.DataFrame({"model": model, "method": method, "seed": s, "split": "test",
                                          "example_id": [f"e{i}" for i in range(n)], "label": y,
                                          "pred": (p > 0.5).astype(int), "prob": p, "prob_0": 1 - p, "prob_1": p,
                                          "group_skin_tone": rng.choice(TONES, n)}))
    return pd.concat(rows, ignore_index=True)


def test_the_check_finds_texts_that_collide():
    plots.setup()
    fig, ax = plots.subplots(1, 1)
    ax.set_title("a title")
    ax.text(0.5, 0.5, "one label", transform=ax.transAxes)
    assert plots.overlapping_texts(fig) == []
    ax.text(0.52, 0.5, "another label", transform=ax.transAxes)
    assert ("one label", "another label") in plots.overlapping_texts(fig)
    plots.plt.close(fig)


def test_the_per_group_figures_have_no_colliding_text():
    plots.setup()
    preds = _preds()
    fig = plots.group_accuracy(plots.pooled_group_accuracy(preds, "skin_tone", ["model", "method"]), "skin_tone",
                               "offline")
    assert plots.overlapping_texts(fig) == []
    plots.plt.close(fig)
    fig = plots.reliability(preds, "skin_tone", "offline")
    assert plots.overlapping_texts(fig) == []
    plots.plt.close(fig)


def test_the_findings_forest_has_no_colliding_text():
    plots.setup()
    rng = np.random.default_rng(1)
    rows = []
    for comp in ("LoRA - full", "LoRA - head"):
        for metric, margin, higher in (("accuracy", 0.02, True), ("worst group accuracy", 0.05, True),
                                       ("calibration gap (temperature-scaled)", 0.05, False)):
            d = rng.normal(0.0, 0.04, 15)
            rows.append({"comparison": comp, "case": f"Vision: OpenMoji people (gender), MobileNetV2: {metric}",
                         "seeds": 15, "higher_is_better": higher, "margin": margin,
                         "per_seed": dict(enumerate(d)), "difference": d.mean(), "lo": d.mean() - 0.02,
                         "hi": d.mean() + 0.02, "verdict": "inconclusive"})
    fig = plots.forest(pd.DataFrame(rows), "offline", "the counted cases")
    assert plots.overlapping_texts(fig) == []
    plots.plt.close(fig)
    # every case of a small profile: five-line labels (long settings and metrics, one seed each) in many
    # rows; rows of a fixed height let neighbouring labels overlap (48 pairs at 0.62 in a row)
    long = []
    for comp, n in (("LoRA - full", 30), ("LoRA - head", 20), ("LoRA - base", 3), ("full - base", 3)):
        for i in range(n):
            d = rng.normal(0.0, 0.04, 1)
            long.append({"comparison": comp, "case": "Generation: pronoun task, llama tiny random: pro-stereotypical "
                         f"preference (forced choice) (balanced refs) {i}", "seeds": 1, "higher_is_better": False,
                         "margin": 0.05, "per_seed": dict(enumerate(d)), "difference": d.mean(), "lo": np.nan,
                         "hi": np.nan, "verdict": "no verdict"})
    fig = plots.forest(pd.DataFrame(long), "smoke", "every case")
    assert plots.overlapping_texts(fig) == []
    plots.plt.close(fig)


def test_the_performance_figures_have_no_colliding_text_with_few_or_many_rows():
    """Two rows (the smoke profile) once put the legend over the x labels and the GPU's memory line
    label over the title; thirteen rows (the offline profile) must pass as well."""
    plots.setup()
    for labels in (["vit_base:lora, autocast, b4", "llama_7b:full, bf16, ckpt, b2"],
                   [f"configuration {i}, bf16, b{i}" for i in range(13)]):
        shares = pd.DataFrame({c: np.full(len(labels), 1 / len(plots.TIME_STYLE)) for c in plots.TIME_STYLE})
        fig = plots.step_time_shares(shares, labels, "H200", "smoke")
        assert plots.overlapping_texts(fig) == []
        plots.plt.close(fig)
        mem = pd.DataFrame({c: np.full(len(labels), 5.0) for c in plots.MEMORY_STYLE})
        fig = plots.step_memory(mem, labels, "H200", 141.0, "smoke")
        assert plots.overlapping_texts(fig) == []
        plots.plt.close(fig)
