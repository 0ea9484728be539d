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
# # Generation fairness: pronouns after fine-tuning, and the answer-token bias probe
#
# Classification fairness asks whether every group is served equally well. For generation the
# question is what the model *says*. This chapter repeats the two generation experiments of the
# original study.
#
# **Part 1: pronoun bias after fine-tuning.** The original study fine-tuned Llama-2 7B and Mistral 7B
# to translate Turkish into English. Turkish has one gender-neutral third-person pronoun ("o"), so the
# English pronoun a model writes shows which gender it assumes for the person in the sentence,
# e.g. "The CEO helped the nurse because o needed help". The models were fine-tuned either on
# **balanced** references (each Turkish source with a *he* and a *she* translation) or on
# **pro-stereotypical** references only, with LoRA or fully. Each greedy output is scored by its
# pronouns relative to the stereotypical gender of the sentence's entity (the nurse:
# female-predisposed):
#
# - **pro**: only pronouns of the stereotypical gender;
# - **anti**: only pronouns of the other gender;
# - **neutral**: only *they/them/their*;
# - **unknown**: both genders, or no pronoun at all.
#
# *Offline stand-in* (`occupations`): one person per sentence, so the pronoun can refer to nobody
# else. Twenty sentence frames written for this study ("The nurse said that they would be late for
# the meeting.") are filled with the 40 occupations of WinoBias, each with its stereotypical gender
# (WinoBias takes it from US labour statistics). The source has singular *they*; the references have
# *he* or *she*, and the verbs after the pronoun agree with all three. Each seed draws its own split
# **by frame**: the test sentences' frames never occur in training, and 10 occupations (5 of each
# stereotypical gender) occur only at test time. The **balanced** references give every training
# occupation *he* in half of its frames and *she* in the other half; the **pro** references give the
# same sources the stereotypical pronoun. The two training sets differ only in the pronouns' genders.
# (An earlier version used WinoBias sentences themselves; each names two people, the pronoun's referent
# is ambiguous, and training on pro-stereotypical references did not raise the stereotype excess, so
# that design could not measure what it was meant to.)
# *Paper profile*: the original's Turkish-English files, fetched at run time.
#
# **Part 2: answer-token bias.** The original asked language models for the gender of a review's
# author with 45 prompt variants: yes/no, multiple choice and cloze questions, and copies whose
# options are listed in another order or labelled with digits or symbols (◐ ◑, and the orange,
# yellow and green circle emoji, written below as [large orange circle] and so on). If the
# answer changes when only the order or the symbol changes, the model prefers an answer *token* or
# *position*, not a gender: that is **token bias**, and it makes prompt-based fairness measurements
# unreliable.
#
# **Fixes over the original code** ({doc}`methods` has the details):
# - padding is masked out of the loss;
# - epochs are selected on a validation split of source groups, never on the test sources;
# - each candidate answer is scored by the log-likelihood of *its own tokens* after the prompt, not
#   by the mean loss over the whole string;
# - the text is shortened *before* it is put into the prompt, so truncation never cuts the answer
#   (the original truncated whole strings at 256 tokens; the candidates then became identical and the
#   tie went to the first option).
#
# ```{admonition} Learning objectives and prerequisites
# :class: note
# After this chapter you can (1) score the pronouns a fine-tuned model writes against occupational
# stereotypes; (2) separate what LoRA does from what any fine-tuning does (full minus base beside
# LoRA minus base); (3) measure token bias by changing only the order or the symbols of answer
# options, and check a probe with a planted control. *Prerequisites*: causal language models and
# likelihood scoring; the statistics of the vision chapter.
# ```

# %% tags=["parameters"]
profile = "offline"        # smoke | offline | paper; every None below takes the profile's value
pronoun_task = None
pronoun_task_kwargs = None
models = None
methods = None
train_sets = None
rank = None                # LoRA rank (alpha stays 16, as the original's sweeps)
seeds = None
epochs = None
lrs = None
batch_size = None
max_length = None
max_new_tokens = None
probe_corpus = None
probe_corpus_kwargs = None
probe_epochs = None
probe_lrs = None
probe_block = None
n_probe = None
probe_prompts = None
max_text_tokens = None
probe_plant = None         # positive control: planted probe answers (first-listed option) in fine-tuning
probe_control_method = None
n_boot = None
workers = None
train_options = None      # speed settings, not hashed: {compile: true, gradient_checkpointing: true}
results_dir = None
force = False              # True recomputes runs that already have a record

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from lorafair import chapters, findings, inference, sweep
from lorafair import generation as gen
from lorafair import plots
from lorafair.notebook import setup_chapter

