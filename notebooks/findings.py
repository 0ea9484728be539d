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
# # Findings: when is LoRA worse, better, equivalent, or undecided?
#
# This chapter trains nothing. It reads every run record of the chosen profile that the other
# chapters made and answers the study's question case by case. A *case* is one experiment, dataset,
# model, comparison and metric: LoRA minus full fine-tuning, and LoRA minus head-only
# (classification) or minus the base model (generation), on the same test examples (for membership
# inference the same attacked examples, for the token-bias probe the same texts).
#
# **The unit of inference is the training run.** Each seed gives one paired difference (the two
# methods on that seed's split and test examples); the dots in {numref}`fig-findings-forest` are these. A case's
# interval is the 95% t-interval over its per-seed differences, so it carries training randomness
# as well as test sampling; an interval that resampled test examples only would not. Its p-value is
# the one-sample t-test, and within each family of comparisons (one experiment's comparison, e.g.
# LoRA minus full, on utility or on fairness metrics) the p-values are adjusted by Holm's method,
# with Benjamini-Hochberg's shown beside them. Beside the t-test, every case has the exact
# sign-flip p over its seeds (all 2^k patterns of signs; no assumption of normality), also
# Holm-adjusted: a better / worse verdict that it does not support is flagged. Overall accuracy and
# overall calibration (ECE, raw and after per-run temperature scaling on validation) are *utility*;
# the fairness metrics are about groups: worst-group accuracy, the accuracy gap, the calibration gap
# between groups (after temperature scaling; the raw gap is shown beside it), attack AUC,
# stereotype measures and the flip rate. Five verdicts:
#
# - **LoRA better / LoRA worse**: Holm-adjusted p < 0.05, in the direction the metric calls better
#   (higher accuracy and worst-group accuracy; lower attack AUC, stereotype excess,
#   pro-stereotypical preference and flip rate);
# - **equivalent**: the two one-sided tests (TOST) against the case's margin (the registered design,
#   {doc}`design`, which says when each margin was fixed), Holm-adjusted p < 0.05;
# - **inconclusive**: neither; the minimum detectable effect (MDE: the true difference an
#   unadjusted test at these seeds would find 80% of the time, at the observed seed SD) says roughly
#   how large a difference the study could have missed;
# - **no verdict**: the case cannot carry one (fewer than {glue:text}`findings_count_seeds` seeds
#   after the per-run gate, so that the sign-flip test could reach p < 0.01; no positive control of
#   about the margin's size detected in its scope; the reason is in the table).
#
# Every LoRA-vs-full verdict of a classification chapter is also read at the neighbouring learning
# rates of its pilot grid (one method moved, the other at its chosen rate, same seeds and test
# examples): the column *learning rate* says whether it holds at every neighbouring rate or depends
# on the rate. LoRA is credited only with what full fine-tuning does not also do: every LoRA-minus-base
# case sits beside full fine-tuning minus the same base model (the comparison *full - base*, and the
# column *full fine-tuning against base*).

# %% tags=["parameters"]
profile = "offline"        # the profile whose run records are read
n_boot = None
pilots = None              # the pilot records of the power analysis: [{directory, experiment, seeds}]
results_dir = None
force = False              # unused here: this chapter trains nothing

# %% tags=["hide-input"]
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from lorafair import experiments as ex
from lorafair import findings, inference, plots
from lorafair import methods as methods_mod
from lorafair.notebook import setup_chapter

P, store = setup_chapter("findings", globals())
glue("findings_count_seeds", findings.COUNT_SEEDS, display=False)
glue("design_commit", findings.design_commit(), display=False)
cases = findings.all_cases(store, P["profile"])
if cases.empty:
    raise RuntimeError(f"no run records of profile {P['profile']!r} in {P['results_dir']}: run the other chapters first")
