"""The study's answer, read from the run records: paired LoRA-minus-full (and minus head-only or
the base model) differences per case, with the training run (seed) as the unit of inference.

A *case* is one (experiment, dataset and its settings, model, comparison, metric). Each case
yields one paired difference per seed (``per_seed``): the two methods on the same seed's split and
test examples (membership inference: the targets of one seed and their shadows; the base model,
which is not trained, is the same on every seed). ``lorafair.inference`` turns the per-seed
differences into a seed-level interval, p-value, equivalence test and minimum detectable effect,
adjusts for multiplicity and gives the five-way verdict. "Better"/"worse" is from the point of view
of fairness and privacy: for accuracy and worst-group accuracy higher is better; for attack AUC
higher is worse (LoRA leaks more)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd

from . import experiments as ex
from .assets import REPO_ROOT
from . import generation as gen
from . import inference
from . import methods as methods_mod
from . import mia
from .metrics import MIN_GROUP_N, exact_interval, get_metric, learned_gate
from .plots import LABELS, label, relabel  # noqa: F401 (reader-facing names, re-exported)
from .models import get_spec
from .runs import RunStore


def _case(experiment, dataset, settings, model, attribute, comparison, metric_key, per_seed, label=None, **extra):
    return {"experiment": experiment, "dataset": dataset, "settings": settings, "model": model,
            "attribute": attribute, "comparison": comparison, "metric_key": metric_key,
            "metric": label or get_metric(metric_key).label, "per_seed": dict(sorted(per_seed.items())), **extra}


def is_main_run(c: dict, profile: str) -> bool:
    """A classification chapter's main run: the profile's, on the standard or unit split (no
    control), and for LoRA the model's default rank on every layer and the default modules."""
    if c.get("profile") != profile or (c.get("split_design") or {}).get("kind") not in (None, "by_unit", "sized"):
        return False
    return c["method"] != "lora" or (c.get("layer_fraction", 1) == 1 and c.get("rank") == get_spec(c["model"]).default_rank
                                     and not c.get("target_modules") and c.get("placement") in (None, "front"))


def classification_cases(store: RunStore, experiment: str, profile: str) -> pd.DataFrame:
    """Accuracy, worst-group accuracy, accuracy gap, ECE (raw and temperature-scaled) and the
    calibration gap (temperature-scaled and raw), LoRA minus full and minus head-only, per seed; the worst groups of each method and the smallest worst-group test count over seeds go with
    the worst-group and gap cases."""
    groups: dict = {}
    for r in store.records(experiment):
        c = r.config
        if not is_main_run(c, profile):
            continue
        key = (c["dataset"], json.dumps(c["dataset_kwargs"], sort_keys=True), c["model"])
        groups.setdefault(key, []).append(r)
    rows = []
    for (dataset, kw, model), recs in sorted(groups.items()):
        attr = next(iter(recs[0].metrics["attributes"]))
        everything = ex.predictions(recs)
        preds, failed = gated_predictions(recs)
        params = {m: int(np.mean([r.meta["adaptation"]["trainable_params"] for r in recs if r.config["method"] == m]))
                  for m in set(preds["method"])}
        for a, other in comparison_pairs(set(everything["method"])):
            d_all = ex.per_seed_differences(everything, model, attr, a, other)
            if d_all.empty:
                continue
            # the seeds on which both runs passed the gate; none: the case is kept, with no seeds
            d = ex.per_seed_differences(preds, model, attr, a, other) if len(preds) else d_all.iloc[:0]
            d = d_all.iloc[:0] if d.empty else d
            shown = d if len(d) else d_all  # what describes the case (test sizes, worst groups)
            comp = comparison_label(a, other)
            common = dict(test_n=int(shown["n"].min()), method_a=a, method_b=other, trainable_a=params.get(a),
                          trainable_b=params.get(other), gate_dropped=dropped_note(failed, (a, other)))
            rows.append(_case(experiment, dataset, kw, model, attr, comp, "accuracy",
                              dict(zip(d["seed"], d["accuracy"])), **common))
            if "worst_group_accuracy" in d_all:
                worst = sorted(set(shown["worst_group_a"]) | set(shown["worst_group_b"]))
                for key in ("worst_group_accuracy", "accuracy_gap"):
                    rows.append(_case(experiment, dataset, kw, model, attr, comp, key,
                                      dict(zip(d["seed"], d[key])) if key in d else {},
                                      worst_groups=", ".join(worst), worst_n=int(shown["worst_n"].min()), **common))
            for key in ("ece", "ece_ts"):
                rows.append(_case(experiment, dataset, kw, model, attr, comp, key, dict(zip(d["seed"], d[key])),
                                  **common))
            if "calibration_gap" in d_all:
                for key in ("calibration_gap", "calibration_gap_raw"):
                    rows.append(_case(experiment, dataset, kw, model, attr, comp, key,
                                      dict(zip(d["seed"], d[key])) if key in d else {}, **common))
    return pd.DataFrame(rows)


#: the learning-rate pilot folder of each classification experiment
LR_PILOTS = {"vision_classification": "pilot_lr_vision", "llm_classification": "pilot_lr_llm"}


def lr_neighbour_cases(store: RunStore, experiment: str, profile: str) -> pd.DataFrame:
    """LoRA minus full fine-tuning with one of the two at a neighbouring learning rate (a run of the
    experiment's learning-rate pilot, ``LR_PILOTS``) and the other at its chosen rate (the main run of
    the same seed), on the same test examples: one case per (model, moved method, rate, metric), named
    in ``lr_neighbour`` ("LoRA at lr 0.003"). Both runs must pass the gate. These cases are never
    counted; ``lr_robustness`` reads them for whether a verdict depends on the learning rate
    (amendment 6 of book/design.md). Pilot runs whose split design or data differ from the main
    runs' are left out (they do not share test examples)."""
    main: dict = {}
    for r in store.records(experiment):
        c = r.config
        if is_main_run(c, profile) and c["method"] in ("lora", "full"):
            main[(c["dataset"], json.dumps(c["dataset_kwargs"], sort_keys=True), c["model"], c["method"], c["seed"])] = r
    if not main or experiment not in LR_PILOTS:
        return pd.DataFrame()
    moved: dict = {}
    for r in store.records(LR_PILOTS[experiment]):
        c = r.config
        key = (c["dataset"], json.dumps(c["dataset_kwargs"], sort_keys=True), c["model"], c["method"], c["seed"])
        ref = main.get(key)
        if c.get("profile") != profile or c["method"] not in ("lora", "full") or ref is None \
                or c.get("split_design") != ref.config.get("split_design") or c["lr"] == ref.config["lr"]:
            continue
        moved.setdefault(key[:4] + (c["lr"],), []).append(r)
    rows = []
    for (dataset, kw, model, method, lr), recs in sorted(moved.items()):
        other = "full" if method == "lora" else "lora"
        refs = [main[(dataset, kw, model, other, r.config["seed"])] for r in recs
                if (dataset, kw, model, other, r.config["seed"]) in main]
        attr = next(iter(recs[0].metrics["attributes"]))
        preds, failed = gated_predictions(recs + refs)
        d = ex.per_seed_differences(preds, model, attr, "lora", "full") if len(preds) else pd.DataFrame()
        if d.empty:
            d = pd.DataFrame({"seed": []})
        name = f"{'LoRA' if method == 'lora' else 'full'} at lr {lr:g}"
        common = dict(method_a="lora", method_b="full", lr_neighbour=name, gate_dropped=dropped_note(failed, ("lora", "full")),
                      test_n=int(d["n"].min()) if len(d) else None)
        for key in ex.PAIRED_METRICS:
            if key in d or key in ("accuracy", "ece", "ece_ts"):
                rows.append(_case(experiment, dataset, kw, model, attr, "LoRA - full",
                                  key, dict(zip(d["seed"], d[key])) if key in d else {}, **common))
    return pd.DataFrame(rows)