P, store = setup_chapter("generation_fairness", globals())
grid = chapters.configs("generation_fairness", P)  # lorafair plan generation_fairness
pronoun_cfgs, probe_cfgs = grid["pronoun"], grid["probe"]
display(Markdown(
    f"**Profile `{P['profile']}`**: models {', '.join(f'`{m}`' for m in P['models'])}; methods "
    f"{', '.join(P['methods'])}; pronoun task `{P['pronoun_task']}`, training references "
    f"{', '.join(P['train_sets'])}; probe corpus `{P['probe_corpus']}` ({P['n_probe']} probed texts); "
    f"seeds {P['seeds']}; run records in `{P['results_dir']}/generation_fairness/`."))

# %% [markdown]
# ## Part 1: pronoun bias after fine-tuning
#
# One run per (model, method, training references, seed): fine-tuning (not for the base model),
# then greedy decoding of every test source. The table shows what trained and how well it fit: the
# validation loss per target token at the selected epoch.

# %% tags=["hide-input"]
pronoun_recs = sweep.run(store, pronoun_cfgs, force=force, train_options=P["train_options"], workers=P["workers"],
                         desc="pronoun runs")
task = gen.load_pronoun_task(P["pronoun_task"], P["seeds"][0], **P["pronoun_task_kwargs"])
display(Markdown(f"Data: {task.description}."))
rows = []
for r in pronoun_recs:
    c, h = r.config, r.meta.get("history") or {}
    rows.append({"model": c["model"], "method": c["method"], "training refs": c.get("train_set") or "-",
                 "seed": c["seed"], "train examples": r.meta["n_train"],
                 "epochs": c.get("epochs", 0), "lr": f"{c['lr']:g}" if "lr" in c else "-",
                 "val loss / token": (min(h["val_loss"]) if h.get("val_loss") else float("nan")),
                 "trainable params": r.meta["adaptation"]["trainable_params"],
                 "seconds": r.meta["wall_seconds"]})
display(plots.table(pd.DataFrame(rows), caption="Pronoun-task runs: reference set, examples, epochs, learning rate, validation loss, trainable parameters and run time"))
preds = gen.pronoun_predictions(pronoun_recs)

# %% [markdown]
# ### Pronoun categories
#
# Fractions over the test sources, with 95% Wilson intervals, pooled over seeds.
#
# See {numref}`fig-gen-pronouns` below.

# %% tags=["hide-input"]
summary = []
for (model, method, ts, test_set), g in preds.groupby(["model", "method", "train_set", "test_set"], sort=False):
    for scope, d in (("all", g), ("male-predisposed", g[g["predisposition"] == "male"]),
                     ("female-predisposed", g[g["predisposition"] == "female"])):
        ratios = gen.pronoun_ratios(d)["all"]
        row = {"model": model, "method": method, "refs": ts, "test set": test_set, "sources": scope,
               "n": ratios["n"]}
        for c in gen.CATEGORIES:
            row[f"{c} [95% CI]"] = "{:.3f} [{:.2f}, {:.2f}]".format(ratios[c]["ratio"], *ratios[c]["ci"])
        summary.append(row)
summary = pd.DataFrame(summary)
display(plots.table(summary, caption="Pronoun categories of the generations per method and reference set"))
for i, test_set in enumerate(preds["test_set"].unique()):  # the paper profile has two test sets
    fig = plots.pronoun_bars(preds[preds["model"] == P["models"][0]], P["profile"], test_set)
    if i == 0:
        glue("gen_pronoun_fig", plots.checked(fig), display=False)
        plots.plt.close(fig)

# %% [markdown]
# ```{glue:figure} gen_pronoun_fig
# :name: fig-gen-pronouns
#
# Pronoun categories of the greedy generations for held-out sources, split by the stereotypical
# gender of the sentence's entity, for the first model. Pro (solid), anti (hatched //), neutral
# (dotted) and unknown (crossed). A model that learned the balanced references has no reason to
# prefer *pro*; one trained on pro-stereotypical references has every reason to.
# ```

# %% [markdown]
# Example generations (test sources; the scored part is the text up to the first line break or
# the next source cue):

# %% tags=["hide-input"]
ex_ids = preds["example_id"].drop_duplicates().head(4)
examples = preds[preds["example_id"].isin(ex_ids) & (preds["model"] == P["models"][0])
                 & (preds["seed"] == P["seeds"][0])]