ctrl = findings.controls(store, P["profile"], P["n_boot"])
cases = findings.decide(findings.apply_count_rules(cases, ctrl))
findings.write_csv(cases, P["results_dir"])
findings.write_controls_csv(ctrl, P["results_dir"])
# LoRA's own cases answer the study's question; the other methods' cases are the "beyond LoRA" view below,
# and the learning-rate neighbours only say whether a verdict depends on the rate (its lr_robustness)
neighbours = cases[cases["lr_neighbour"] != ""]
cases = cases[cases["lr_neighbour"] == ""]
beyond = cases[findings.is_beyond(cases)]
cases = cases[~findings.is_beyond(cases)]
glue("findings_cases_total", len(cases), display=False)
glue("findings_cases_counted", int(cases["counted"].sum()), display=False)
display(Markdown(f"**Profile `{P['profile']}`**: {len(cases)} comparisons of LoRA from the run records in "
                 f"`{P['results_dir']}/`, {int(cases['counted'].sum())} of which can carry a verdict (below), and "
                 f"{len(beyond)} comparisons of other methods (section *Beyond LoRA*). "
                 f"Both are also written as `{P['results_dir']}/findings.csv` for readers who want the data."))

# %% [markdown]
# ## The answer
#
# The key findings (at most four bounded statements: a task's LoRA-minus-full intervals with their
# verdicts, read from the counted cases below) and the original study's claims set against this
# study's verdicts. The introduction shows both; the rule behind each status is given there.

# %% tags=["hide-input"]
from IPython.display import HTML
from markdown_it import MarkdownIt

key_md = "\n".join(f"- {p}" for p in findings.key_findings(cases))
display(Markdown(key_md))
glue("findings_key_words", len(key_md.replace("**", "").split()), display=False)
glue("findings_key_points", HTML(MarkdownIt().render(key_md)), display=False)
replication = findings.replication_table(cases)
replication_shown = plots.table(replication, caption="The original study's claims and this study's verdicts")
display(replication_shown)
glue("findings_replication", plots.table(replication), display=False)  # no page-numbered caption in the introduction

# %% [markdown]
# ## The counted cases
#
# {numref}`fig-findings-forest` draws the cases that can carry a verdict (every case where none
# can, as on the smoke profile); every other case is in the table of the next section and in
# `findings.csv`, with the reason it is not counted.
#
# See {numref}`fig-findings-forest` below.

# %% tags=["hide-input"]
drawn = cases[cases["counted"]] if cases["counted"].any() else cases
fig = plots.forest(drawn, P["profile"], "the counted cases" if cases["counted"].any() else "every case")
glue("findings_forest_fig", plots.checked(fig), display=False)
plots.plt.close(fig)


# %% [markdown]
# ```{glue:figure} findings_forest_fig
# :name: fig-findings-forest
#
# The counted cases (every case where none is counted), one panel per comparison: the mean of the per-seed paired differences with its 95% seed-level t-interval, coloured by the five-way verdict (orange down-triangles: LoRA worse; blue up-triangles: LoRA better; green diamonds: equivalent; grey circles: inconclusive; hollow squares: no verdict), each seed's difference (black dots), and the equivalence band of the case's margin (green). Each row says under its metric in which direction LoRA is better (an arrow), since some metrics are better high (accuracy) and others low (gaps, ECE, attack AUC).
# ```

# %% [markdown]
# ## The count
#
# A case can carry a verdict only if it rests on at least {glue:text}`findings_count_seeds` seeds
# (independent training runs) on which both compared runs learned the task (the per-run gate of the
# section *Runs that learned*; in membership inference, both targets: a target that learned nothing
# leaks little, which is the privacy-utility trade-off), and a positive control of about the
# margin's size was detected in its scope (for membership inference, its attacked task; for
# generation, its part). The other cases are listed with the reason; they are results, reported
# with their intervals as exploratory, but not evidence either way. Utility (accuracy, overall
# calibration) and fairness (the group metrics, attack AUC, stereotype measures, flip rate) are
# counted apart. In the table below, "worst group (n)" names every group that was the worst for
# either method on some seed, with the smallest test count among them; "within margin" marks an
# interval that lies inside the equivalence margin.

# %% tags=["hide-input"]
table = findings.counts(cases)
display(table)
vs_full = (table.xs("LoRA - full", level="comparison").sum() if "LoRA - full" in table.index.get_level_values(0)
           else pd.Series(0, index=table.columns))
for k, v in vs_full.items():  # zero where nothing is counted, so the introduction's numbers always exist
    glue(f"findings_full_{k.replace(' ', '_').replace('LoRA_', '').lower()}", int(v), display=False)