def lr_robustness(cases: pd.DataFrame) -> pd.Series:
    """For every LoRA-vs-full case with a verdict, whether it holds at the neighbouring learning rates
    (``lr_neighbour_cases`` of the same experiment, data, model and metric): it *depends on the
    learning rate* if at a neighbour the mean difference has the opposite sign to a better / worse
    verdict, or lies outside the margin of an equivalent one (amendment 6 of book/design.md)."""
    nb = cases[cases["lr_neighbour"].fillna("") != ""] if "lr_neighbour" in cases else cases.iloc[:0]
    out = pd.Series("", index=cases.index, dtype=object)
    for i, c in cases.iterrows():
        if (isinstance(c.get("lr_neighbour"), str) and c["lr_neighbour"]) or c["comparison"] != "LoRA - full" \
                or c["verdict"] not in ("LoRA better", "LoRA worse", "equivalent") or c["experiment"] not in LR_PILOTS:
            continue
        if nb.empty:
            out[i] = "no neighbouring-rate runs"
            continue
        same = nb[(nb["experiment"] == c["experiment"]) & (nb["dataset"] == c["dataset"]) & (nb["settings"] == c["settings"])
                  & (nb["model"] == c["model"]) & (nb["metric_key"] == c["metric_key"]) & (nb["seeds"] > 0)]
        if same.empty:
            out[i] = "no neighbouring-rate runs"
            continue
        if c["verdict"] == "equivalent":
            off = same[same["difference"].abs() > c["margin"]]
        else:
            off = same[np.sign(same["difference"]) != np.sign(c["difference"])]
        out[i] = ("holds at every neighbouring rate" if off.empty else "depends on the learning rate: " + "; ".join(
            f"{r['lr_neighbour']} gives {r['difference']:+.3f} ({r['seeds']} seeds)" for _, r in off.iterrows())) \
            + f" ({len(same)} neighbours)"
    return out


#: the study's own methods; every other method of the registry is compared with full fine-tuning and LoRA
STUDY_METHODS = ("lora", "full", "head", "base")


def comparison_pairs(present, references=("full", "head")) -> list[tuple[str, str]]:
    """(method, reference) pairs among the methods ``present``: LoRA minus each of ``references``,
    then every other method (registry order) minus full fine-tuning and minus LoRA."""
    pairs = [("lora", o) for o in references if {"lora", o} <= set(present)]
    others = [m for m in methods_mod.order(present) if m not in STUDY_METHODS]
    return pairs + [(m, o) for m in others for o in ("full", "lora") if o in present]


def comparison_label(a: str, b: str) -> str:
    """"LoRA - full", "DoRA - LoRA", ...: the study's methods by their short names, others by label."""
    def short(m):
        return {"lora": "LoRA", "full": "full", "head": "head", "base": "base"}.get(m) or methods_mod.label(m)
    return f"{short(a)} - {short(b)}"


def is_beyond(cases: pd.DataFrame) -> pd.Series:
    """The cases of the other methods (the "beyond LoRA" view), as opposed to LoRA's own (and full
    fine-tuning against the base model, the reference a LoRA-minus-base shift is read against)."""
    if "method_a" not in cases:
        return pd.Series(False, index=cases.index)
    return ~cases["method_a"].fillna("lora").isin(["lora", "full"])


def full_vs_base(cases: pd.DataFrame) -> pd.Series:
    """For every LoRA-minus-base case, what full fine-tuning does against the same base model on the
    same measure ("full - base" of the same experiment, data, settings and model): LoRA is credited
    only with a shift that full fine-tuning does not also make. "" where there is no such case."""
    out = pd.Series("", index=cases.index, dtype=object)
    ref = cases[cases["comparison"] == "full - base"]
    for i, c in cases[cases["comparison"] == "LoRA - base"].iterrows():
        same = ref[(ref["experiment"] == c["experiment"]) & (ref["dataset"] == c["dataset"])
                   & (ref["settings"] == c["settings"]) & (ref["model"] == c["model"]) & (ref["metric_key"] == c["metric_key"])]
        if same.empty or not same.iloc[0]["seeds"]:
            continue
        f = same.iloc[0]
        k = int(f["seeds"])
        head = f"full - base {f['difference']:+.3f}" + ("" if pd.isna(f["lo"]) else f" [{f['lo']:+.3f}, {f['hi']:+.3f}]") \
            + f", {k} seed{'s' if k != 1 else ''}: "
        if pd.isna(f["lo"]):
            out[i] = head + "too few seeds to say whether full fine-tuning makes the same shift"
            continue
        full_moves = f["lo"] > 0 or f["hi"] < 0
        lora_moves = not pd.isna(c.get("lo")) and (c["lo"] > 0 or c["hi"] < 0)
        if full_moves and lora_moves and np.sign(f["difference"]) == np.sign(c["difference"]):
            out[i] = head + "full fine-tuning makes the same shift, so it is not LoRA's"
        elif full_moves and not lora_moves:
            out[i] = head + "full fine-tuning shifts it, LoRA's interval includes zero"
        else:
            out[i] = head + "full fine-tuning does not show the same shift"
    return out


def mia_cases(store: RunStore, profile: str) -> pd.DataFrame:
    """LiRA and loss-attack AUC, LoRA target minus full target of the same seed, each attacked with
    shadows of its own method (LoRA's if the method has fewer than two), per seed; and the same
    against the utility-matched full target where one was trained."""
    targets, shadows = {}, {}
    for r in store.records("membership_inference"):
        c = r.config
        design = c.get("split_design") or {}
        if c.get("profile") != profile or not design:
            continue
        key = (c["dataset"], json.dumps(c["dataset_kwargs"], sort_keys=True), c["model"] if design["kind"] == "mia_target"
               else None, design["seed"])
        if design["kind"] == "mia_target":
            # main targets keep their best validation epoch; a target kept at its last epoch is a variant
            # (the positive control or the utility-matched target), keyed by its method and epochs
            name = c["method"] if c.get("select") == "best_val" else (c["method"], c["epochs"])
            targets.setdefault(key, {})[name] = r
        else:
            shadows.setdefault((key[0], key[1], design["seed"]), []).append(r)
    per_seed: dict = {}
    meta: dict = {}  # the compared methods of each case
    dropped: dict = {}  # per case: {method: [seeds whose target failed the per-run gate]}
    for (dataset, kw, model, seed), t in sorted(targets.items()):
        sh = [s for s in shadows.get((dataset, kw, seed), []) if s.config["model"] == model]

        def shadows_for(method, epochs, sh=sh):  # shadows of the target's method and epochs, else LoRA's
            own = [s for s in sh if s.config["method"] == method and s.config["epochs"] == epochs]
            lora = [s for s in sh if s.config["method"] == "lora" and s.config["epochs"] == t["lora"].config["epochs"]]
            return own if len(own) >= 2 else lora
        if not {"lora", "full"} <= set(t) or len(shadows_for("lora", t["lora"].config["epochs"])) < 2:
            continue
        def own(name):
            return t[name], shadows_for(name, t[name].config["epochs"])
        pairs = [("LoRA - full", own("lora"), own("full"))]
        # the utility-matched comparison: a full target trained for fewer epochs, with its own shadows
        pairs += [("LoRA - full (utility-matched)", own("lora"), (r, shadows_for("full", name[1])))
                  for name, r in t.items()
                  if isinstance(name, tuple) and name[0] == "full" and len(shadows_for("full", name[1])) >= 2
                  and shadows_for("full", name[1])[0].config["method"] == "full"]
        # other methods' targets, each with shadows of its own method, against full fine-tuning and LoRA
        pairs += [(comparison_label(m, o), own(m), own(o)) for m, o in comparison_pairs({n for n in t if isinstance(n, str)}, ())
                  if m != "lora" and len(own(m)[1]) >= 2 and own(m)[1][0].config["method"] == m]
        for comparison, (a, a_sh), (b, b_sh) in pairs:
            ash, bsh = ([s.predictions() for s in x] for x in (a_sh, b_sh))
            meta[(dataset, kw, model, comparison)] = (a.config["method"], b.config["method"],
                                                      a.meta["adaptation"]["trainable_params"],
                                                      b.meta["adaptation"]["trainable_params"])
            failed = [rec.config["method"] for rec in (a, b) if learned_gate(rec.predictions())["passed"] is False]
            for key in ("lira_auc", "loss_auc"):  # the case exists even when no seed passes the gate
                per_seed.setdefault((dataset, kw, model, comparison, key), {})
            for m in failed:  # a seed whose target did not learn (on its validation split) is left out
                dropped.setdefault((dataset, kw, model, comparison), {}).setdefault(m, []).append(int(seed))
            if failed:
                continue
            for key, fn in (("lira_auc", lambda p, s: mia.lira_scores(p, s)), ("loss_auc", lambda p, s: mia.loss_scores(p))):
                d = mia.auc_difference(fn(a.predictions(), ash), fn(b.predictions(), bsh))
                per_seed.setdefault((dataset, kw, model, comparison, key), {})[int(seed)] = d
    return pd.DataFrame([_case("membership_inference", dataset, kw, model, "(all examples)", comparison, key, d,
                               gate_dropped=dropped_note(dropped.get((dataset, kw, model, comparison), {}),
                                                         meta[(dataset, kw, model, comparison)][:2]),
                               **dict(zip(("method_a", "method_b", "trainable_a", "trainable_b"),
                                          meta[(dataset, kw, model, comparison)])))
                         for (dataset, kw, model, comparison, key), d in sorted(per_seed.items())])