display(plots.table(examples[["source", "predisposition", "method", "train_set", "scored", "category"]]
        .rename(columns={"train_set": "refs", "scored": "generation (scored part)"})))

# %% [markdown]
# ### Positive control: do pro-stereotypical references make a model more stereotyped?
#
# The **stereotype excess** is the pro rate minus the anti rate (a generation scores +1 when pro, -1
# when anti, 0 otherwise; the raw pro rate would rise for any model that writes a gendered pronoun
# instead of *they*). Training on pro-stereotypical references must raise it over balanced
# references, for the same method, seeds and test sources. If it does not, this part cannot measure
# stereotyping and its LoRA-versus-full verdicts are left out of the count in {doc}`findings`.
# The control is **detected** when its per-seed effects have a seed-level 95% interval above zero
# (the findings' reading); the example-level paired bootstrap over (seed, test source) pairs is
# shown beside it.

# %% tags=["hide-input"]
lines = []
control_detected = {}
for model in P["models"]:
    sub = preds[preds["model"] == model]
    for m in [x for x in P["methods"] if x != "base"]:
        d = gen.paired_rate_difference(sub, {"method": m, "train_set": "pro"}, {"method": m, "train_set": "balanced"},
                                       gen.STEREOTYPE_EXCESS, P["n_boot"]) if {"pro", "balanced"} <= set(P["train_sets"]) else None
        if d is None:
            continue
        e = inference.planted_effect(d["per_seed"], higher=True)
        control_detected[(model, m)] = e["detected"]
        glue(f"gen_{model}_{m}_control", round(d["difference"], 3), display=False)
        unseen = sub[~sub["occupation_seen"].astype(bool)] if "occupation_seen" in sub else sub.iloc[:0]
        d_new = gen.paired_rate_difference(unseen, {"method": m, "train_set": "pro"}, {"method": m, "train_set": "balanced"},
                                           gen.STEREOTYPE_EXCESS, P["n_boot"]) if len(unseen) else None
        lines.append(f"- **{model}, {plots.METHOD_LABEL[m]}**: stereotype excess after pro minus after balanced references "
                     f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] over {d['n']} (seed, source) pairs; "
                     f"per seed {', '.join(f'{v:+.3f}' for v in e['per_seed'].values())}, seed-level 95% interval "
                     f"{inference.interval_text(e)}: "
                     + ("**detected**" if e["detected"] else "**not detected**")
                     + (f"; on the occupations never seen in training alone {d_new['difference']:+.3f} "
                        f"[{d_new['ci'][0]:+.3f}, {d_new['ci'][1]:+.3f}] (n = {d_new['n']})" if d_new else "") + ".")
display(Markdown("\n".join(lines) or "No control: the profile trains on one set of references only."))

# %% [markdown]
# ### Reading part 1
#
# **LoRA against full fine-tuning** in the stereotype excess of what they write, per training set,
# paired over the same test sources and seeds. **Against the base model**: the base model rarely
# writes a gendered pronoun when it is only prompted, so its generations cannot be compared with the
# fine-tuned models' on that metric. Every model, the base model included, does assign a probability
# to both references of a test source, which differ only in the pronoun. The **forced-choice
# preference** is the share of test sources whose pro-stereotypical reference is the more likely one
# (0.5: no preference), and it compares all three. "More stereotyped" is said only when the 95%
# interval of the difference excludes zero.