glue("findings_full_total", int(vs_full.sum()), display=False)
glue("findings_full_with_verdict", int(vs_full.sum() - vs_full["no verdict"]), display=False)

# %% tags=["hide-input", "hide-output"]
# every case: long, so folded (the counted ones are drawn above; findings.csv has them all)
def _fmt(r):
    if pd.isna(r["lo"]):
        return f"{r['difference']:+.3f}"
    return f"{r['difference']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"


show = cases.assign(**{"difference [95% seed CI]": cases.apply(_fmt, axis=1),
                       "within margin": ((cases["lo"] > -cases["margin"]) & (cases["hi"] < cases["margin"]))
                       .map({True: "yes", False: "no"}),
                       "worst group (n)": cases.apply(lambda r: f"{r['worst_groups']} ({int(r['worst_n'])})"
                                                      if isinstance(r.get("worst_groups"), str) else "", axis=1)})
display(plots.table(show[["case", "comparison", "verdict", "difference [95% seed CI]", "seeds", "mde", "margin",
              "within margin", "worst group (n)", "p_holm", "p_bh", "p_signflip_holm", "p_tost_holm",
              "signflip_flag", "lr_robustness", "full_vs_base", "not counted because"]]
        .rename(columns={"p_holm": "p (Holm)", "p_bh": "p (BH)", "p_signflip_holm": "sign-flip p (Holm)",
                         "p_tost_holm": "TOST p (Holm)", "mde": "MDE", "signflip_flag": "sign-flip check",
                         "lr_robustness": "learning rate", "full_vs_base": "full fine-tuning against base"})
        , caption="Every case: its seed-level interval, adjusted p-values and verdict, or why it is not counted"))

# %% [markdown]
# ## Power: how many seeds each case needs
#
# For every case with at least 2 seeds: the seed-to-seed SD of its paired difference; the minimum
# detectable effect at its current seeds (80% power, unadjusted two-sided 0.05); the seeds such a
# test would need to detect a difference the size of the case's equivalence margin; and the seeds
# the equivalence test (TOST) would need to show equivalence with 80% power if the true difference
# were zero. The SD of 2 or 3 seeds is itself very uncertain, and the Holm adjustment raises every
# requirement, so these are planning numbers, not guarantees.

# %% tags=["hide-input"]
powered = cases[cases["sd"].notna()].copy()
powered["seeds to detect the margin"] = [inference.seeds_for(m, sd) for m, sd in zip(powered["margin"], powered["sd"])]
powered["seeds to show equivalence"] = [inference.seeds_for_equivalence(m, sd)
                                        for m, sd in zip(powered["margin"], powered["sd"])]
display(plots.table(powered[["case", "comparison", "seeds", "sd", "mde", "margin", "seeds to detect the margin",
                 "seeds to show equivalence"]]
        .rename(columns={"sd": "seed SD", "mde": "MDE now"}), caption="Power: the seed SD, the minimum detectable effect now and the seeds each case would need"))

# %% [markdown]
# ## The design: from the pilot's seed SD to the seeds run
#
# The seeds of the classification chapters were chosen from pilot records, before the records they
# design (the registered design, {doc}`design`): the vision chapter from its earlier design's records
# (5 seeds with a smaller test split, of which 4 passed the gate with every method; kept in the run
# store as its pilot), MiniLM from its first three seeds. The SD of a few pilot seeds is itself very
# uncertain (MiniLM's three-seed SD was about a third of the SD its ten seeds later showed), so the
# design is sized from a **conservative SD**: the one-sided {glue:text}`design_sd_confidence` upper
# confidence limit of the pilot SD (chi-square). For each primary case the table gives the pilot's
# seeds and SD, the conservative SD, the minimum detectable effect (MDE) the design aims at (the
# case's equivalence margin), the seeds an unadjusted two-sided t-test would need for that MDE at 80%
# power at either SD, the seeds the present records have, and the MDE they reach with their own SD.
# Where the target is not met, the table says by how much: those cases can be decided only by an
# effect larger than their MDE, and their "inconclusive" verdicts are the expected outcome, not
# evidence of equality.

