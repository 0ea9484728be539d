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
# # Findings: when is LoRA worse, better, or indistinguishable?
#
# This chapter trains nothing. It reads every run record of the chosen profile that the other
# chapters made and answers the study's question case by case. A *case* is one experiment, dataset
# and model; each case is measured on one metric. For every case it gives the **paired** difference
# LoRA minus full fine-tuning, and LoRA minus head-only (classification) or minus the base model
# (generation), on the same test examples (for membership inference the same attacked examples,
# for the token-bias probe the same texts). Each difference has a 95% paired bootstrap interval.
# The verdict is "LoRA worse" or "LoRA better" only when the interval excludes zero. For accuracy
# and worst-group accuracy higher is better. For attack AUC higher is worse, because the model
# leaks more about its training data. For the stereotype excess of generations (the rate of
# pro-stereotypical pronouns minus the rate of anti-stereotypical ones) and for the token-bias flip
# rate (how often the answer changes when only the order or symbols of the options change) higher
# is worse.

# %% tags=["parameters"]
profile = "offline"        # the profile whose run records are read
n_boot = None
results_dir = None
force = False              # unused here: this chapter trains nothing

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from lorafair import findings, plots
from lorafair.notebook import setup_chapter

P, store = setup_chapter("findings", globals())
cases = findings.all_cases(store, P["profile"], P["n_boot"])
if cases.empty:
    raise RuntimeError(f"no run records of profile {P['profile']!r} in {P['results_dir']}: run the other chapters first")
ctrl = findings.controls(store, P["profile"], P["n_boot"])
cases = findings.apply_count_rules(cases, ctrl, findings.learned_tasks(store, P["profile"]))
glue("findings_cases_total", len(cases), display=False)
glue("findings_cases_counted", int(cases["counted"].sum()), display=False)
display(Markdown(f"**Profile `{P['profile']}`**: {len(cases)} comparisons from the run records in "
                 f"`{P['results_dir']}/`, {int(cases['counted'].sum())} of which enter the count (below)."))

# %% [markdown]
# ## Every case

# %% tags=["hide-input", "full-width"]
fig = plots.forest(cases, P["profile"])
glue("findings_forest_fig", fig, display=False)
plots.plt.close(fig)


# %% [markdown]
# ```{glue:figure} findings_forest_fig
# :name: fig-findings-forest
#
# Every paired comparison, one panel per comparison (LoRA minus full fine-tuning, minus head-only, minus the base model), with its 95% paired bootstrap interval. Orange down-triangles: LoRA worse; blue up-triangles: LoRA better; grey circles: the interval contains zero.
# ```

# %% [markdown]
# ## The count
#
# A case enters the count only if it can carry a verdict: it rests on at least 3 seeds (independent
# training runs), a positive control of its experiment (for membership inference, of its attacked
# task; for generation, of its part) was detected, and, in classification, both compared methods
# learned the task (pooled test accuracy with a 95% lower bound above the majority-class rate). The
# other cases are shown in the table with the reason; they are results, but not evidence either way.
# How many counted cases fall on each side, per comparison:

# %% tags=["hide-input"]
table = findings.counts(cases)
display(table)
vs_full = table.loc["LoRA - full"] if "LoRA - full" in table.index else pd.Series(0, index=table.columns)
for k, v in vs_full.items():  # zero where nothing is counted, so the introduction's numbers always exist
    glue(f"findings_full_{k.replace(' ', '_').lower()}", int(v), display=False)
glue("findings_full_total", int(vs_full.sum()), display=False)

# %% tags=["hide-input", "full-width"]
show = cases.assign(**{"difference [95% CI]": lambda d: d.apply(
    lambda r: f"{r['difference']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]", axis=1)})
display(show[["experiment", "dataset", "model", "metric", "comparison", "difference [95% CI]", "seeds", "verdict",
              "counted", "not counted because"]].style.format(precision=3).hide(axis="index"))