# %% tags=["hide-input"]
lines, per_seed = [], []
for model in P["models"]:
    for test_set in preds["test_set"].unique():
        sub = preds[(preds["model"] == model) & (preds["test_set"] == test_set)]
        for (method, ts, seed), g in sub.groupby(["method", "train_set", "seed"], sort=False):
            row = {"model": model, "method": method, "refs": ts, "seed": seed, "test sources": len(g),
                   "gendered share": float(g["category"].isin(["pro", "anti"]).mean()),
                   "stereotype excess": float(g["category"].map(gen.STEREOTYPE_EXCESS).mean())}
            if "loglik_pro" in g:
                row["forced-choice preference"] = float((g["loglik_pro"] > g["loglik_anti"]).mean())
            per_seed.append(row)
        for ts in P["train_sets"]:
            if not {"lora", "full"} <= set(sub["method"]):
                continue
            d = gen.paired_rate_difference(sub, {"method": "lora", "train_set": ts}, {"method": "full", "train_set": ts},
                                           gen.STEREOTYPE_EXCESS, P["n_boot"])
            if d is None:
                continue
            verdict = {"higher": "lies above zero", "lower": "lies below zero"}.get(d["verdict"], "includes zero")
            glue(f"gen_{model}_{test_set}_{ts}_lora_minus_full", round(d["difference"], 3), display=False)
            lines.append(f"- **{model}, {ts} references**: stereotype excess, LoRA minus full "
                         f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] (n = {d['n']}): the "
                         f"interval over test sources {verdict}. It describes test sampling only; the seed-level "
                         "verdict is the findings chapter's.")
            if "loglik_pro" in sub:
                for other, sel in (("full", {"method": "full", "train_set": ts}), ("base", {"method": "base"})):
                    d = gen.paired_rate_difference(sub, {"method": "lora", "train_set": ts}, sel, "pro_preference",
                                                   P["n_boot"])
                    if d is None:
                        continue
                    verdict = {"higher": "lies above zero", "lower": "lies below zero"}.get(d["verdict"], "includes zero")
                    lines.append(f"  - forced-choice preference, LoRA minus {other}: {d['difference']:+.3f} "
                                 f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]: interval over test sources {verdict}.")
per_seed = pd.DataFrame(per_seed)
if not any(control_detected.values()):
    lines.append("- The positive control was not detected, so none of these comparisons can show a difference in "
                 "stereotyping; they are reported, not counted.")
lines.append(f"- Profile `{P['profile']}`, seeds {P['seeds']}: each seed is one training run per method and training "
             "set, with its own split of frames and held-out occupations.")
display(plots.table(per_seed, caption="The pronoun task per seed: the measures behind the differences above"))
display(Markdown("\n".join(lines)))

# %% [markdown]
# ### Beyond LoRA: does low-rank fine-tuning keep more of the base model's bias?
#
# Das et al. (2024, "Low-rank finetuning for LLMs: a fairness perspective") argue that low-rank
# fine-tuning moves a model less far from its pre-trained behaviour than full fine-tuning, and so
# keeps more of the base model's bias. Here every method was fine-tuned on the **balanced**
# references (as many *he* as *she* for every occupation), so a method that learns the data should
# move the base model's forced-choice preference towards 0.5, and a method that moves less keeps
# more of the base model's preference. Besides LoRA and full fine-tuning, DoRA and IA3 (whose
# learning rates are untuned, like the other generation runs: IA3 at ten times LoRA's) trained on
# the balanced references only (`extra_methods`). Per method: the mean over seeds of the per-seed
# paired shift (method minus base model, on the same test sources), with its seed-level 95%
# interval, against the method's trainable parameters; also the method's own preference. If the
# hypothesis held, the shift would grow in size with the trainable parameters, from IA3 through
# LoRA and DoRA to full fine-tuning.
#
# See {numref}`fig-gen-shift` below.

# %% tags=["hide-input"]
from lorafair import methods as methods_mod

shift_rows = []
params = {r.config["method"]: r.meta["adaptation"]["trainable_params"] for r in pronoun_recs}
for model in P["models"]:
    for test_set in preds["test_set"].unique():
        sub = preds[(preds["model"] == model) & (preds["test_set"] == test_set)]
        if "loglik_pro" not in sub or "base" not in set(sub["method"]):
            continue
        for m in methods_mod.order(set(sub["method"]) - {"base"}):
            if "balanced" not in set(sub.loc[sub["method"] == m, "train_set"]):
                continue
            d = gen.paired_rate_difference(sub, {"method": m, "train_set": "balanced"}, {"method": "base"},
                                           "pro_preference", n_boot=0)
            if d is None:
                continue
            own = sub[(sub["method"] == m) & (sub["train_set"] == "balanced")]
            s_ = inference.seed_summary(list(d["per_seed"].values()), inference.margin("pro_preference"))
            shift_rows.append({"panel": f"{model}, test set '{test_set}'", "method": m,
                               "label": methods_mod.label(m), "trainable": params.get(m),
                               "preference": float((own["loglik_pro"] > own["loglik_anti"]).mean()),
                               "shift": s_["difference"], "lo": s_["lo"], "hi": s_["hi"], "seeds": s_["seeds"]})