# %% tags=["hide-input"]
glue("design_sd_confidence", f"{findings.SD_CONFIDENCE:.0%}", display=False)
if P.get("pilots"):
    pilot = pd.concat([findings.pilot_cases(store, p["directory"], P["profile"], p.get("seeds"), p["experiment"],
                                            p.get("models"), p.get("datasets")) for p in P["pilots"]], ignore_index=True)
    design = findings.design_table(pilot, cases)
    main_acc = design[design["metric"] == "accuracy"]
    worst = design[design["metric"] == "worst group accuracy"]
    glue("design_acc_cases", len(main_acc), display=False)
    glue("design_acc_met", int(main_acc["target met"].sum()), display=False)
    glue("design_worst_cases", len(worst), display=False)
    glue("design_worst_met", int(worst["target met"].sum()), display=False)
    display(plots.table(design.drop(columns=["dataset"]), precision=3, caption="The design's power analysis from the "
                        "pilot records: the seeds each primary case needs for an MDE at its margin, at the pilot SD and "
                        "at the conservative SD, and the MDE now"))

    def span(s):  # "0.025" when every case has the same MDE, "from 0.019 to 0.025" otherwise
        lo, hi = f"{s.min():.3f}", f"{s.max():.3f}"
        return lo if lo == hi else f"from {lo} to {hi}"
    display(Markdown(
        f"The present records reach an MDE at the margin on {int(main_acc['target met'].sum())} of {len(main_acc)} "
        f"primary accuracy cases (MDE {span(main_acc['MDE now'])}, margin "
        f"{inference.margin('accuracy'):.2f}) and on {int(worst['target met'].sum())} of {len(worst)} worst-group "
        f"cases (MDE {span(worst['MDE now'])}, margin "
        f"{inference.margin('worst_group_accuracy'):.2f})."))
else:
    display(Markdown(f"Profile `{P['profile']}` names no pilot records (`pilots`), so no design table is shown."))

# %% [markdown]
# ## What the records cost
#
# The run time stored in every record, summed per experiment (single-process wall time of each
# run; parallel workers overlap them, so a build takes less), with the learning-rate pilots the
# classification chapters run (`pilot_lr_*`). The hardware is in each record's `config.json`.

# %% tags=["hide-input"]
cost_rows = []
for exp in ("vision_classification", "pilot_lr_vision", "pilot_beyond_vision", "llm_classification", "pilot_lr_llm",
            "pilot_beyond_llm", "membership_inference", "generation_fairness"):
    recs = [r for r in store.records(exp) if r.config.get("profile") == P["profile"]]
    secs = sum(r.meta["wall_seconds"] for r in recs)
    cost_rows.append({"experiment": exp, "runs": len(recs), "run time (min)": round(secs / 60, 1)})
    glue(f"cost_{exp}_runs", len(recs), display=False)
    glue(f"cost_{exp}_minutes", round(secs / 60, 1), display=False)
cost = pd.DataFrame(cost_rows)
total = float(cost["run time (min)"].sum())
glue("cost_total_minutes", round(total, 1), display=False)
glue("cost_total_two_workers", round(total / 2), display=False)
# what the published records weigh on disk (every experiment folder of the store, the pilots included)
store_mb = sum(p.stat().st_size for p in Path(P["results_dir"]).rglob("*") if p.is_file()) / 2 ** 20
glue("results_size_mb", f"{store_mb:.0f}", display=False)
display(plots.table(pd.concat([cost, pd.DataFrame([{"experiment": "all", "runs": int(cost["runs"].sum()),
                                        "run time (min)": round(total, 1)}])])
        , precision=1, caption="What the records cost: runs and CPU minutes per experiment"))
display(Markdown(f"From an empty run store these runs add up to {total:.0f} minutes of single-process run time; the "
                 f"chapters run them in two 1-thread workers, so a from-scratch build takes at least about "
                 f"{total / 2:.0f} minutes of wall time on two cores (more where one worker waits for the other)."))

