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
# # Membership inference: does LoRA leak less about its training data, for every group?
#
# A membership-inference attack guesses whether an example was in a model's training set. A model
# that memorises its training data is easier to attack. If it memorises some groups more than
# others, those groups carry more privacy risk. The original study attacked LoRA and fully
# fine-tuned models (UTKFace gender on ViT-Base and Swin-v2-Large; hate speech about religion on
# Llama-2 and Mistral) per subgroup with two attacks:
#
# - the **loss-threshold attack** (Yeom et al.): a low loss on an example suggests it was trained on;
# - **offline LiRA** (Carlini et al.): *shadow* models are trained on random halves of a pool
#   of data that the target never saw, with the same method as the target they calibrate (the
#   original study used LoRA shadows for every target). For each attacked example a Gaussian is fitted to the shadows'
#   logit-scaled confidence $\phi = \log p_y - \log(1 - p_y)$. The target's $\phi$ is then scored
#   by how far it lies above that Gaussian (one-sided). This calibrates away how easy each example
#   is, which the loss attack cannot do.
#
# **Data design** (per seed, stratified by label and group): 25% are the target's training set
# (members), 10% its validation split, 25% are never seen by the target (non-members), and 40% form
# the shadow pool; each shadow trains on a random half of the pool. For the vision task whole
# person drawings are assigned (`split_unit`; all renderings of one drawing, in every skin tone,
# are on one side, stratified by label only), so no non-member shows a person the target was
# trained on: the attack cannot win by recognising a person in a new image. **Fix over the original study:**
# the membership labels are read from the target's own stored split, i.e. its real training set.
# The original trained its targets on another split than the one its attack assumed.
#
# Reported per subgroup and overall: ROC (log-log), AUC with a 95% bootstrap interval (members and
# non-members resampled separately), and the TPR at 1% and 0.1% FPR with intervals from the same
# bootstrap. With a few hundred non-members,
# 0.1% FPR means "no false positive at all", so read that column as the share of members found
# before the first false alarm.
#
# ```{admonition} Learning objectives and prerequisites
# :class: note
# After this chapter you can (1) run a loss attack and LiRA with shadow models and read their ROC at
# low false-positive rates; (2) explain why leakage must be compared at equal fit; (3) read
# per-group attack AUCs with their counts. *Prerequisites*: the vision chapter; what training and
# test loss are; ROC curves.
# ```

# %% tags=["parameters"]
profile = "offline"        # smoke | offline | paper; every None below takes the profile's value
tasks = None
methods = None
seeds = None
n_shadows = None
shadow_methods = None      # matched (each target's own method) | lora (LoRA shadows for every target)
batch_size = None
global_variance = None
n_boot = None
workers = None
train_options = None      # speed settings, not hashed: {compile: true, gradient_checkpointing: true}
results_dir = None
force = False              # True recomputes runs that already have a record

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown, display
from sklearn.metrics import roc_auc_score
from myst_nb import glue

from lorafair import chapters, findings, inference, mia, plots, sweep
from lorafair import experiments as ex
from lorafair import methods as methods_mod
from lorafair.metrics import MIN_GROUP_N, learned_gate
from lorafair.notebook import setup_chapter
from lorafair.profiles import resolve

P, store = setup_chapter("membership_inference", globals())
shadow_seeds = chapters.shadow_seeds(P)
display(Markdown(
    f"**Profile `{P['profile']}`**: targets {', '.join(P['methods'])} on "
    + "; ".join(f"`{t['name']}` (`{t['dataset']}`, `{t['model']}`, subgroup `{t['attribute']}`)" for t in P["tasks"])
    + f"; {P['n_shadows']} shadow models per task, seed and target "
    + ("(trained with the target's own method)" if P["shadow_methods"] == "matched" else "(LoRA for every target)")
    + f"; seeds {P['seeds']}; "
    f"{'global' if P['global_variance'] else 'per-example'} variance in LiRA; run records in "
    f"`{P['results_dir']}/membership_inference/`."))

