# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reading the records without the library
#
# Everything this book concludes is in two tables that the findings chapter writes from the run
# records: `results/findings.csv` (one row per paired comparison: its per-seed differences, interval,
# p-values, equivalence test and verdict, or why it is not counted) and `results/controls.csv` (one
# row per planted positive control). This page reads them with **pandas and seaborn alone**: no
# torch, no model, no install beyond `pip install pandas seaborn jupyter`. Download this notebook
# (the button at the top of the page) and the two files, put them side by side in a `results/`
# folder, and every cell below runs in any Jupyter.
#
# ```{admonition} Learning objectives
# :class: note
# After this page you can (1) recompute a verdict's interval from its per-seed differences;
# (2) find which cases carry a verdict and why the others do not; (3) read a positive control against
# its margin. *Prerequisites*: pandas; a t-interval.
# ```

# %% tags=["parameters"]
profile = "offline"        # whose records: offline reads results/ (smoke: _runs/smoke)
results_dir = None         # another folder holding findings.csv and controls.csv
force = False              # unused: this page trains nothing

# %% tags=["hide-input"]
import json
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from IPython.display import Markdown, display

# the 97.5% quantile of Student's t with k degrees of freedom (a printed t table), so that this page
# needs nothing but pandas and seaborn; scipy.stats.t.ppf(0.975, k) gives the same numbers
T975 = dict(enumerate([12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010,
                       2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739,
                       2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423], start=1))

folder = Path(results_dir or {"smoke": "_runs/smoke", "paper": "_runs/paper"}.get(profile, "results"))
cases = pd.read_csv(folder / "findings.csv")
cases["case"] = cases["dataset"] + ", " + cases["model"] + ": " + cases["metric"]  # one readable name per case
controls = pd.read_csv(folder / "controls.csv") if (folder / "controls.csv").exists() else pd.DataFrame()
counted = cases[cases["not counted because"].isna()]
display(Markdown(f"**Profile `{profile}`**, `{folder}/findings.csv`: {len(cases)} cases, {len(counted)} of them counted "
                 f"(they can carry a verdict); `controls.csv`: {len(controls)} planted controls."))

# %% [markdown]
# ## One verdict, recomputed
#
# A case's `per_seed` column holds its paired differences, one per seed (seed: difference). Their
# mean and 95% t-interval over seeds are the case's `difference`, `lo` and `hi`. The cell below
# recomputes them for the first counted LoRA-minus-full case and prints both.

# %% tags=["hide-input"]
pick = counted[counted["comparison"] == "LoRA - full"]
if pick.empty:  # nothing counted (a small profile): every LoRA-minus-full case with seeds
    pick = cases[(cases["comparison"] == "LoRA - full") & (cases["seeds"] >= 1)]
row = (pick if len(pick) else cases).iloc[0]
d = pd.Series(json.loads(row["per_seed"]), dtype=float)
if len(d) > 1:
    half = T975.get(len(d) - 1, 1.96) * d.std(ddof=1) / len(d) ** 0.5
    display(Markdown(f"**{row['case']}**, {row['comparison']}: {len(d)} seeds; recomputed "
                     f"{d.mean():+.4f} [{d.mean() - half:+.4f}, {d.mean() + half:+.4f}], in the table "
                     f"{row['difference']:+.4f} [{row['lo']:+.4f}, {row['hi']:+.4f}]; verdict: {row['verdict']}."))
else:
    display(Markdown(f"**{row['case']}** rests on {len(d)} seed(s): no interval."))

# %% [markdown]
# ## The counted cases, seed by seed
#
# Each dot is one seed's paired difference (LoRA minus full fine-tuning; the counted cases, or every
# case with seeds where none is counted); the bar is the margin the
# registered design set for the metric: an equivalent verdict needs the whole interval inside it.

# %% tags=["hide-input"]
long = pick.assign(per_seed=pick["per_seed"].map(json.loads)) if len(pick) else pick
rows = [{"case": r.case, "difference": v, "margin": r.margin} for r in long.itertuples() for v in r.per_seed.values()] \
    if len(long) else []
dots = pd.DataFrame(rows)
if len(dots):
    fig, ax = plt.subplots(figsize=(7, 0.45 * dots["case"].nunique() + 1.2))
    sns.stripplot(data=dots, x="difference", y="case", ax=ax, color="black", size=3, jitter=0.15)
    for i, (case, m) in enumerate(dots.groupby("case", sort=False)["margin"].first().items()):
        ax.plot([-m, m], [i, i], color="tab:green", alpha=0.3, lw=8, solid_capstyle="butt")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("LoRA minus full fine-tuning, per seed")
    ax.set_ylabel("")
    plt.show()
else:
    display(Markdown("No counted LoRA-minus-full case in these records."))

# %% [markdown]
# ## Why the other cases carry no verdict

# %% tags=["hide-input"]
reasons = cases.loc[cases["not counted because"].notna(), "not counted because"].str.split(";").str[0]
display(reasons.value_counts().rename_axis("first reason").reset_index(name="cases"))

# %% [markdown]
# ## Positive controls
#
# A control plants an effect of a known kind (a group's labels partly flipped, a target trained
# longer) and asks whether the experiment's seeds detect it; `size` sets its effect against the
# margin of the quantity it was planted on.

# %% tags=["hide-input"]
if len(controls):
    display(controls[["scope", "control", "seeds", "effect", "lo", "hi", "margin", "size", "detected"]]
            .round(3))

# %% [markdown]
# ## Exercise
#
# ````{exercise}
# :label: records-ex-interval
#
# **Recompute a verdict by hand.** Pick any counted case of `findings.csv` whose comparison is
# "LoRA - head". Recompute its mean and 95% t-interval from `per_seed`, as the first cell of this page
# does, and check them against its `difference`, `lo` and `hi`. Then check its verdict: is the
# interval inside the margin (`margin`), on one side of zero, or neither? Only pandas is needed;
# nothing trains.
# ````
#
# ````{solution} records-ex-interval
# :class: dropdown
#
# The recomputed mean and interval agree with the table to rounding (this page's first cell shows
# the same for a LoRA-minus-full case). An interval inside the margin needs the equivalence test
# (`p_tost_holm` below 0.05) to be called *equivalent*; an interval on one side of zero needs the
# Holm-adjusted p (`p_holm`) below 0.05 to be called *better* or *worse*; otherwise the case is
# *inconclusive*, and its `mde` says how large a difference its seeds could have seen.
# ````