# %% [markdown]
# ## Beyond LoRA: is it LoRA, or any parameter-efficient method?
#
# The original study asked for comparisons with other parameter-efficient methods. The
# classification chapters ran, on their main case (MobileNetV2 on the gender task, skin tone as the
# attribute; MiniLM on identity attacks, the targeted identity as the attribute), DoRA, IA3, VeRA
# (linear layers only, so text only), LoHa, OFT, prompt tuning (text only), and two fairness-aware
# variants of LoRA: a FairLoRA-style penalty on the variance of the groups' mean losses, and
# group-balanced example weights. Membership inference attacked DoRA and IA3 targets with shadows
# of their own method, and the generation chapter fine-tuned DoRA and IA3 on the balanced
# references. Each method's learning rate (the penalty, for the FairLoRA-style variant) was chosen on
# the validation split of one pilot seed (the chapters show the pilot). Every case below is read as
# LoRA's are: per-seed paired differences, a seed-level interval, Holm and Benjamini-Hochberg
# adjustment within each family (here all the other methods against one reference, in one experiment,
# utility and fairness apart), an equivalence test against the same margins, and the same rules for
# which cases can carry a verdict. "better" and "worse" are the method's, against the reference.
#
# See {numref}`fig-findings-beyond` below.

# %% tags=["hide-input"]
glue("findings_beyond_total", len(beyond), display=False)
glue("findings_beyond_counted", int(beyond["counted"].sum()) if len(beyond) else 0, display=False)
if len(beyond):
    nb = beyond.loc[beyond["counted"], "verdict"].value_counts()
    for k in ("method better", "method worse", "equivalent", "inconclusive"):
        glue(f"findings_beyond_{k.replace('method ', '')}", int(nb.get(k, 0)), display=False)
    for ref, title in (("full", "against full fine-tuning"), ("lora", "against LoRA")):
        t = findings.method_table(beyond, ref)
        if len(t):
            display(Markdown(f"**Each method {title}** (mean per-seed difference [95% seed-level interval] and "
                             "verdict; trainable parameters of the method, head included):"))
            display(t.style.hide(axis="index"))
    fig = plots.beyond_scatter(pd.concat([cases, beyond]), P["profile"], "full")
    glue("findings_beyond_fig", plots.checked(fig), display=False)
    plots.plt.close(fig)
else:
    for k in ("better", "worse", "equivalent", "inconclusive"):
        glue(f"findings_beyond_{k}", 0, display=False)
    glue("findings_beyond_fig", plots.plt.figure(), display=False)
    display(Markdown(f"No other method has run records on profile `{P['profile']}`."))

# %% [markdown]
# ```{glue:figure} findings_beyond_fig
# :name: fig-findings-beyond
#
# Each method minus full fine-tuning against the method's trainable parameters (log scale), one panel
# per case, LoRA included for comparison: mean per-seed difference with its 95% seed-level interval;
# filled markers where the verdict is better or worse, hollow where it is equivalent, inconclusive or
# without a verdict; the green band is the equivalence margin. If "worse than full" followed the
# parameter count, the points would rise from left to right.
# ```

# %% tags=["hide-input"]
if len(beyond):
    counted = beyond[beyond["counted"]]
    lines = [f"- {len(counted)} of {len(beyond)} cases of other methods can carry a verdict."]
    for ref, name in (("full", "full fine-tuning"), ("lora", "LoRA"), ("base", "the base model")):
        sub = counted[counted["method_b"] == ref]
        if not len(sub):
            continue
        lines += findings.verdict_lines(sub, f"Against {name}", _fmt, "the method is", beyond=True)
    dropped = beyond[beyond["gate_dropped"].fillna("").ne("")]
    if len(dropped):
        lines.append("- **Runs that did not learn:** " + "; ".join(sorted({f"{r['case'].split(':')[0]}, {r['comparison']}: "
                                                                          f"{r['gate_dropped']}" for _, r in dropped.iterrows()}))
                     + " failed the per-run gate (section *Runs that learned*) and are left out of those cases: a method "
                       "that learned nothing is not fairer for it.")
    fair = counted[counted["method_a"].isin(["fairlora", "reweight"]) & (counted["method_b"] == "full")
                   & (counted["metric_key"] == "worst_group_accuracy")]
    if len(fair):
        lines.append("- **Fairness-aware LoRA against full fine-tuning, worst-group accuracy:** " + "; ".join(
            f"{r['comparison'].split(' - ')[0]} on {r['model']} {_fmt(r)} ({r['verdict']})" for _, r in fair.iterrows())
            + ".")
    display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Runs that learned
