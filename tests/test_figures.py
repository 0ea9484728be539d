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