shift = pd.DataFrame(shift_rows)
if len(shift):
    display(plots.table(shift.drop(columns=["method"]).rename(columns={
        "label": "method", "preference": "forced-choice preference", "shift": "shift from base", "lo": "95% low",
        "hi": "95% high", "trainable": "trainable params"})))
    fig = plots.shift_from_base(shift, P["profile"], "shift", "forced-choice preference, method minus base")
    glue("gen_shift_fig", plots.checked(fig), display=False)
    plots.plt.close(fig)
    order = shift.groupby("method")["trainable"].first().sort_values()
    mags = shift.groupby("method")["shift"].apply(lambda x: x.abs().mean()).reindex(order.index)
    rising = bool((mags.diff().dropna() > 0).all())
    display(Markdown(f"Ordered by trainable parameters ({', '.join(methods_mod.label(m) for m in order.index)}), the "
                     f"mean size of the shift over the test sets is "
                     + ", ".join(f"{v:.3f}" for v in mags) + ": it "
                     + ("grows with every step, as the hypothesis predicts; with so few methods and seeds this is "
                        "a description, not a test." if rising else
                        "does not grow with every step in trainable parameters, so these records do not show the "
                        "predicted pattern (a description of few methods and seeds, not a test).")))
else:
    glue("gen_shift_fig", plots.plt.figure(), display=False)
    display(Markdown("No method was fine-tuned on the balanced references with a base model to compare on this profile."))

# %% [markdown]
# ```{glue:figure} gen_shift_fig
# :name: fig-gen-shift
#
# Forced-choice preference of each method fine-tuned on the balanced references minus the base
# model's, on the same test sources (mean of the per-seed shifts, 95% seed-level interval), against
# the method's trainable parameters; one panel per test set.
# ```

# %% [markdown]
# ## Part 2: answer-token bias
#
# A language model is fine-tuned on a corpus (LoRA or fully; the base model is probed as it is)
# and then asked for the author's gender of texts from that corpus (the original probed its
# fine-tuning reviews). The prompt variants and their base prompts:
#
# See {numref}`fig-gen-choices` and {numref}`fig-gen-bias-index` below.

# %% tags=["hide-input"]
display(plots.table(pd.DataFrame([{"id": p.id, "kind": p.kind, "compared with": p.base or "-", "change": p.change or "-",
                       "options (answer: content)": gen.readable(", ".join(f"{a}: {c}" for a, c in p.options)),
                       "prompt": gen.readable(p.template.replace("{text}", "…"))} for p in gen.PROBE_PROMPTS
                      if p.id in set(probe_cfgs[0]["prompt_ids"])])))

# %% tags=["hide-input"]
probe_recs = sweep.run(store, probe_cfgs, force=force, train_options=P["train_options"], workers=P["workers"],
                       desc="probe runs")
probe_rows, bi_rows, pref_rows, fit = [], [], [], []
for r in probe_recs:
    c, h = r.config, r.meta.get("history") or {}
    probe_rows.append(r.predictions().assign(model=c["model"], method=c["method"], seed=c["seed"]))
    bi_rows.append(pd.DataFrame(r.metrics["bias_index"]).assign(model=c["model"], method=c["method"], seed=c["seed"]))
    pref_rows.append(pd.DataFrame(r.metrics["preference"]).assign(model=c["model"], method=c["method"], seed=c["seed"]))
    fit.append({"model": c["model"], "method": c["method"], "seed": c["seed"],
                "train chunks": r.meta["n_train_chunks"], "val loss / token": min(h["val_loss"]) if h.get("val_loss") else float("nan"),
                "texts probed": r.metrics["n_texts"], "mean TV distance": r.metrics["mean_tv_distance"],
                "mean flip rate": r.metrics["mean_flip_rate"], "seconds": r.meta["wall_seconds"]})
probe_rows = pd.concat(probe_rows, ignore_index=True)
bi = pd.concat(bi_rows, ignore_index=True)
pref = pd.concat(pref_rows, ignore_index=True)
display(plots.table(pd.DataFrame(fit), caption="Probe runs: training, validation loss and the probe's summary"))

# %% tags=["hide-input"]
first = (probe_rows["model"] == P["models"][0]) & (probe_rows["seed"] == P["seeds"][0])
mc_ids = [p for p in probe_cfgs[0]["prompt_ids"] if gen.PROBE_BY_ID[p].kind in ("mc", "cloze")]
fig = plots.choice_bars(probe_rows[first], mc_ids, P["profile"])
glue("gen_choice_fig", plots.checked(fig), display=False)
plots.plt.close(fig)
fig = plots.bias_index_plot(bi[(bi["model"] == P["models"][0]) & (bi["seed"] == P["seeds"][0])], P["profile"])
glue("gen_bias_index_fig", plots.checked(fig), display=False)
plots.plt.close(fig)