#
# A run enters a comparison only if it learned its task, decided run by run on its own validation
# split (never on test, never pooled over seeds): its validation accuracy must beat the validation
# majority-class rate by more than {glue:text}`findings_gate_margin` and it must predict more than one
# class. A seed on which either compared run fails is left out of that case (the column
# `gate_dropped` of `findings.csv` names them). The table gives the failure rate per method; a
# method that fails often is reported as failing, not averaged in.

# %% tags=["hide-input"]
from lorafair.metrics import GATE_MARGIN, MIN_GROUP_N

glue("findings_gate_margin", GATE_MARGIN, display=False)
gates = findings.gate_table(store, P["profile"])
rates = findings.gate_failure_rates(gates)
glue("findings_gate_runs", len(gates), display=False)
glue("findings_gate_failed", int((gates["passed"] == False).sum()) if len(gates) else 0, display=False)  # noqa: E712
if len(rates):
    show = rates.assign(task=rates["experiment"].map(plots.label) + ": " + rates["dataset"].map(plots.label),
                        model=rates["model"].map(plots.label), method=rates["method"].map(methods_mod.label))
    display(plots.table(show[["task", "model", "method", "role", "runs", "failed", "failure_rate", "failed_seeds"]]
                        .rename(columns={"failure_rate": "failure rate", "failed_seeds": "failed seeds"}),
                        precision=2, caption="The per-run gate: runs that did not learn, per task, model and method"))

# %% [markdown]
# ## Groups too small to carry a claim
#
# Worst-group accuracy and accuracy gaps use only groups with at least
# {glue:text}`findings_min_group_n` test examples in every seed. The groups below have fewer in
# some seed: they are *too small at this scale* for a claim, and are shown with their counts and
# exact (Clopper-Pearson) 95% intervals of their test accuracy pooled over the seeds that passed the
# gate, so that a reader sees what the data can and cannot say about them.

# %% tags=["hide-input"]
glue("findings_min_group_n", MIN_GROUP_N, display=False)
small = findings.small_group_rows(store, P["profile"])
glue("findings_small_groups", int(small[["experiment", "dataset", "settings", "model", "attribute", "group"]]
                                  .drop_duplicates().shape[0]) if len(small) else 0, display=False)
if len(small):
    show = small.assign(task=small["experiment"].map(plots.label) + ": " + small["dataset"].map(plots.label) + small["settings"].map(findings._short),
                        model=small["model"].map(plots.label), method=small["method"].map(methods_mod.label),
                        interval=[f"[{a:.2f}, {b:.2f}]" for a, b in zip(small["lo"], small["hi"])])
    display(plots.table(show[["task", "model", "attribute", "group", "method", "seeds", "smallest_n", "test_n",
                              "accuracy", "interval"]].rename(columns={"smallest_n": "smallest n a seed",
                                                                      "test_n": "test n (all seeds)"}),
                        precision=3, caption="Groups too small at this scale: test accuracy pooled over seeds, exact 95% interval"))
else:
    display(Markdown("Every group of every task has enough test examples in every seed."))

# %% [markdown]
# ## Positive controls
#
# Each experiment must show that it can detect the kind of effect it reports on. A control plants
# an effect of known direction; it is *detected* when the seed-level 95% interval of its per-seed
# effects excludes zero in the planted direction, the same reading as the cases. A control runs on
# one model and method and vouches for its experiment (its scope). An experiment whose control is
# not detected cannot support "no difference" claims at this scale, and its cases carry no verdict;
# one with no control yet is listed as such. A detected control shows only that effects *of its size*
# are seen: the column *size* sets the planted effect against the margin of the quantity it was
# planted on (gross at twice the margin or more, at the margin from half to twice it). Only a
# control at the margin shows that the experiment could see an effect as small as the ones its
# "equivalent" verdicts rule out.

# %% tags=["hide-input"]
glue("findings_controls_detected", int((ctrl["detected"] == "detected").sum()), display=False)
glue("findings_controls_total", int((ctrl["detected"] != "no control").sum()), display=False)
display(plots.table(ctrl.drop(columns=["kind"]).rename(columns={"effect": "planted effect", "n": "test examples",
                                                   "scope": "vouches for"})
        , caption="The positive controls: the planted effect and whether each experiment detects it"))