def gated_predictions(recs) -> tuple[pd.DataFrame, dict]:
    """The prediction rows of the runs that pass the per-run gate (``metrics.learned_gate``, read on
    each run's own validation split), and {method: [seeds whose run failed it]}."""
    preds = ex.predictions(recs)
    failed: dict = {}
    for (method, seed), g in preds.groupby(["method", "seed"], sort=True):
        if learned_gate(g)["passed"] is False:
            failed.setdefault(method, []).append(int(seed))
    drop = [(m, s) for m, seeds in failed.items() for s in seeds]
    keep = ~pd.MultiIndex.from_frame(preds[["method", "seed"]]).isin(drop) if drop else np.ones(len(preds), bool)
    return preds[keep].reset_index(drop=True), failed


def lr_pilot_choice(recs, method: str) -> tuple[pd.DataFrame, float | None]:
    """The registered learning-rate rule of the powered task (amendment 7 of book/design.md): per
    learning rate of ``method``'s pilot runs, the seeds tried, how many pass the per-run gate on their
    validation split, and their mean validation accuracy at the selected epoch; the rate chosen is
    the one whose runs pass the gate on the most seeds, ties broken by the higher mean validation
    accuracy. Test predictions play no part. Returns the table and the chosen rate (None: no runs)."""
    rows = []
    by_lr: dict = {}
    for r in recs:
        if r.config["method"] == method:
            by_lr.setdefault(float(r.config["lr"]), []).append(r)
    for lr, rs in sorted(by_lr.items()):
        passed = [learned_gate(r.predictions())["passed"] is not False for r in rs]
        val = [float(r.meta["history"]["selected_val_accuracy"]) for r in rs]
        rows.append({"method": method, "lr": lr, "seeds": ", ".join(str(r.config["seed"]) for r in rs),
                     "passed the gate": int(sum(passed)), "runs": len(rs), "mean val accuracy": float(np.mean(val))})
    t = pd.DataFrame(rows)
    if t.empty:
        return t, None
    best = t.sort_values(["passed the gate", "mean val accuracy"], ascending=False).iloc[0]
    return t.assign(chosen=t["lr"] == best["lr"]), float(best["lr"])


def learned_runs(recs) -> list:
    """The runs that pass the per-run gate (or have no validation split to read it on). A planted
    control's run (a ``split_design`` naming its ``attribute`` and ``group``) is gated on its
    validation examples *outside* the planted group (amendment 5 of book/design.md): the plant moves
    that group's predictions away from its unchanged validation labels, so a gate that read them
    would drop runs for the very effect they plant."""
    def gated_rows(r):
        d, p = r.config.get("split_design") or {}, r.predictions()
        if d.get("attribute") and d.get("group") is not None:
            return p[p[f"group_{d['attribute']}"].astype(str) != str(d["group"])]
        return p
    return [r for r in recs if learned_gate(gated_rows(r))["passed"] is not False]


def dropped_note(failed: dict, methods) -> str:
    """"lora: seeds 21, 42" for the compared methods whose runs failed the gate ("" if none)."""
    return "; ".join(f"{m}: seed{'s' if len(failed[m]) > 1 else ''} {', '.join(map(str, sorted(failed[m])))}"
                     for m in methods if failed.get(m))


def gate_table(store: RunStore, profile: str) -> pd.DataFrame:
    """Every main classification run and membership-inference target through the per-run gate: one
    row per run (experiment, dataset, model, method, seed, validation accuracy, majority rate, classes
    predicted, passed, reason)."""
    rows = []
    for exp in ("vision_classification", "llm_classification", "membership_inference"):
        for r in store.records(exp):
            c = r.config
            design = c.get("split_design") or {}
            if exp == "membership_inference":
                if c.get("profile") != profile or design.get("kind") != "mia_target":
                    continue
                role = "target" if c.get("select") == "best_val" else f"target, {c['epochs']} epochs, last epoch"
                seed = design["seed"]
            elif is_main_run(c, profile):
                role, seed = "main", c["seed"]
            else:
                continue
            g = learned_gate(r.predictions())
            rows.append({"experiment": exp, "dataset": c["dataset"], "settings": json.dumps(c["dataset_kwargs"], sort_keys=True),
                         "model": c["model"], "method": c["method"], "role": role, "seed": int(seed),
                         "val_n": g["val_n"], "val_accuracy": g["val_accuracy"], "majority": g["majority"],
                         "classes_predicted": g["classes_predicted"], "passed": g["passed"], "reason": g["reason"]})
    return pd.DataFrame(rows)


def gate_failure_rates(gates: pd.DataFrame) -> pd.DataFrame:
    """Runs, failures and the failure rate per experiment, dataset, model, method and role."""
    if gates.empty:
        return pd.DataFrame()
    keys = ["experiment", "dataset", "settings", "model", "method", "role"]
    out = gates.groupby(keys, sort=True).agg(runs=("passed", "size"), failed=("passed", lambda s: int((s == False).sum())),  # noqa: E712
                                             failed_seeds=("seed", lambda s: ""))
    for k, g in gates.groupby(keys, sort=True):
        out.loc[k, "failed_seeds"] = ", ".join(str(s) for s in sorted(g.loc[g["passed"] == False, "seed"]))  # noqa: E712
    out["failure_rate"] = out["failed"] / out["runs"]
    return out.reset_index()