# %% [markdown]
# ```{glue:figure} gen_choice_fig
# :name: fig-gen-choices
#
# Chosen answers of the multiple-choice and cloze prompts per variant, base model and its LoRA and
# fully fine-tuned versions (first model and seed). The variants ask the same question; only the
# order or the labels of the options differ. Male (solid), female (hatched //), neutral (dotted).
# ```
#
# ```{glue:figure} gen_bias_index_fig
# :name: fig-gen-bias-index
#
# Token-bias index per prompt variant: total-variation distance between the distribution of chosen
# contents under the variant and under its base prompt, with 95% bootstrap intervals over texts.
# 0: the answer does not depend on order or symbols; 1: it flips completely.
# ```

# %% [markdown]
# ### Reading part 2
#
# The bias index of a model is the mean over variants of the total-variation distance; the flip
# rate is the share of (text, variant) pairs whose chosen content changes. A "gender preference"
# read from a single prompt is only meaningful where the index is near zero.

# %% tags=["hide-input"]
lines, texts_probed = [], 0
for (model, seed), g in bi.groupby(["model", "seed"], sort=False):
    for m in [m for m in ("base", "lora", "full") if m in set(g["method"])]:
        s = g[g["method"] == m]
        tv, fl = float(s["tv_distance"].mean()), float(s["flip_rate"].mean())
        if seed == P["seeds"][0]:  # the base model is probed at the first seed only
            glue(f"gen_{model}_{m}_bias_index", round(tv, 3), display=False)
        if model == P["models"][0] and seed == P["seeds"][0]:  # model-independent keys for the introduction
            glue(f"gen_{m}_bias_index", round(tv, 3), display=False)
        worst = s.loc[s["tv_distance"].idxmax()]
        lines.append(f"- **{model}, {plots.METHOD_LABEL[m]}** (seed {seed}): bias index {tv:.3f}, flip rate {fl:.3f}; "
                     f"largest move `{worst['prompt_id']}` vs `{worst['base']}` ({worst['change']}): "
                     f"{worst['tv_distance']:.2f} [{worst['tv_ci'][0]:.2f}, {worst['tv_ci'][1]:.2f}].")
# the introduction's flip rates: a model's records as stated, with an interval on the method where
# it has several runs (seeds) and over its texts where it has one
for m in [m for m in ("base", "lora", "full") if m in set(probe_rows["method"])]:
    runs = probe_rows[(probe_rows["model"] == P["models"][0]) & (probe_rows["method"] == m)]
    per_run = [gen.mean_flip_rate(g, P["n_boot"], int(sd)) for sd, g in runs.groupby("seed")]
    if len(per_run) > 1:
        sl = inference.seed_summary([b["value"] for b in per_run], inference.margin("flip_rate"))
        value, lo, hi = sl["difference"], sl["lo"], sl["hi"]
    else:
        value, (lo, hi) = per_run[0]["value"], per_run[0]["ci"]
    for suffix, v in (("", value), ("_lo", lo), ("_hi", hi)):
        glue(f"gen_{m}_flip_rate{suffix}", round(float(v), 3), display=False)
    glue(f"gen_{m}_flip_runs", len(per_run), display=False)
    texts_probed = per_run[0]["texts"]
glue("gen_bias_index_texts", texts_probed, display=False)
for model in P["models"]:
    sub = probe_rows[probe_rows["model"] == model]
    d = gen.flip_rate_difference(sub[sub["method"] == "lora"], sub[sub["method"] == "full"], P["n_boot"])
    if d is not None:
        verdict = {"higher": "LoRA flips more", "lower": "LoRA flips less"}.get(d["verdict"], "inconclusive")
        lines.append(f"- **{model}**: LoRA minus full flip rate, paired over (seed, text) pairs of {d['seeds']} {'seed' if d['seeds'] == 1 else 'seeds'}: "
                     f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]: {verdict}.")
cl = pref[pref["kind"] == "cloze"]
if len(cl):
    lines.append("- Cloze prompts (no options, so no order or symbol to prefer): male share of male/female "
                 "choices " + "; ".join(f"{plots.METHOD_LABEL[m]} {v:.2f}" for m, v in
                                         cl.groupby("method", sort=False)["value"].mean().items()) + ".")