tried = ctrl[ctrl["detected"] != "no control"]
at_margin = tried[tried["size"].str.startswith(("at the margin", "below the margin"))]
glue("findings_controls_at_margin", len(at_margin), display=False)
display(Markdown(f"{len(at_margin)} of {len(tried)} controls planted an effect at or below the size of its margin"
                 + (" (" + "; ".join(f"{r.scope}, {r.planted}: {r.detected}" for r in at_margin.itertuples()) + ")"
                    if len(at_margin) else "") + f"; the other {len(tried) - len(at_margin)} plant an effect of more than "
                 "twice their margin (gross), so even where they are detected they show only that gross effects are seen."))

# %% [markdown]
# ## Reading
#
# Generated from the table above.

# %% tags=["hide-input"]
lines = [f"- {int(cases['counted'].sum())} of {len(cases)} cases can carry a verdict; the counts below are theirs."]
for comp, sub in cases[cases["counted"]].groupby(cases["comparison"].str.split(" [(]").str[0], sort=False):
    lines += (findings.verdict_lines(sub, comp, _fmt, who="full fine-tuning", prefix="full") if comp.startswith("full")
              else findings.verdict_lines(sub, comp, _fmt))
    und = sub[sub["verdict"] == "inconclusive"]
    if len(und):
        lines.append(f"  - inconclusive: minimum detectable effects from {und['mde'].min():.3f} to "
                     f"{und['mde'].max():.3f}, against equivalence margins of "
                     + " and ".join(f"{m:.2f}" for m in sorted(und["margin"].unique())) + ".")
shown, tried = findings.power_scopes(ctrl)
missed = sorted(tried - shown)
absent = ctrl[ctrl["detected"] == "no control"]["experiment"].tolist()
if missed or absent:
    lines.append("- **Power.** " + (f"No positive control of about the margin's size (at most twice it) was detected "
                 f"in {', '.join(f'`{e}`' for e in missed)}: "
                 "there, a difference that is not found is no evidence of equal treatment, and those cases carry no "
                 "verdict. " if missed else "")
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

# %% [markdown]
# ## Limitations

# %% tags=["hide-input"]
from scipy import stats

k_max = int(cases["seeds"].max())

lr_check = pd.concat([ex.lr_stability(store.records(f"pilot_lr_{short}"), store.records(exp))
                      for short, exp in (("vision", "vision_classification"), ("llm", "llm_classification"))],
                     ignore_index=True)
beyond_line = ("- **Other methods tuned on one seed.** Each other method's learning rate (the FairLoRA-style "
               "penalty) was chosen on one pilot seed's validation split from a grid of three to five values; LoRA's "
               "own rate is as unstable across seeds (above), so a method that loses to LoRA or to full fine-tuning "
               "may be tuned less well rather than worse." if len(beyond) else "")
lr_line = ("- **Learning rates chosen on one seed.** " + (
    f"The learning-rate pilots found that on {int((~lr_check['same']).sum())} of {len(lr_check)} (model, method, "
    "seed) that seed's own validation split would have chosen another of the rates tried (the chapters list them); "
    "a method tuned less well than its comparator on some seeds biases the comparison against it, most of all for "
    "head-only training." if len(lr_check) else "No learning-rate pilot ran on this profile."))
display(Markdown("\n".join([lr_line] + ([beyond_line] if beyond_line else []) + [
    f"- **Few seeds.** The cases of these records have at most {k_max} seeds, and a t-interval over few seeds is "
    f"wide (its critical value is {stats.t.ppf(0.975, 2):.1f} at 3 seeds, {stats.t.ppf(0.975, 4):.1f} at 5 and "
    f"{stats.t.ppf(0.975, 9):.1f} at 10). An equivalence can be shown only "
    "where the seeds agree closely; the power table says how many seeds each case would need.",
    "- **Seed-to-seed SD from few seeds.** The MDE and the seeds needed use the observed SD of the per-seed "
    "differences, which, from a handful of seeds, can be far from the true SD.",
    "- **Equal weights.** Every seed counts once, whatever its test size; the seeds of a case have test splits of "
    "the same design, so their sizes differ little.",
    "- **One base run.** The base model is not trained; where it was run on one seed's test set only, a comparison "
    "with it has that one seed and no verdict.",
    "- **Scale.** The offline models are small and the tasks are stand-ins (rendered emoji for faces, short "
    "templated sentences to rewrite with a pronoun); a verdict here is about these models and tasks.",
])))