# %% [markdown]
# ## Targets and shadows
#
# Every target and every shadow is a run in the run store, so an interrupted attack resumes where it
# stopped. The table shows each target's test accuracy next to its accuracy on its own training
# set. A large gap (overfitting) is what membership inference exploits.

# %% tags=["hide-input"]
all_results, all_curves, all_scores, paired, tables, fit_rows, main_val = {}, {}, {}, {}, {}, [], {}
exercise_rows = []  # LiRA with other variance and shadow settings, for the exercises
for task in P["tasks"]:
    for seed in P["seeds"]:
        targets, shadows = chapters.mia_task_configs(task, P, seed)
        recs = sweep.run(store, list(targets.values()) + [c for m in shadows for c in shadows[m]], force=force,
                         desc=f"{task['name']} seed {seed}", workers=P["workers"], train_options=P["train_options"])
        target_recs = dict(zip(targets, recs[: len(targets)]))
        shadow_recs = dict(zip([(m, i) for m in shadows for i in range(len(shadows[m]))], recs[len(targets):]))
        for method, rec in target_recs.items():
            main_val[(task["name"], seed, method)] = rec.meta["history"]["selected_val_accuracy"]
            fit_rows.append({"task": task["name"], "seed": seed, "method": method,
                             "train accuracy": rec.metrics["train"]["accuracy"],
                             "test accuracy": rec.metrics["accuracy"]["value"],
                             "val accuracy": main_val[(task["name"], seed, method)],
                             "generalisation gap": rec.metrics["train"]["accuracy"] - rec.metrics["accuracy"]["value"],
                             "trainable params": rec.meta["adaptation"]["trainable_params"],
                             "learned": learned_gate(rec.predictions())["passed"] is not False})
            t = rec.predictions()
            shadow_preds = [shadow_recs[(method, i)].predictions() for i in range(len(shadows[method]))]
            exercise_rows.append({"task": task["name"], "seed": seed, "method": method, **{
                name: roc_auc_score(sc["member"], sc["score"]) for name, sc in (
                    ("per-example variance", mia.lira_scores(t, shadow_preds, False)),
                    ("global variance", mia.lira_scores(t, shadow_preds, True)),
                    ("half the shadows", mia.lira_scores(t, shadow_preds[: max(2, len(shadow_preds) // 2)], False)))}})
            for attack, scores in (("loss", mia.loss_scores(t)),
                                   ("lira", mia.lira_scores(t, shadow_preds, P["global_variance"]))):
                key = (task["name"], seed, method, attack)
                all_scores[key] = scores
                all_results[key] = mia.attack_metrics(scores, task["attribute"], n_boot=P["n_boot"], seed=seed)
                all_curves[key] = mia.roc_points(scores)
        for attack in ("loss", "lira"):
            if {"lora", "full"} <= set(P["methods"]):  # as many resamples as the findings chapter: the same interval
                paired[(task["name"], seed, attack)] = mia.paired_auc_difference(
                    all_scores[(task["name"], seed, "lora", attack)], all_scores[(task["name"], seed, "full", attack)],
                    resolve("findings", P["profile"])["n_boot"], seed)
display(plots.table(pd.DataFrame(fit_rows), caption="Targets: accuracy on their training and test sets and the generalisation gap"))

# %% [markdown]
# ## ROC curves
#
# Log-log axes show the low-FPR regime that matters for privacy. Solid lines are LiRA and dashed
# lines the loss attack; the diagonal is guessing.
#
# See {numref}`fig-mia-roc` below.

# %% tags=["hide-input"]
s0 = P["seeds"][0]
fig = plots.roc_loglog({f"{t['name']}: {t['model']}, seed {s0}": {(m, a): all_curves[(t["name"], s0, m, a)]
                                                                  for m in P["methods"] for a in ("loss", "lira")}
                        for t in P["tasks"]}, P["profile"])
glue("mia_roc_fig", plots.checked(fig), display=False)
plots.plt.close(fig)

# %% [markdown]
# ```{glue:figure} mia_roc_fig
# :name: fig-mia-roc
#
# ROC curves of the LiRA (solid) and loss (dashed) attacks against the LoRA (blue) and fully
# fine-tuned (orange) targets, first seed, log-log axes; the diagonal is guessing.
# ```

# %% [markdown]
# ## Per-group attack success
#
# AUC per subgroup with 95% bootstrap intervals (members/non-members under each group), first seed.
# The table lists every group's AUC and TPR at 1% and 0.1% FPR for every seed. A TPR at an FPR that
# the group's non-members cannot resolve (fewer than 1/FPR of them: 100 for 1%, 1,000 for 0.1%) is the
# TPR at zero false positives; such values are marked "unresolved" and carry no claim.
#
# See {numref}`fig-mia-group-auc` below.

# %% tags=["hide-input"]
for task in P["tasks"]:
    for seed in P["seeds"]:
        res = {(m, a): all_results[(task["name"], seed, m, a)] for m in P["methods"] for a in ("loss", "lira")}
        tables[(task["name"], seed)] = mia.attack_table(res, task["attribute"]).assign(task=task["name"], seed=seed)
fig = plots.group_auc({t["name"]: tables[(t["name"], P["seeds"][0])] for t in P["tasks"]},
                      {t["name"]: t["attribute"] for t in P["tasks"]}, P["profile"])
glue("mia_group_auc_fig", plots.checked(fig), display=False)
plots.plt.close(fig)

# %% [markdown]
# ```{glue:figure} mia_group_auc_fig
# :name: fig-mia-group-auc
#
# Attack AUC per subgroup (first seed) against the LoRA (blue circles) and fully fine-tuned (orange
# triangles) targets, with 95% bootstrap intervals; members/non-members under each group; 0.5 is
# guessing.
# ```

# %% tags=["hide-input"]
full_table = pd.concat(tables.values(), ignore_index=True)
shown = full_table.copy()
for level in ("1%", "0.1%"):
    ok = shown[f"tpr_at_{level}_resolved"]
    shown[f"tpr_at_{level}_fpr"] = [f"{v:.3f}" if r else f"{v:.3f} (unresolved)" for v, r in zip(shown[f"tpr_at_{level}_fpr"], ok)]
    shown.loc[~ok, f"tpr_at_{level}_ci"] = ""
cols = ["task", "seed", "method", "attack", "group", "members", "non_members", "auc", "auc_lo", "auc_hi",
        "tpr_at_1%_fpr", "tpr_at_1%_ci", "tpr_at_0.1%_fpr", "tpr_at_0.1%_ci"]
if not full_table["tpr_at_0.1%_resolved"].any():  # no group has the 1,000 non-members it needs
    cols = cols[:-2]
    display(Markdown("TPR at 0.1% FPR is left out: no group (nor the whole set) has the 1,000 non-members it needs."))
display(plots.table(shown[cols].rename(columns={"auc_lo": "AUC 95% low", "auc_hi": "AUC 95% high", "auc": "AUC"}), caption="Attack AUC and TPR at low FPR per group, with 95% intervals over examples"))

# %% [markdown]
# ## Other methods' targets
#
# A task may also attack targets of other parameter-efficient methods (`extra_methods`; offline:
# DoRA and IA3 on the vision task, at the vision chapter's chosen learning rates), each with eight
# shadows of its own method, on the same members and non-members as the LoRA and full targets.
# Per method: the mean over seeds, with the half-width of the 95% seed-level t-interval, of the
# whole-set attack AUCs and the target's test accuracy, and its trainable parameters. The findings
# chapter compares each with the full and the LoRA target of the same seed.

# %% tags=["hide-input"]
extra_rows = []
for task in P["tasks"]:
    shown_methods = list(P["methods"]) + [m for m in task.get("extra_methods") or [] if m not in P["methods"]]
    if len(shown_methods) == len(P["methods"]):
        continue
    for seed in P["seeds"]:
        res = {(m, a): all_results[(task["name"], seed, m, a)] for m in shown_methods for a in ("loss", "lira")}
        tab = mia.attack_table(res, task["attribute"])
        for m in shown_methods:
            fit = next(r for r in fit_rows if (r["task"], r["seed"], r["method"]) == (task["name"], seed, m))
            row = {"task": task["name"], "method": methods_mod.label(m), "seed": seed,
                   "test accuracy": fit["test accuracy"], "trainable params": fit["trainable params"]}
            for attack in ("lira", "loss"):
                row[f"{attack} AUC"] = float(tab[(tab["attack"] == attack) & (tab["group"] == "all")
                                                 & (tab["method"] == m)]["auc"].iloc[0])
            extra_rows.append(row)
if extra_rows:
    display(plots.table(ex.seed_interval_table(pd.DataFrame(extra_rows), ["task", "method"],
                                               ["lira AUC", "loss AUC", "test accuracy"], "trainable params")))
else:
    display(Markdown(f"No task of profile `{P['profile']}` attacks other methods' targets."))

# %% [markdown]
# ## Reading the results
#
# Generated from the run records above. The LoRA and the fully fine-tuned target of a seed are
# attacked on the same members and non-members, so each seed gives one paired difference of their
# AUCs (LoRA minus full), shown with a 95% bootstrap interval over that seed's attacked examples
# (members and non-members resampled separately), which describes test sampling only. The unit of
# inference is the seed: per task and attack, the seed-level 95% t-interval over the per-seed
# differences follows, and the verdicts, adjusted for multiplicity and checked against the rule
# that both targets learned the task, are those of {doc}`findings`.

# %% tags=["hide-input"]
lines = []
for task in P["tasks"]:
    for seed in P["seeds"]:
        tab = tables[(task["name"], seed)]
        for attack in ("lira", "loss"):
            a = tab[(tab["attack"] == attack) & (tab["group"] == "all")].set_index("method")
            if not {"lora", "full"} <= set(a.index):
                continue
            lo, fu = a.loc["lora"], a.loc["full"]
            d = paired[(task["name"], seed, attack)]
            tpr = (f"TPR at 1% FPR: {lo['tpr_at_1%_fpr']:.3f} vs {fu['tpr_at_1%_fpr']:.3f}" if lo["tpr_at_1%_resolved"]
                   else f"TPR at 1% FPR is not resolved by {int(lo['non_members'])} non-members")
            lines.append(f"- **{task['name']}** (`{task['model']}`, seed {seed}), {attack} attack: AUC "
                         f"{lo['auc']:.3f} against the LoRA target vs {fu['auc']:.3f} against the fully fine-tuned "
                         f"target; paired difference {d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] "
                         f"over {d['n']} attacked examples of this seed. {tpr}.")
            glue(f"mia_{task['name']}_{attack}_lora_auc_s{seed}", round(float(lo["auc"]), 4), display=False)
            glue(f"mia_{task['name']}_{attack}_full_auc_s{seed}", round(float(fu["auc"]), 4), display=False)
            g = tab[(tab["attack"] == attack) & (tab["group"] != "all") & (tab["members"] >= MIN_GROUP_N)
                    & (tab["non_members"] >= MIN_GROUP_N)]
            if len(g):
                hi = g.loc[g["auc"].idxmax()]
                lines.append(f"  - highest AUC among groups with at least {MIN_GROUP_N} members and {MIN_GROUP_N} "
                             "non-members (the study's minimum group size): "
                             f"`{hi['group']}` ({hi['method']} target, AUC {hi['auc']:.3f} "
                             f"[{hi['auc_lo']:.3f}, {hi['auc_hi']:.3f}]).")
for task in P["tasks"]:
    for attack in ("lira", "loss"):
        per = [paired[(task["name"], seed, attack)]["difference"] for seed in P["seeds"]
               if (task["name"], seed, attack) in paired]
        if per:
            sl = inference.seed_summary(per, inference.margin(f"{attack}_auc"))
            lines.append(f"- **{task['name']}, {attack} attack, over seeds**: per seed "
                         + ", ".join(f"{v:+.3f}" for v in per)
                         + f"; mean {sl['difference']:+.3f}, seed-level 95% interval {inference.interval_text(sl)}.")
lines.append(f"- {P['n_shadows']} shadow models per task and seed; profile `{P['profile']}`. Small groups have "
             "wide intervals: a group's higher AUC is evidence only when its interval clears the others'.")
lines.append("- **Limits of these comparisons.** "
             + ("LiRA attacks each target with shadows of its own method (LoRA shadows for the LoRA target, fully "
                "fine-tuned shadows for the fully fine-tuned one). " if P["shadow_methods"] == "matched" else
                "The shadows are LoRA models for both targets, so LiRA against the fully fine-tuned target is not "
                "method-matched. ")
             + f"Each per-seed line above is one training run per method ({len(P['seeds'])} in all). The main targets are not matched in utility: a target that fits its training set less (lower train "
             "accuracy in the table above) is expected to leak less, so a lower AUC is not by itself a property of the "
             "method; the section *At matched utility* below compares LoRA with a fully fine-tuned target trained "
             "to a comparable validation accuracy, where the profile has one.")
display(Markdown("\n".join(lines)))


# %% [markdown]
# ## Positive control: an over-fitted target
#
# The attacks must be able to see leakage of a known size. Per task and seed, more LoRA targets are
# trained on the same members for more epochs and kept at their last epoch (no selection), so they
# fit their members more closely than the main LoRA target: one far longer (a gross over-fit), and
# milder ones whose leakage should be nearer the size of the margin ({doc}`design`, amendment 2). A seed
# counts only if both its targets learned the task (the per-run gate, amendment 5). The loss attack (which needs no shadows)
# is run on the same members and non-members against both targets; the control is **detected** when
# the per-seed AUC differences (over-fitted minus main) have a seed-level 95% interval above zero,
# the same reading as the findings. Each seed's example-level interval is shown as well.

# %% tags=["hide-input"]
variant_rows, control_lines, matched_lines = [], [], []
for task in P["tasks"]:
    ctrl_diffs: dict = {}  # per control variant (a task may plant several sizes of over-fitting)
    for seed in P["seeds"]:
        for name, (vcfg, vshadows) in chapters.mia_variant_configs(task, P, seed).items():
            role = next(v["role"] for v in task["variants"] if v["name"] == name)
            vrecs = sweep.run(store, [vcfg] + vshadows, force=force, desc=f"{task['name']} {name} seed {seed}",
                              workers=P["workers"], train_options=P["train_options"])
            vt = vrecs[0].predictions()
            vloss = mia.loss_scores(vt)
            h = vrecs[0].meta["history"]
            variant_rows.append({"task": task["name"], "seed": seed, "target": name, "role": role,
                                 "method": vcfg["method"], "epochs": vcfg["epochs"],
                                 "val accuracy": h["val_accuracy"][h["epoch"].index(h["selected_epoch"])],
                                 "train accuracy": vrecs[0].metrics["train"]["accuracy"],
                                 "test accuracy": vrecs[0].metrics["accuracy"]["value"],
                                 "loss AUC": roc_auc_score(vloss["member"], vloss["score"]),
                                 "learned": learned_gate(vt)["passed"] is not False})
            main_learned = next(x["learned"] for x in fit_rows
                                if (x["task"], x["seed"], x["method"]) == (task["name"], seed, vcfg["method"]))
            if role == "control" and not (main_learned and variant_rows[-1]["learned"]):
                control_lines.append(f"- **{task['name']}**, seed {seed}, {vcfg['epochs']} epochs: left out, "
                                     "the over-fitted or the main target failed the per-run gate.")
                ctrl_diffs.setdefault((vcfg["epochs"], name), [])
            elif role == "control":
                d = mia.paired_auc_difference(vloss, all_scores[(task["name"], seed, vcfg["method"], "loss")],
                                              resolve("findings", P["profile"])["n_boot"], seed)
                ctrl_diffs.setdefault((vcfg["epochs"], name), []).append(d)
                control_lines.append(f"- **{task['name']}**, seed {seed}: loss-attack AUC of the over-fitted "
                                     f"{vcfg['method']} target ({vcfg['epochs']} epochs) minus the main one "
                                     f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] over {d['n']} "
                                     "attacked examples.")
            else:
                other = next(m for m in P["methods"] if m != vcfg["method"])
                for attack in ("loss", "lira"):
                    vs = (vloss if attack == "loss" else
                          mia.lira_scores(vt, [r.predictions() for r in vrecs[1:]], P["global_variance"]))
                    d = mia.paired_auc_difference(all_scores[(task["name"], seed, other, attack)], vs,
                                                  resolve("findings", P["profile"])["n_boot"], seed)
                    verdict = {"lower": "lies below zero", "higher": "lies above zero"}.get(d["verdict"], "includes zero")
                    matched_lines.append(f"- **{task['name']}**, seed {seed}, {attack} attack: {other} target minus "
                                         f"the {vcfg['epochs']}-epoch {vcfg['method']} target {d['difference']:+.3f} "
                                         f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]: the interval over attacked "
                                         f"examples {verdict} (test sampling only, no verdict).")
    for (epochs, name), diffs in sorted(ctrl_diffs.items()):
        e = inference.planted_effect(dict(enumerate(d["difference"] for d in diffs)), higher=True)  # gated seeds
        size = findings.control_size(e["difference"], inference.margin("loss_auc"))
        glue(f"mia_{task['name']}_{name}_control", "detected" if e["detected"] else "not detected", display=False)
        ci = inference.interval_text(e)
        control_lines.append(f"  - **{task['name']}, {epochs} epochs without selection: the planted leakage is "
                             + (f"detected**: mean {e['difference']:+.3f}, seed-level 95% interval {ci}" if e["detected"]
                                else f"not detected**: mean {e['difference']:+.3f}, seed-level 95% interval {ci}, so "
                                "this task's attacks cannot show a leakage difference of this size")
                             + f"; its size against the attack-AUC margin: {size}.")
main_fit = pd.DataFrame(fit_rows).assign(target="main", role="main")
if variant_rows:
    display(plots.table(pd.concat([main_fit, pd.DataFrame(variant_rows)], ignore_index=True)
            [["task", "seed", "target", "role", "method", "train accuracy", "test accuracy", "val accuracy"]]
            .sort_values(["task", "seed", "role"])))
display(Markdown("\n".join(control_lines) or "No positive control on this profile (a task's `variants`)."))

# %% [markdown]
# ## At matched utility
#
# A target that learns less is expected to leak less, so a leakage difference between methods can be a
# difference in how well they fit. Where the profile names a utility-matched target (a task's
# `variants` with role `matched`), the other method's main target is compared with it on the same
# members and non-members; its shadows are trained the same way (same method and epochs, last
# checkpoint). The table above gives its validation, train and test accuracy next to the main targets',
# so the reader can check how close the match is.

# %% tags=["hide-input"]
for task in P["tasks"]:
    if any(v["role"] == "matched" for v in task.get("variants") or []) or not {"lora", "full"} <= set(P["methods"]):
        continue
    pairs = [(seed, main_val[(task["name"], seed, "lora")], main_val[(task["name"], seed, "full")])
             for seed in P["seeds"]]
    as_good = all(lo >= fu for _, lo, fu in pairs)
    matched_lines.append(f"- **{task['name']}** has no separate matched target: its main targets' selected validation "
                         "accuracies are " + "; ".join(f"seed {sd}: LoRA {lo:.3f}, full {fu:.3f}" for sd, lo, fu in pairs)
                         + (". LoRA's is at least as high at every seed, so a lower leakage of the LoRA target there is "
                            "not bought with lower validation accuracy." if as_good else
                            ". They differ in both directions, so the main comparison is not utility-matched."))
display(Markdown("\n".join(matched_lines) or "No utility-matched target on this profile."))

# %% [markdown]
# ## Leakage at equal fit
#
# A target that fits its members more closely than it fits unseen data leaks more, whatever its
# method. So the question is not only whether the LoRA target's attack AUC is lower, but whether it
# is lower **at the same generalisation gap** (train minus test accuracy). Every attacked target of a
# task enters one regression: the main targets of every method, the over-fitted controls and the
# utility-matched target, all attacked by the loss attack on the same members and non-members of
# their seed, if it learned the task (the per-run gate of {doc}`design`, read on its validation split;
# the targets that fail it are counted and left out). The attack AUC is fitted on the gap, a term per method (full fine-tuning the baseline)
# and a term per seed (`mia.leakage_at_equal_fit`; t critical values, amendment 5); the LoRA term is LoRA's AUC difference from full
# fine-tuning at equal gap. It is shown beside the raw difference of the main targets. The fit assumes
# one slope for all methods, and its interval (robust HC3 standard errors) treats targets as
# independent although the targets of a seed share their attacked examples, so it describes these
# targets and carries no verdict; the seed-level verdicts are those of {doc}`findings`.
#
# See {numref}`fig-mia-equal-fit` below.

# %% tags=["hide-input"]
fit_table = pd.DataFrame(fit_rows).assign(target="main", main=True)
fit_table["loss AUC"] = [roc_auc_score(all_scores[(r.task, r.seed, r.method, "loss")]["member"],
                                       all_scores[(r.task, r.seed, r.method, "loss")]["score"])
                         for r in fit_table.itertuples()]
if variant_rows:
    fit_table = pd.concat([fit_table, pd.DataFrame(variant_rows).assign(main=False)], ignore_index=True)
fit_table["gap"] = fit_table["train accuracy"] - fit_table["test accuracy"]
equal_fit_lines = []
for task in P["tasks"]:
    d = fit_table[fit_table["task"] == task["name"]].rename(columns={"loss AUC": "auc"})
    failed = d[~d["learned"]]
    d = d[d["learned"]]
    if not {"lora", "full"} <= set(d["method"]):
        equal_fit_lines.append(f"- **{task['name']}**: no comparison at equal fit: fewer than one LoRA and one fully "
                               "fine-tuned target learned the task.")
        continue
    r = mia.leakage_at_equal_fit(d)
    glue(f"mia_{task['name']}_equal_fit", f"{r['coef']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]", display=False)
    equal_fit_lines.append(
        f"- **{task['name']}** ({r['targets']} targets: "
        + ", ".join(f"{k} {v}" for k, v in r["per_method"].items()) + "): LoRA minus full, loss-attack AUC, raw difference of the main "
        f"targets {r['raw']:+.3f} (mean over seeds); **at equal gap and seed {r['coef']:+.3f}** "
        f"[{r['lo']:+.3f}, {r['hi']:+.3f}]; each point of generalisation gap adds {r['slope'] / 100:+.4f} of AUC."
        + (f" Left out, failing the gate: {len(failed)} target(s) ("
           + ", ".join(f"{x.target} {x.method}, seed {x.seed}" for x in failed.itertuples()) + ")." if len(failed) else ""))
fig = plots.leakage_vs_gap(fit_table[fit_table["learned"]], P["profile"])
glue("mia_equal_fit_fig", plots.checked(fig), display=False)
plots.plt.close(fig)
display(Markdown("\n".join(equal_fit_lines) or "No task attacks both a LoRA and a fully fine-tuned target."))

# %% [markdown]
# ```{glue:figure} mia_equal_fit_fig
# :name: fig-mia-equal-fit
#
# Loss-attack AUC against the generalisation gap (train minus test accuracy) of each target that
# learned the task, one panel per task: main targets filled, over-fitted controls and utility-matched targets hollow; colour and
# marker give the method. Points at the same gap compare methods at equal fit.
# ```

# %% [markdown]
# ```{admonition} Takeaways
# :class: tip
# - Membership-inference leakage follows the generalisation gap: a model that fits its training
#   set more closely leaks more, whatever its method, so methods are compared at equal fit.
# - A target that learned nothing leaks little; that is the privacy-utility trade-off, not a
#   property of LoRA. Compare targets that learned.
# - At this scale the comparison is exploratory (too few seeds for a verdict); the intervals are
#   reported, not counted.
# ```

# %% [markdown]
# ## Exercises
#
# Run the commands from the repository's root after `make setup` (or `make book`), which installs
# the environment in `.venv/`; `.venv/bin/lorafair` is its command (or `source .venv/bin/activate`
# first and type `lorafair`). `lorafair notebook` writes the executed notebook to `_runs/notebooks/`
# (never over the book's), reuses every run that has a record, and the cost line says what it has to
# train. The solutions are computed from this book's run records.

# %% tags=["remove-cell"]
from lorafair.launch import exercise_cost

exr = pd.DataFrame(exercise_rows)
half = max(2, P["n_shadows"] // 2)
glue("mia_ex_half", half, display=False)
glue("mia_ex_shadows_cost", Markdown(exercise_cost("membership_inference", P["profile"], {"n_shadows": half},
                                                   P["results_dir"])), display=False)
glue("mia_ex_variance_cost", Markdown(exercise_cost("membership_inference", P["profile"], {"global_variance": True},
                                                    P["results_dir"])), display=False)


def _exercise_answer(column: str) -> tuple[str, pd.DataFrame]:
    rows, lines = [], []
    for (task_name, method), g in exr.groupby(["task", "method"], sort=False):
        sm = inference.seed_summary((g[column] - g["per-example variance"]).to_numpy(), 0.0)
        rows.append({"task": task_name, "method": plots.METHOD_LABEL[method], "seeds": len(g),
                     "LiRA AUC, the chapter's": g["per-example variance"].mean(), f"LiRA AUC, {column}": g[column].mean(),
                     "difference [95% seed CI]": f"{sm['difference']:+.3f} {inference.interval_text(sm)}"})
    t = pd.DataFrame(rows)
    if t.empty:
        return "This profile has no targets.", t
    lo, hi = (t[f"LiRA AUC, {column}"] - t["LiRA AUC, the chapter's"]).agg(["min", "max"])
    return (f"Mean LiRA AUC moves by {lo:+.3f} to {hi:+.3f} across the targets (means over seeds); the table gives "
            "each target's per-seed difference with its seed-level interval."), t


text, tab = _exercise_answer("half the shadows")
glue("mia_ex_shadows_answer", Markdown(text), display=False)
glue("mia_ex_shadows_table", plots.table(tab), display=False)
text, tab = _exercise_answer("global variance")
glue("mia_ex_variance_answer", Markdown(text), display=False)
glue("mia_ex_variance_table", plots.table(tab), display=False)

# %% [markdown]
# ````{exercise}
# :label: mia-ex-shadows
#
# **How many shadows does LiRA need?** Attack the same targets with half of the shadow models
# ({glue}`mia_ex_half`); the shadows are reused, only the attack changes:
#
# ```
# .venv/bin/lorafair notebook membership_inference -p n_shadows 4
# ```
#
# Cost on two cores: {glue:md}`mia_ex_shadows_cost`. Does the attack AUC drop with fewer shadows,
# and by more than its seed-level interval? (The original study used 16 shadows.)
# ````
#
# ````{solution} mia-ex-shadows
# :class: dropdown
#
# {glue:md}`mia_ex_shadows_answer`
#
# ```{glue:} mia_ex_shadows_table
# ```
# ````
#
# ````{exercise}
# :label: mia-ex-variance
#
# **One variance for every example.** With few shadows, a per-example variance is estimated from a
# handful of values; LiRA's authors suggest one global variance instead:
#
# ```
# .venv/bin/lorafair notebook membership_inference -p global_variance true
# ```
#
# Cost on two cores: {glue:md}`mia_ex_variance_cost`. Which variance gives the stronger attack
# here?
# ````
#
# ````{solution} mia-ex-variance
# :class: dropdown
#
# {glue:md}`mia_ex_variance_answer`
#
# ```{glue:} mia_ex_variance_table
# ```
# ````