lines.append(f"- Profile `{P['profile']}`; {P['n_probe']} texts per model.")
display(Markdown("\n".join(lines)))
display(plots.table(pref.pivot_table(index=["prompt_id", "measure"], columns="method", values="value", sort=False)
                    .rename(columns=lambda m: plots.METHOD_LABEL[m]).reset_index()))

# %% [markdown]
# ### Positive control: a planted answer preference
#
# The probe claims to measure how much an answer depends on the order of the options. To show that
# it can, the control fine-tunes the same model and method on the same corpus plus planted examples:
# probe questions with listed options about corpus texts that are never probed, each answered with
# the option listed **first**. Each planted question lists its options in a random order, with a
# random symbol scheme (words, numbers, letters or special symbols, given by position or kept with
# their content), so the answer's position is the only thing all planted answers share.
#
# **Against what.** Fine-tuning on listed-option questions at all teaches the answer *format* (reply
# with one of the listed symbols or words), and a small model meets it partly by copying a recently
# listed option, which by itself lowers the first-option rate; plain fine-tuning has no such
# questions, so against it the plant's position preference is hidden under the format effect (the
# first two designs of this control compared with plain fine-tuning and moved the wrong way, see
# {doc}`design`, amendment 3). The reference is therefore **format-matched**: per seed the same
# model, method, corpus and training length, and the very same planted questions, each answered with
# a listed option drawn at random. The two runs differ only in where the answer sits. The control is
# **detected** when the share of the probe's listed-option questions (YN2 and MC1 families) answered
# with the first-listed option, planted minus reference, per seed over the same probed texts, has a
# seed-level 95% interval above zero. The flip rate over the order-only variants is shown beside it.
# (The planted answers are one or a few tokens each among the corpus blocks' tokens, so they are a
# small part of the training loss; a control that is not detected leaves the probe's verdicts out of
# the count.)
#
# **Read with care** (a review after these records, {doc}`design`, amendment 5). The first-option
# share does not separate a preference for a *position* from a preference for a *content*: the
# probe's variants do not put every content first equally often, and the reference's random-position
# answers pushed the model towards some contents (its first-option share falls far below what a model
# without any preference would give on these questions). Also, planted fine-tuning chose the first
# option *less* often than plain fine-tuning. The flip rate over the order-only variants is the reading
# that isolates position; unless it also separates the planted run from its reference, this control
# shows that the plant changes the model's choices, not that the probe sees a planted position
# preference.

# %% tags=["hide-input"]
control_recs = sweep.run(store, grid["probe_control"], force=force, train_options=P["train_options"],
                         workers=P["workers"], desc="probe control runs")
lines = []
if control_recs:
    control_rows = pd.concat([r.predictions().assign(model=r.config["model"], method=r.config["method"],
                                                     seed=r.config["seed"], answers=r.config.get("plant_answers", "first"))
                              for r in control_recs], ignore_index=True)
    for model in P["models"]:
        m = P["probe_control_method"]
        a = control_rows[(control_rows["model"] == model) & (control_rows["answers"] == "first")]
        ref = control_rows[(control_rows["model"] == model) & (control_rows["answers"] == "random")]
        plain = probe_rows[(probe_rows["model"] == model) & (probe_rows["method"] == m)]
        d = gen.first_option_difference(a, ref, P["n_boot"])
        if d is None:
            continue
        glue(f"gen_{model}_probe_control", round(d["difference"], 3), display=False)
        e = inference.planted_effect(d["per_seed"], higher=True)
        size = findings.control_size(e["difference"], inference.margin("flip_rate"))
        vs_plain = gen.first_option_difference(a, plain, 0)
        lines.append(f"- **{model}, {plots.METHOD_LABEL[m]}**: the first-listed option is chosen on "
                     f"{d['rates'][0]:.3f} of the listed-option questions after planted fine-tuning, on "
                     f"{d['rates'][1]:.3f} after the format-matched reference"
                     + (f" and on {vs_plain['rates'][1]:.3f} after plain fine-tuning." if vs_plain else "."))
        lines.append(f"- **{model}, {plots.METHOD_LABEL[m]}**, {P['probe_plant']} planted examples: first-option rate, "
                     f"planted minus reference {d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] over "
                     f"{d['n']} (seed, text) pairs of {d['seeds']} {'seed' if d['seeds'] == 1 else 'seeds'}; per seed "
                     + ", ".join(f"{v:+.3f}" for v in d["per_seed"].values())
                     + f"; seed-level 95% interval {inference.interval_text(e)}; its size against the flip-rate "
                     f"margin: {size}: "
                     + ("**detected**." if e["detected"] else "**not detected**: the probe cannot show an "
                        "order preference of this size, and its verdicts are left out of the count."))
        for name, other in (("the reference", ref), ("plain fine-tuning", plain)):
            f = gen.flip_rate_difference(a, other, P["n_boot"], variants=gen.order_variants())
            if f is not None:
                lines.append(f"  - flip rate over the order-only variants, planted minus {name}: "
                             f"{f['difference']:+.3f} [{f['ci'][0]:+.3f}, {f['ci'][1]:+.3f}] over {f['n']} (seed, text) pairs.")