# %% [markdown]
# ## What the records cost
#
# The run time stored in every record, summed per experiment (single-process wall time of each
# run; parallel workers overlap them, so a build takes less). The hardware is in each record's
# `config.json`.

# %% tags=["hide-input"]
cost_rows = []
for exp in ("vision_classification", "llm_classification", "membership_inference", "generation_fairness"):
    recs = [r for r in store.records(exp) if r.config.get("profile") == P["profile"]]
    secs = sum(r.meta["wall_seconds"] for r in recs)
    cost_rows.append({"experiment": exp, "runs": len(recs), "run time (min)": round(secs / 60, 1)})
    glue(f"cost_{exp}_runs", len(recs), display=False)
    glue(f"cost_{exp}_minutes", round(secs / 60, 1), display=False)
display(pd.DataFrame(cost_rows).style.format(precision=3).hide(axis="index"))

# %% [markdown]
# ## Positive controls
#
# Each experiment must show that it can detect the kind of effect it reports on. A control plants
# an effect of known direction and checks that the chapter's own paired analysis finds it (95%
# interval excluding zero). An experiment whose control is not detected cannot support "no
# difference" claims at this scale; one with no control yet is listed as such.

# %% tags=["hide-input", "full-width"]
glue("findings_controls_detected", int((ctrl["detected"] == "detected").sum()), display=False)
glue("findings_controls_total", int((ctrl["detected"] != "no control").sum()), display=False)
display(ctrl.drop(columns=["kind"]).rename(columns={"effect": "planted effect", "n": "test examples",
                                                   "scope": "vouches for"})
        .style.format(precision=3, na_rep="").hide(axis="index"))

# %% [markdown]
# ## Reading
#
# Generated from the table above.

# %% tags=["hide-input"]
lines = [f"- {int(cases['counted'].sum())} of {len(cases)} cases enter the count; the verdicts below are theirs."]
for comp, sub in cases[cases["counted"]].groupby("comparison", sort=False):
    worse = sub[sub["verdict"] == "LoRA worse"]
    better = sub[sub["verdict"] == "LoRA better"]
    lines.append(f"- **{comp}**: {len(sub)} cases; LoRA worse in {len(worse)}, better in {len(better)}, "
                 f"indistinguishable in {len(sub) - len(worse) - len(better)}.")
    for label, part in (("worse", worse), ("better", better)):
        for _, r in part.iterrows():
            lines.append(f"  - LoRA {label}: {r['case']} ({r['difference']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}], "
                         f"{r['seeds']} seed{'s' if r['seeds'] > 1 else ''}).")
shown, tried = findings.power_scopes(ctrl)
missed = sorted(tried - shown)
absent = ctrl[ctrl["detected"] == "no control"]["experiment"].tolist()
if missed or absent:
    lines.append("- **Power.** " + (f"No positive control was detected in {', '.join(f'`{e}`' for e in missed)}: "
                 "there, an indistinguishable difference is no evidence of equal treatment, and those cases are not "
                 "counted. " if missed else "")
                 + (f"{', '.join(f'`{e}`' for e in absent)} ha{'s' if len(absent) == 1 else 've'} no positive control yet, "
                    "so their verdicts carry no demonstrated power." if absent else ""))
counted_in = sorted(cases.loc[cases["counted"], "experiment"].unique())
lines.append(f"- The counted cases come from {', '.join(f'`{e}`' for e in counted_in) or 'no experiment'}; every other "
             "case is reported above with the reason it carries no verdict at this scale, so the count is not a "
             "summary of the study's question across experiments.")
lines.append(f"- These are the `{P['profile']}` profile's models: small pretrained networks (at most 135M "
             "parameters) on stand-in tasks. They show how the comparison behaves and whether each experiment can "
             "detect a planted effect at this scale. They are not measurements of 7B-parameter models.")
display(Markdown("\n".join(lines)))