def small_group_rows(store: RunStore, profile: str) -> pd.DataFrame:
    """The groups too small to carry a claim (fewer than ``metrics.MIN_GROUP_N`` test examples in some
    seed), per classification task, model and method: the smallest and total test count over seeds and
    the test accuracy pooled over the seeds that passed the gate, with its exact (Clopper-Pearson)
    interval. Shown, never silently dropped."""
    groups: dict = {}
    for exp in ("vision_classification", "llm_classification"):
        for r in store.records(exp):
            if is_main_run(r.config, profile):
                c = r.config
                groups.setdefault((exp, c["dataset"], json.dumps(c["dataset_kwargs"], sort_keys=True), c["model"]), []).append(r)
    rows = []
    for (exp, dataset, kw, model), recs in sorted(groups.items()):
        preds, _ = gated_predictions(recs)
        for attr in recs[0].metrics["attributes"]:
            t = preds[preds["split"] == "test"]
            col = t[f"group_{attr}"].astype(str)
            n_by = pd.crosstab(col, [t["method"], t["seed"]]).min(axis=1)
            for group in sorted(n_by[n_by < MIN_GROUP_N].index):
                for method, g in t[col == group].groupby("method", sort=True):
                    k, n = int((g["label"] == g["pred"]).sum()), len(g)
                    lo, hi = exact_interval(k, n)
                    rows.append({"experiment": exp, "dataset": dataset, "settings": kw, "model": model,
                                 "attribute": attr, "group": group, "method": method,
                                 "seeds": int(g["seed"].nunique()), "smallest_n": int(n_by[group]),
                                 "test_n": n, "accuracy": k / n, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def generation_cases(store: RunStore, profile: str) -> pd.DataFrame:
    """Pronoun task: LoRA minus full (and minus base) in the stereotype excess (the pro rate minus the
    anti rate: writing any gendered pronoun raises both, so the raw pro rate would call every model
    that leaves *they* behind "more stereotyped"), per training set and test set, each seed over its
    own test sources; the base model is compared only on the forced choice it produces. Probe: LoRA
    minus full (and minus base) in the token-bias flip rate, each seed over its texts (each text's
    mean over variants). A base model is run once, so a comparison with it has the seeds the base
    run's test set shares with the fine-tuned runs."""
    recs = [r for r in store.records("generation_fairness") if r.config.get("profile") == profile]
    rows = []  # only the per-seed differences are read here (n_boot=0: no example-level bootstrap)
    pron = [r for r in recs if r.config["part"] == "pronoun"]
    by_case: dict = {}
    for r in pron:
        by_case.setdefault((r.config["task"], json.dumps(r.config["task_kwargs"], sort_keys=True), r.config["model"]),
                           []).append(r)
    for (task, kw, model), rs in sorted(by_case.items()):
        preds = gen.pronoun_predictions(rs)
        params = {r.config["method"]: r.meta.get("adaptation", {}).get("trainable_params") for r in rs}
        for test_set in sorted(preds["test_set"].unique()):
            sub = preds[preds["test_set"] == test_set]
            # LoRA, then every other method, against full fine-tuning (and the base model); the others also
            # against LoRA; each on the training sets it was fine-tuned on
            for a, _ in [("lora", None)] + [p for p in comparison_pairs(set(sub["method"]), ()) if p[1] == "lora"]:
                for ts in sorted(set(sub.loc[sub["method"] == a, "train_set"]) - {"-"}):
                    refs = [("full", {"method": "full", "train_set": ts})]
                    if a != "lora":
                        refs.append(("lora", {"method": "lora", "train_set": ts}))
                    readings = [(o, sel, "stereotype_excess", gen.STEREOTYPE_EXCESS) for o, sel in refs]
                    if "loglik_pro" in sub:
                        readings += [(o, sel, "pro_preference", "pro_preference")
                                     for o, sel in refs + [("base", {"method": "base"})]]
                    for other, sel, metric_key, score in readings:
                        d = gen.paired_rate_difference(sub, {"method": a, "train_set": ts}, sel, score, n_boot=0)
                        if d is None:
                            continue
                        settings = json.dumps({**json.loads(kw), "train_set": ts}, sort_keys=True)  # names the refs
                        rows.append(_case("generation_fairness", f"{task} {test_set}", settings, model, "predisposition",
                                          comparison_label(a, other), metric_key, d["per_seed"],
                                          label=f"{get_metric(metric_key).label} ({ts} refs)", method_a=a,
                                          method_b=other, trainable_a=params.get(a), trainable_b=params.get(other)))
            # full fine-tuning against the base model too: a shift LoRA shares with full is not LoRA's to claim
            if "loglik_pro" in sub and {"full", "base"} <= set(sub["method"]):
                for ts in sorted(set(sub.loc[sub["method"] == "full", "train_set"]) - {"-"}):
                    d = gen.paired_rate_difference(sub, {"method": "full", "train_set": ts}, {"method": "base"},
                                                   "pro_preference", n_boot=0)
                    if d is not None:
                        settings = json.dumps({**json.loads(kw), "train_set": ts}, sort_keys=True)
                        rows.append(_case("generation_fairness", f"{task} {test_set}", settings, model, "predisposition",
                                          "full - base", "pro_preference", d["per_seed"],
                                          label=f"{get_metric('pro_preference').label} ({ts} refs)", method_a="full",
                                          method_b="base", trainable_a=params.get("full"), trainable_b=params.get("base")))
    probes: dict = {}
    for r in recs:
        if r.config["part"] == "token_bias" and not r.config.get("plant"):  # planted runs are the control
            key = (r.config["corpus"], json.dumps(r.config["corpus_kwargs"], sort_keys=True), r.config["model"])
            probes.setdefault(key, {}).setdefault(r.config["method"], []).append(r)
    for (corpus, kw, model), by_method in sorted(probes.items()):
        if "lora" not in by_method:
            continue
        rows_of = {m: pd.concat([r.predictions().assign(seed=r.config["seed"]) for r in rs])
                   for m, rs in by_method.items()}
        for a, other in (("lora", "full"), ("lora", "base"), ("full", "base")):
            d = gen.flip_rate_difference(rows_of[a], rows_of[other], n_boot=0) if {a, other} <= set(rows_of) else None
            if d is None:
                continue
            rows.append(_case("generation_fairness", corpus, kw, model, "(prompt variants)", comparison_label(a, other),
                              "flip_rate", d["per_seed"], method_a=a, method_b=other))
    return pd.DataFrame(rows)


CONTROL_EXPERIMENTS = ("vision_classification", "llm_classification", "membership_inference", "generation_fairness")


def control_size(effect: float, margin: float) -> str:
    """How big a planted effect came out against the margin of the quantity it is planted on: a
    control detects what a study claims to rule out only if it is about the margin's size. *gross*
    at twice the margin or more, *at the margin* from half to twice it, *below the margin* under half."""
    if not np.isfinite(effect):
        return "unknown"
    ratio = abs(effect) / margin
    word = "gross" if ratio >= 2 else "at the margin" if ratio >= 0.5 else "below the margin"
    return f"{word} ({ratio:.1f}x)"


def leave_one_out_detection(per_seed: dict, higher: bool) -> str:
    """How robust a control's detection is to its seeds: in how many of the subsets that leave one
    seed out it is still detected (``inference.planted_effect``), as "j/k"; "" with fewer than 3
    seeds (a subset needs 2 for an interval)."""
    if len(per_seed) < 3:
        return ""
    hits = sum(inference.planted_effect({s: v for s, v in per_seed.items() if s != out}, higher)["detected"]
               for out in per_seed)
    return f"{hits}/{len(per_seed)}"


def _row(exp, scope, control, model, method, per_seed: dict, n, higher: bool, metric_key: str, kind="", planted=""):
    """One control row, read at the seed level (``inference.planted_effect``); ``planted``: what was
    planted, and how much; ``metric_key``: the quantity whose margin (``inference.MARGINS``) the
    effect's size is read against (``control_size``)."""
    e = inference.planted_effect(per_seed, higher)
    m = inference.margin(metric_key)
    return {"experiment": exp, "scope": scope, "kind": kind or control, "control": control, "planted": planted,
            "model": model,
            "method": method, "effect": e["difference"], "lo": e["lo"], "hi": e["hi"],
            "per seed": ", ".join(f"{v:+.3f}" for v in e["per_seed"].values()), "n": n, "seeds": e["seeds"],
            "margin": m, "size": control_size(e["difference"], m),
            "detected leaving one seed out": leave_one_out_detection(per_seed, higher),
            "detected": "detected" if e["detected"] else "NOT detected"}


def mia_controls(store: RunStore, profile: str) -> list[dict]:
    """The over-fitted target of each task and seed against the main target of its method: the
    loss-attack AUC difference on the same members and non-members, per seed (must be above zero)."""
    main, over = {}, {}
    for r in store.records("membership_inference"):
        c, design = r.config, r.config.get("split_design") or {}
        if c.get("profile") != profile or design.get("kind") != "mia_target":
            continue
        key = (c["dataset"], json.dumps(c["dataset_kwargs"], sort_keys=True), c["model"], design["seed"], c["method"])
        if c.get("select") == "best_val":
            main[key] = r
        else:
            over.setdefault(key, []).append(r)
    per_seed: dict = {}
    n: dict = {}  # per control: attacked examples over the seeds counted
    for key, vs in sorted(over.items()):
        if key not in main:
            continue
        for v in vs:
            if v.config["epochs"] <= main[key].config["epochs"]:
                continue  # a shorter run is the utility-matched target, not the control
            case = (key[0], key[1], key[2], key[4], v.config["epochs"], main[key].config["epochs"])
            diffs = per_seed.setdefault(case, {})
            # like with like (amendment 5): both targets of a seed learned the task (the per-run gate)
            if len(learned_runs([v, main[key]])) < 2:
                continue
            diffs[int(key[3])] = mia.auc_difference(mia.loss_scores(v.predictions()), mia.loss_scores(main[key].predictions()))
            n[case] = n.get(case, 0) + len(mia.membership(v.predictions()))
    return [_row("membership_inference", f"membership_inference:{dataset}",
                 f"{dataset}: target trained {e_over} epochs without selection vs {e_main} with: loss-attack AUC",
                 model, method, d, n.get((dataset, kw, model, method, e_over, e_main), 0), higher=True, metric_key="loss_auc",
                 kind=f"over-fitted target ({dataset}, {e_over} epochs)",
                 planted=f"{e_over} epochs, last epoch kept, vs {e_main} with selection")
            for (dataset, kw, model, method, e_over, e_main), d in sorted(per_seed.items())]


def generation_controls(store: RunStore, profile: str) -> list[dict]:
    """Pronoun task: the stereotype excess after pro-stereotypical minus after balanced references
    (same method, seeds and test sources; must be above zero). Probe: the flip rate over the
    order-only variants after fine-tuning with planted first-option answers minus without (same
    method and seeds; must be above zero). Both per seed."""
    recs = [r for r in store.records("generation_fairness") if r.config.get("profile") == profile]
    rows = []
    pron = [r for r in recs if r.config["part"] == "pronoun"]
    for (task, model), rs in sorted(_group(pron, lambda c: (c["task"], c["model"])).items()):
        preds = gen.pronoun_predictions(rs)
        for method in sorted(set(preds["method"]) - {"base"}):
            d = gen.paired_rate_difference(preds, {"method": method, "train_set": "pro"},
                                           {"method": method, "train_set": "balanced"}, gen.STEREOTYPE_EXCESS, n_boot=0)
            if d is not None:
                rows.append(_row("generation_fairness", "generation_fairness:pronoun",
                                 f"{task}: pro-stereotypical minus balanced references: stereotype excess", model, method,
                                 d["per_seed"], d["n"], higher=True, metric_key="stereotype_excess",
                                 planted="all references pro-stereotypical"))
    probe = [r for r in recs if r.config["part"] == "token_bias"]
    for (corpus, model, method), rs in sorted(_group(probe, lambda c: (c["corpus"], c["model"], c["method"])).items()):
        # the planted runs against their format-matched reference (amendment 3 of book/design.md): the
        # same planted questions answered at random listed positions; read on the first-option rate
        planted = [r for r in rs if r.config.get("plant") and "plant_answers" not in r.config]
        reference = [r for r in rs if r.config.get("plant_answers") == "random"]
        if not planted or not reference:
            continue
        rows_of = [pd.concat([r.predictions().assign(seed=r.config["seed"]) for r in x]) for x in (planted, reference)]
        d = gen.first_option_difference(*rows_of, n_boot=0)
        if d is not None:
            rows.append(_row("generation_fairness", "generation_fairness:token_bias",
                             f"{corpus}: {planted[0].config['plant']} planted first-option answers minus the same questions "
                             "answered at random positions: first-option rate", model, method, d["per_seed"], d["n"],
                             higher=True, metric_key="flip_rate",
                             planted=f"{planted[0].config['plant']} first-option answers"))
    return rows


def _group(recs, key) -> dict:
    out: dict = {}
    for r in recs:
        out.setdefault(key(r.config), []).append(r)
    return out


def controls(store: RunStore, profile: str, n_boot: int = 200) -> pd.DataFrame:
    """Every experiment's positive controls: the planted effect per seed, its seed-level interval and
    whether it was detected (``inference.planted_effect``); experiments without a control in the
    records get a row that says so. ``scope``: the cases a control vouches for (``case_scope``).
    ``n_boot``: only for the example-level intervals ``experiments.control_effect`` also computes."""
    rows = []
    for exp in CONTROL_EXPERIMENTS:
        recs = [r for r in store.records(exp) if r.config.get("profile") == profile]
        if exp == "membership_inference":
            found = mia_controls(store, profile)
        elif exp == "generation_fairness":
            found = generation_controls(store, profile)
        else:
            found = []
        if found:
            rows += found
            continue
        ctrl = [r for r in recs if (r.config.get("split_design") or {}).get("kind") in ("downsample", "relabel")]
        if not ctrl:
            rows.append({"experiment": exp, "scope": exp, "kind": "", "control": "none in the records", "model": "",
                         "method": "", "effect": float("nan"), "lo": float("nan"), "hi": float("nan"),
                         "per seed": "", "n": 0, "seeds": 0, "detected": "no control"})
            continue
        by_case: dict = {}
        for r in ctrl:
            c = r.config
            key = (c["dataset"], json.dumps(c["dataset_kwargs"], sort_keys=True), c["model"], c["method"],
                   json.dumps(c["split_design"], sort_keys=True))
            by_case.setdefault(key, []).append(r)
        for (dataset, kw, model, method, design), cs in sorted(by_case.items()):
            d = json.loads(design)
            refs = [r for r in recs if r.config.get("split_design") == d.get("base") and r.config["dataset"] == dataset
                    and json.dumps(r.config["dataset_kwargs"], sort_keys=True) == kw and r.config["model"] == model
                    and r.config["method"] == method and r.config.get("layer_fraction", 1) == 1
                    and r.config.get("rank") == cs[0].config.get("rank")]
            # like with like: a control and its reference count only where both learned (the per-run gate;
            # a planted run's read outside its planted group, amendment 5)
            refs, cs = learned_runs(refs), learned_runs(cs)
            eff = ex.control_effect(refs, cs, d["attribute"], d["group"], n_boot) if refs and cs else None
            if eff is None:
                continue
            what = (f"{d['fraction']:.0%} of its other-class training examples relabelled {d['to_label']}"
                    if d["kind"] == "relabel" else f"thinned to {d['keep']:.0%} of its training examples")
            rows.append(_row(exp, f"{exp}:{dataset}", f"{d['attribute']} group '{d['group']}' {what}: its test accuracy", model,
                             method, eff["seed_level"]["per_seed"], eff["group_test_examples"], higher=False,
                             metric_key="worst_group_accuracy", kind=f"{d['kind']}: {what}", planted=what))
    return pd.DataFrame(rows)


def all_cases(store: RunStore, profile: str) -> pd.DataFrame:
    """Every case with its per-seed differences and their seed-level summary
    (``inference.seed_summary``: difference, lo, hi, sd, p, p_tost, mde, seeds)."""
    frames = [classification_cases(store, e, profile) for e in ("vision_classification", "llm_classification")]
    frames += [lr_neighbour_cases(store, e, profile) for e in ("vision_classification", "llm_classification")]
    frames.append(mia_cases(store, profile))
    frames.append(generation_cases(store, profile))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out["lr_neighbour"] = out["lr_neighbour"].fillna("") if "lr_neighbour" in out else ""
    summary = pd.DataFrame([inference.seed_summary(list(d.values()), inference.margin(k))
                            for d, k in zip(out["per_seed"], out["metric_key"])], index=out.index)
    out = pd.concat([out, summary], axis=1)
    out["margin"] = out["metric_key"].map(inference.margin)
    out["higher_is_better"] = out["metric_key"].map(lambda k: get_metric(k).higher_is_better)
    out["case"] = [case_label(r) for r in out.itertuples()]
    return out


def case_label(r) -> str:
    """One line naming a case for a reader: experiment, dataset (and task), model, metric."""
    return (f"{label(r.experiment)}: {label(r.dataset)}{_short(r.settings)}, {label(r.model)}: {r.metric}")


def decide(cases: pd.DataFrame) -> pd.DataFrame:
    """The five-way verdict (``inference.decide``) over the cases that ``apply_count_rules`` lets
    carry one; every other case gets "no verdict" and takes no part in the multiplicity adjustment."""
    hib = {k: get_metric(k).higher_is_better for k in cases["metric_key"].unique()}
    counted = cases["counted"] if "counted" in cases else pd.Series(True, index=cases.index)
    decided = inference.decide(cases[counted], hib)
    out = cases.copy()
    for col in ("p_holm", "p_bh", "p_tost_holm", "p_signflip_holm"):
        out[col] = decided[col].reindex(out.index)
    out["family"] = out.apply(inference.family, axis=1)
    out["verdict"] = decided["verdict"].reindex(out.index).fillna("no verdict")
    out["signflip_flag"] = decided["signflip_flag"].reindex(out.index).fillna("")
    beyond = is_beyond(out)  # another method's verdict names no LoRA: "method better" / "method worse"
    out.loc[beyond, "verdict"] = out.loc[beyond, "verdict"].str.replace("LoRA ", "method ", regex=False)
    full = out["method_a"].eq("full") if "method_a" in out else pd.Series(False, index=out.index)
    out.loc[full, "verdict"] = out.loc[full, "verdict"].str.replace("LoRA ", "full ", regex=False)
    out["lr_robustness"] = lr_robustness(out)
    out["full_vs_base"] = full_vs_base(out)
    return out


def verdict_lines(sub: pd.DataFrame, title: str, fmt, who: str = "LoRA", beyond: bool = False,
                  prefix: str = "LoRA") -> list[str]:
    """The reading of a set of counted cases as Markdown bullets: the five-way counts, then every
    case with a decided verdict, with its difference and interval (``fmt``), seeds and the p that
    decided it (Holm p of the difference test; for "equivalent", Holm p of TOST), with the sign-flip
    flag and whether the verdict depends on the learning rate where the findings say so.
    ``beyond``: the verdicts are the other methods' ("method better"), each named by its comparison;
    ``prefix``: the method the verdicts name otherwise ("LoRA", or "full" for full minus base)."""
    worse, better = ("method worse", "method better") if beyond else (f"{prefix} worse", f"{prefix} better")
    n = sub["verdict"].value_counts()
    lines = [f"- **{title}**: {len(sub)} cases; {who} worse in {n.get(worse, 0)}, better in {n.get(better, 0)}, "
             f"equivalent in {n.get('equivalent', 0)}, inconclusive in {n.get('inconclusive', 0)}."]
    for label in (worse, better, "equivalent"):
        for _, r in sub[sub["verdict"] == label].iterrows():
            named = label.replace("method", r["comparison"].split(" - ")[0]) if beyond else label
            if label == "equivalent":
                named = f"equivalent to {r['comparison'].split(' - ')[1]}" if beyond else "equivalent"
                p = f"TOST Holm p {r['p_tost_holm']:.3f}, margin ±{r['margin']:.2f}"
            else:
                p = f"Holm p {r['p_holm']:.3f}"
            notes = [str(r[k]) for k in ("signflip_flag", "lr_robustness") if isinstance(r.get(k), str) and r.get(k)
                     and not str(r[k]).startswith("no neighbouring")]
            lines.append(f"  - {named}: {r['case']} ({fmt(r)}, {r['seeds']} seeds, {p})"
                         + (f"; {'; '.join(notes)}" if notes else "") + ".")
    return lines


def method_table(cases: pd.DataFrame, reference: str) -> pd.DataFrame:
    """The method x metric view: one row per (case scope, method) of the other methods against
    ``reference`` ("full" or "lora"), one column per metric, each cell the mean per-seed difference
    with its seed-level interval and the verdict, with the method's trainable parameters."""
    sub = cases[is_beyond(cases) & (cases["method_b"] == reference)]
    if sub.empty:
        return pd.DataFrame()
    mark = {"method better": "better", "method worse": "WORSE", "equivalent": "equivalent",
            "inconclusive": "inconclusive", "no verdict": "no verdict"}

    def cell(r):
        ci = "" if pd.isna(r["lo"]) else f" [{r['lo']:+.3f}, {r['hi']:+.3f}]"
        return f"{r['difference']:+.3f}{ci} {mark.get(r['verdict'], r['verdict'])}"
    scope = sub["experiment"].map(label) + ": " + sub["dataset"].map(label) + ", " + sub["model"].map(label)
    t = sub.assign(scope=scope, method=sub["method_a"].map(methods_mod.label), cell=sub.apply(cell, axis=1),
                   order=sub["method_a"].map(list(methods_mod.METHODS).index))
    t["trainable"] = t["trainable_a"].map(lambda v: f"{int(v):,}" if pd.notna(v) else "")
    wide = t.pivot_table(index=["scope", "order", "method", "trainable"], columns="metric", values="cell",
                         aggfunc="first", sort=False)
    wide = wide.sort_index(level=["scope", "order"]).droplevel("order").reset_index()
    wide.columns.name = None
    return wide.fillna("")


def _short(kw: str) -> str:
    d = json.loads(kw)
    return f" ({d['task']})" if "task" in d else ""


def case_scope(case: pd.Series) -> str:
    """The control scope a case falls under: the experiment and its dataset (classification, membership
    inference) or the part (generation: pronoun task or token-bias probe). A control vouches only for
    the cases of its own dataset."""
    if case["experiment"] == "membership_inference":
        return f"membership_inference:{case['dataset']}"
    if case["experiment"] == "generation_fairness":
        return "generation_fairness:token_bias" if case["metric"] == get_metric("flip_rate").label \
            else "generation_fairness:pronoun"
    return f"{case['experiment']}:{case['dataset']}"


def power_scopes(ctrl: pd.DataFrame) -> tuple[set, set]:
    """(scopes that showed their power, scopes with any control). A scope has shown its power if every
    row of at least one of its controls (e.g. every seed of the over-fitted membership-inference
    target) was detected *and was not gross*: a control more than twice the margin's size shows only
    that gross effects are seen, not effects of the size the verdicts are about (amendment 5 of
    book/design.md)."""
    tried_rows = ctrl[ctrl["detected"] != "no control"]
    kind = tried_rows["kind"] if "kind" in tried_rows else tried_rows["scope"]
    gross = tried_rows["size"].astype(str).str.startswith("gross") if "size" in tried_rows else False
    ok = (tried_rows.assign(kind=kind, hit=(tried_rows["detected"] == "detected") & ~gross)
          .groupby(["scope", "kind"])["hit"].all())
    return {scope for (scope, _), hit in ok.items() if hit}, set(tried_rows["scope"])


#: the seeds a counted case needs, after the gate (amendment 6 of book/design.md): with 8, an exact
#: two-sided sign-flip test over seeds can reach p < 0.01 (2 / 2^8)
COUNT_SEEDS = 8
#: metrics reported beside a counted one and never counted themselves
SHOWN_BESIDE = {"calibration_gap_raw": "the raw calibration gap is shown beside the temperature-scaled one, "
                                      "which is the registered fairness metric"}


def apply_count_rules(cases: pd.DataFrame, ctrl: pd.DataFrame) -> pd.DataFrame:
    """``counted`` and ``not counted because`` for every case. A case enters the count only if it
    rests on at least ``COUNT_SEEDS`` seeds and a positive control of its scope was detected (and its
    metric is not one shown beside another, ``SHOWN_BESIDE``; learning-rate neighbours are never
    counted). Its seeds are already only those on which both compared runs passed the per-run gate
    (``gated_predictions``; the seeds left out are in ``gate_dropped``)."""
    detected, tried = power_scopes(ctrl)
    why = []
    for _, c in cases.iterrows():
        reasons = []
        if c["metric_key"] in SHOWN_BESIDE:
            reasons.append(SHOWN_BESIDE[c["metric_key"]])
        if isinstance(c.get("lr_neighbour"), str) and c["lr_neighbour"]:
            reasons.append("a learning-rate neighbour (read only for whether a verdict depends on the rate)")
        if c["seeds"] < COUNT_SEEDS:
            reasons.append(f"{c['seeds']} seed{'s' if c['seeds'] != 1 else ''} (fewer than {COUNT_SEEDS})")
        scope = case_scope(c)
        if scope not in detected:
            reasons.append("no positive control of about the margin's size was detected" if scope in tried
                           else "no positive control")
        why.append("; ".join(reasons))
    return cases.assign(counted=[not w for w in why], **{"not counted because": why})


def counts(cases: pd.DataFrame) -> pd.DataFrame:
    """Five-way verdicts per comparison, utility and fairness apart (every case: the ones without a
    verdict are counted as such)."""
    if "lr_neighbour" in cases:  # the learning-rate neighbours are a reading of other cases, not cases of their own
        cases = cases[cases["lr_neighbour"].fillna("") == ""]
    kind = np.where(cases["metric_key"].isin(inference.UTILITY), "utility", "fairness")
    t = pd.crosstab([cases["comparison"].str.split(" [(]").str[0].rename("comparison"), pd.Series(kind, index=cases.index,
                     name="kind")], cases["verdict"])
    return t.reindex(columns=list(inference.VERDICTS), fill_value=0)


CSV_COLUMNS = ["experiment", "dataset", "settings", "model", "attribute", "comparison", "method_a", "method_b",
               "trainable_a", "trainable_b", "metric", "metric_key", "seeds",
               "per_seed", "gate_dropped", "worst_groups", "worst_n", "test_n", "difference", "lo", "hi", "sd", "p", "p_holm", "p_bh",
               "p_tost", "p_tost_holm", "p_signflip", "p_signflip_holm", "signflip_flag", "margin", "mde", "family",
               "verdict", "lr_neighbour", "lr_robustness", "full_vs_base", "not counted because"]


CONTROL_COLUMNS = ["experiment", "scope", "kind", "control", "model", "method", "planted", "per seed", "seeds", "n",
                   "effect", "lo", "hi", "margin", "size", "detected", "detected leaving one seed out"]


def design_commit() -> str:
    """The commit and date at which the registered design (``book/design.md``) last changed, or a
    sentence saying why they are unknown (no git, not a checkout)."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%h (%cs)", "--", "book/design.md"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git is not available)"
    return out.stdout.strip() or "unknown (not a git checkout, or the design is not committed yet)"


def write_controls_csv(ctrl: pd.DataFrame, results_dir) -> None:
    """Every control row as ``controls.csv`` in the run store (experiment, control, planted size,
    per-seed effects, interval, detected), written atomically."""
    from pathlib import Path

    out = ctrl.reindex(columns=CONTROL_COLUMNS)
    path = Path(results_dir) / "controls.csv"
    tmp = path.with_suffix(".csv.tmp")
    out.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)


def write_csv(cases: pd.DataFrame, results_dir) -> None:
    """The findings table as ``findings.csv`` in the run store (per-seed differences as JSON),
    written atomically."""
    from pathlib import Path

    path = Path(results_dir) / "findings.csv"
    out = cases.reindex(columns=CSV_COLUMNS).assign(
        per_seed=cases["per_seed"].map(lambda d: json.dumps({str(k): round(v, 6) for k, v in d.items()})))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    out.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)


#: the one-sided confidence of the conservative seed SD a design is sized from (inference.sd_upper)
SD_CONFIDENCE = 0.90
#: the cases the power analysis sizes: the primary comparisons on accuracy and worst-group accuracy
DESIGN_METRICS = ("accuracy", "worst_group_accuracy")


def pilot_cases(store: RunStore, directory: str, profile: str, seeds=None, experiment: str | None = None,
                models=None, datasets=None) -> pd.DataFrame:
    """The classification cases of a pilot: the records in ``directory`` of the run store (e.g. a
    committed earlier design), optionally only the given ``seeds`` and ``models``, with their seed
    SD, named as cases of ``experiment`` (default: the directory's name)."""
    cases = classification_cases(store, directory, profile)
    if cases.empty:
        return cases
    if models is not None:
        cases = cases[cases["model"].isin(models)].reset_index(drop=True)
    if datasets is not None:
        cases = cases[cases["dataset"].isin(datasets)].reset_index(drop=True)
    cases["experiment"] = experiment or directory
    if seeds is not None:
        keep = {str(s) for s in seeds}
        cases = cases.assign(per_seed=cases["per_seed"].map(lambda d: {k: v for k, v in d.items() if str(k) in keep}))
    summary = pd.DataFrame([inference.seed_summary(list(d.values()), inference.margin(k))
                            for d, k in zip(cases["per_seed"], cases["metric_key"])], index=cases.index)
    return pd.concat([cases, summary[["seeds", "sd"]]], axis=1)


def design_table(pilot: pd.DataFrame, cases: pd.DataFrame, target: float | None = None,
                 confidence: float = SD_CONFIDENCE) -> pd.DataFrame:
    """The power analysis behind the design, one row per primary classification case (LoRA minus
    full or head-only, ``DESIGN_METRICS``): the pilot's seeds and seed-to-seed SD of the paired
    difference, its conservative SD (the one-sided ``confidence`` upper limit, ``inference.sd_upper``),
    the MDE target (``target``, or the case's equivalence margin), the seeds an unadjusted two-sided
    t-test would need for an MDE of the target (80% power) at either SD, the seeds the design runs,
    and the MDE the present records reach (their own SD). Cases are matched on experiment, dataset,
    task, model, comparison and metric (the pilot may have another dataset size)."""
    key = ["experiment", "dataset", "task", "model", "comparison", "metric"]
    if pilot.empty:
        return pd.DataFrame()

    def keyed(frame):
        frame = frame[frame["metric_key"].isin(DESIGN_METRICS)
                      & frame["comparison"].isin(["LoRA - full", "LoRA - head"])]
        return frame.assign(task=frame["settings"].map(lambda kw: json.loads(kw).get("task", "")))
    p = keyed(pilot[pilot["seeds"] >= 2])[key + ["metric_key", "seeds", "sd"]].rename(
        columns={"seeds": "pilot seeds", "sd": "pilot SD"})
    p["conservative SD"] = [inference.sd_upper(sd, k, confidence) for sd, k in zip(p["pilot SD"], p["pilot seeds"])]
    p["MDE target"] = [target if target is not None else inference.margin(k) for k in p["metric_key"]]
    p["seeds at the pilot SD"] = [inference.seeds_for(t, sd) for t, sd in zip(p["MDE target"], p["pilot SD"])]
    p["seeds at the conservative SD"] = [inference.seeds_for(t, sd) for t, sd in zip(p["MDE target"], p["conservative SD"])]
    now = keyed(cases)[key + ["seeds", "sd", "mde"]].rename(columns={"seeds": "seeds now", "sd": "SD now",
                                                                     "mde": "MDE now"})
    out = p.drop(columns=["metric_key"]).merge(now, on=key, how="left")
    out["target met"] = out["MDE now"] <= out["MDE target"]
    return out.reset_index(drop=True)


# ---------------------------------------------------------------- the answer: key findings and claims
#: The original study's claims (Ding et al. 2024), in this study's words, each with the experiments and
#: metrics whose LoRA-minus-full cases test it. Utility is counted apart from fairness.
CLAIMS = (
    ("subgroup accuracy", "No consistent pattern of LoRA lowering subgroup accuracy against full fine-tuning; "
     "in many cases it is as fair or fairer", ("vision_classification", "llm_classification"),
     ("worst_group_accuracy", "accuracy_gap")),
    ("calibration across groups", "LoRA calibrated across subgroups as well as full fine-tuning, or better",
     ("vision_classification", "llm_classification"), ("calibration_gap",)),
    ("utility", "LoRA about as accurate and as well calibrated overall as full fine-tuning",
     ("vision_classification", "llm_classification"), ("accuracy", "ece_ts")),
    ("membership inference", "LoRA as resistant to membership inference as full fine-tuning, or more",
     ("membership_inference",), ("loss_auc", "lira_auc")),
    ("gender bias in generation", "LoRA no more stereotyped in its pronoun choices than full fine-tuning",
     ("generation_fairness",), ("stereotype_excess", "pro_preference")),
    ("token bias", "Option order and answer tokens move prompt-based fairness measures, so such evaluations "
     "are fragile", ("generation_fairness",), ("flip_rate",)),
)


def _main_lora_full(cases: pd.DataFrame) -> pd.DataFrame:
    c = cases[(cases["comparison"] == "LoRA - full")]
    if "lr_neighbour" in c:
        c = c[c["lr_neighbour"].fillna("") == ""]
    return c


def claim_status(sub: pd.DataFrame) -> str:
    """Whether this study replicates a claim, from the verdicts of its counted LoRA-minus-full cases:
    *not testable here* (none counted), *contradicted* / *partly contradicted* (LoRA worse in all /
    some), *undecided* (every counted case inconclusive), *replicated* (every one equivalent or LoRA
    better) or *replicated where decided* (the rest inconclusive)."""
    v = sub.loc[sub["counted"].astype(bool), "verdict"] if len(sub) else pd.Series(dtype=object)
    if v.empty:
        return "not testable here"
    if (v == "LoRA worse").any():
        return "contradicted" if (v == "LoRA worse").all() else "partly contradicted"
    if (v == "inconclusive").all():
        return "undecided"
    return "replicated" if v.isin(["equivalent", "LoRA better"]).all() else "replicated where decided"


def replication_table(cases: pd.DataFrame) -> pd.DataFrame:
    """One row per claim of the original study (``CLAIMS``): what it reported, what this study found
    (the verdicts of its counted LoRA-minus-full cases, with the tasks they rest on, or why none is
    counted) and the status (``claim_status``)."""
    c = _main_lora_full(cases)
    rows = []
    for name, claim, experiments, keys in CLAIMS:
        sub = c[c["experiment"].isin(experiments) & c["metric_key"].isin(keys)]
        counted = sub[sub["counted"].astype(bool)]
        if len(counted):
            verdicts = counted["verdict"].value_counts()
            tasks = sorted({f"{label(r.model)} on {label(r.dataset)}" for r in counted.itertuples()})
            dep = int(counted["lr_robustness"].fillna("").str.startswith("depends").sum())
            found = (f"{len(counted)} of {len(sub)} cases counted: "
                     + ", ".join(f"{n} {v}" for v, n in verdicts.items()) + f" ({'; '.join(tasks)})"
                     + (f"; {dep} of them {'depends' if dep == 1 else 'depend'} on the learning rate" if dep else ""))
        elif len(sub):
            why = sub["not counted because"].dropna().astype(str)
            found = (f"none of {len(sub)} cases counted"
                     + (f": {why.iloc[0].split(';')[0]}" if len(why) else ""))
        else:
            found = "no case in the records"
        status = claim_status(sub)
        if status.startswith("replicated") and len(counted) and \
                counted["lr_robustness"].fillna("").str.startswith("depends").any():
            status += ", at the chosen learning rates only"
        rows.append({"claim": name, "status": status, "Ding et al. reported": claim,
                     "this study (offline scale)": found})
    return pd.DataFrame(rows)


def _interval(r) -> str:
    return f"{r.difference:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}]"


def key_findings(cases: pd.DataFrame, limit: int = 4) -> list[str]:
    """At most ``limit`` bounded statements from the records, for the top of the book: per task with
    counted LoRA-minus-full accuracy or worst-group cases (the two with the most, at most), the
    interval of LoRA minus full fine-tuning and its verdict (accuracy, worst-group accuracy, accuracy
    gap); the temperature-scaled calibration gap; and what this scale cannot decide."""
    c = _main_lora_full(cases)
    c = c[c["counted"].astype(bool)]
    out = []
    tasks = c[c["metric_key"].isin(["accuracy", "worst_group_accuracy", "accuracy_gap"])]
    order = tasks.groupby(["experiment", "dataset", "model"]).size().sort_values(ascending=False)
    for (exp, ds, mo) in list(order.index)[:2]:
        t = tasks[(tasks["experiment"] == exp) & (tasks["dataset"] == ds) & (tasks["model"] == mo)]
        parts = []
        for r in t.sort_values("metric_key", key=lambda k: k.map({"accuracy": 0, "worst_group_accuracy": 1,
                                                                   "accuracy_gap": 2})).itertuples():
            dep = " (depends on the learning rate)" if str(r.lr_robustness).startswith("depends") else ""
            m = getattr(r, "margin", None)
            small = (f" by less than the ±{m:g} margin" if r.verdict in ("LoRA worse", "LoRA better") and m is not None
                     and pd.notna(m) and -m < r.lo and r.hi < m else "")  # a real but small difference
            parts.append(f"{r.metric} {_interval(r)}, {r.verdict}{small}{dep}")
        out.append(f"**{label(mo)} on {label(ds)}** ({int(t['seeds'].max())} seeds), LoRA minus full fine-tuning: "
                   + "; ".join(parts) + ".")
    cal = c[c["metric_key"] == "calibration_gap"]
    if len(cal):
        out.append("**Calibration across groups** (after per-run temperature scaling), LoRA minus full: "
                   + "; ".join(f"{label(r.model)} {_interval(r)}, {r.verdict}" for r in cal.itertuples())
                   + ". Overall calibration error is utility, not fairness.")
    rest = _main_lora_full(cases)
    names = {"membership_inference": "membership inference", "generation_fairness": "gender bias and token bias in generation",
             "vision_classification": "vision classification", "llm_classification": "text classification"}
    undecided = sorted({names.get(e, e) for e in rest["experiment"].unique()} - {names.get(e, e) for e in c["experiment"].unique()})
    if undecided:
        out.append("**Not decided at this scale:** " + ", ".join(undecided)
                   + " (too few seeds, or no control of the margin's size detected): intervals are reported, "
                   "not counted.")
    return out[:limit]