display(Markdown("\n".join(lines) or "No positive control on this profile (`probe_plant`)."))

# %% [markdown]
# ```{admonition} Takeaways
# :class: tip
# - Fine-tuning of any kind moves a model's pronoun choices; LoRA is credited only with what full
#   fine-tuning does not also do (each LoRA-minus-base case sits beside full minus base).
# - The answers of a prompt-based probe change when only the order or the symbols of the options
#   change (token bias), so such fairness measures are fragile; a planted control must move the
#   probe in the planted direction before the probe is trusted.
# - At this scale both parts are exploratory (three seeds): the intervals are reported, not counted.
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

mc_family = [p.id for p in gen.PROBE_PROMPTS if p.id == "MC1" or p.base == "MC1"]
glue("gen_ex_token_prompts", Markdown(", ".join(f"`{x}`" for x in mc_family)), display=False)
glue("gen_ex_token_cost", Markdown(exercise_cost("generation_fairness", P["profile"], {"probe_prompts": mc_family},
                                                 P["results_dir"])), display=False)
kind = {p.id: ("order" if p.change.startswith("order") else "labels") for p in gen.PROBE_PROMPTS if p.base}
fl = []
for (mo, me, sd), g in probe_rows.groupby(["model", "method", "seed"], sort=False):
    f = gen.flips(g)
    if f.empty:
        continue
    f = f.assign(kind=f["prompt_id"].map(kind))
    rates = f.groupby("kind")["flip"].mean()
    fl.append({"model": mo, "method": me, "seed": sd, **rates.to_dict()})
fl = pd.DataFrame(fl)
rows = []
for (mo, me), g in fl.groupby(["model", "method"], sort=False) if len(fl) else []:
    sm = inference.seed_summary((g["order"] - g["labels"]).to_numpy(), 0.0)
    rows.append({"model": mo, "method": plots.METHOD_LABEL[me], "seeds": len(g),
                 "flip rate, order changed": g["order"].mean(), "flip rate, labels changed": g["labels"].mean(),
                 "order minus labels [95% seed CI]": f"{sm['difference']:+.3f} {inference.interval_text(sm)}"})
tok = pd.DataFrame(rows)
glue("gen_ex_token_table", plots.table(tok), display=False)
glue("gen_ex_token_answer", Markdown(
    (f"Reordering the options flips {tok['flip rate, order changed'].min():.2f} to {tok['flip rate, order changed'].max():.2f} "
     f"of the answers across models and methods, relabelling them {tok['flip rate, labels changed'].min():.2f} to "
     f"{tok['flip rate, labels changed'].max():.2f}. Where the order flips more, the model answers partly by position: "
     "a fairness benchmark with one fixed option order measures that position preference as if it were a gender "
     "preference. Intervals exist only where a method has 2 or more seeds (the base model was probed on one).")
    if len(tok) else "This profile has no probe records."), display=False)

# %% [markdown]
# ````{exercise}
# :label: gen-ex-token
#
# **Order or symbol?** Probe only the multiple-choice family ({glue:md}`gen_ex_token_prompts`):
#
# ```
# .venv/bin/lorafair notebook generation_fairness -p probe_prompts "[MC1, MC1-inverted, MC1-inverted-symbol, MC1-numeric, MC1-special]"
# ```
#
# Cost on two cores: {glue:md}`gen_ex_token_cost`. Which change moves the answers more, the order
# of the options or their labels? What does that mean for a fairness benchmark that uses one fixed
# prompt?
# ````
#
# ````{solution} gen-ex-token
# :class: dropdown
#
# The chapter's own probe records include every variant of the family (and of the yes/no family),
# so the answer can be read from them:
#
# {glue:md}`gen_ex_token_answer`
#
# ```{glue:} gen_ex_token_table
# ```
# ````
