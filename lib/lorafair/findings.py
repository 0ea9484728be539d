"""The study's answer, read from the run records: paired LoRA-minus-full (and minus head-only)
differences per case, each with a 95% paired bootstrap interval and a verdict.

A *case* is one (experiment, dataset and its settings, model). Classification cases use the
chapters' main runs (LoRA at the model's default rank on all layers); membership-inference cases use
the targets of one seed and their shadows. "Better"/"worse" is from the point of view of fairness
and privacy: for accuracy and worst-group accuracy higher is better; for attack AUC higher is worse
(LoRA leaks more)."""

from __future__ import annotations

import json

import pandas as pd

from . import experiments as ex
from . import generation as gen
from . import mia
from .metrics import get_metric
from .models import get_spec
from .runs import RunStore


def _verdict(metric: str, v: str) -> str:
    """"LoRA better" / "LoRA worse" from a difference's direction and the metric's registered
    direction (``metrics.METRICS``), or "indistinguishable"."""
    d = ex.direction(metric, v)
    return d if d == "indistinguishable" else f"LoRA {d}"


def classification_cases(store: RunStore, experiment: str, profile: str, n_boot: int) -> pd.DataFrame:
    groups: dict = {}
    for r in store.records(experiment):
        c = r.config
        if c.get("profile") != profile or (c.get("split_design") or {}).get("kind") not in (None, "by_unit"):
            continue
        if c["method"] == "lora" and (c.get("layer_fraction", 1) != 1 or c.get("rank") != get_spec(c["model"]).default_rank
                                      or c.get("target_modules")):
            continue
        key = (c["dataset"], json.dumps(c["dataset_kwargs"], sort_keys=True), c["model"])
        groups.setdefault(key, []).append(r)
    rows = []
    for (dataset, kw, model), recs in sorted(groups.items()):
        attr = next(iter(recs[0].metrics["attributes"]))
        preds = ex.predictions(recs)
        for other in ("full", "head"):
            d = ex.paired_differences(preds, model, attr, "lora", other, n_boot)
            if d is None:
                continue
            seeds = sorted(set(preds[preds["method"] == "lora"]["seed"]) & set(preds[preds["method"] == other]["seed"]))
            for metric, v in d.items():
                name = get_metric(metric).label
                rows.append({"experiment": experiment, "dataset": dataset, "settings": kw, "model": model,
                             "attribute": attr, "comparison": f"LoRA - {other}", "metric": name,
                             "difference": v["difference"], "lo": v["ci"][0], "hi": v["ci"][1],
                             "seeds": len(seeds), "verdict": _verdict(metric, v["verdict"])})
    return pd.DataFrame(rows)


def mia_cases(store: RunStore, profile: str, n_boot: int) -> pd.DataFrame:
    targets, shadows = {}, {}
    for r in store.records("membership_inference"):
        c = r.config
        design = c.get("split_design") or {}
        if c.get("profile") != profile or not design:
            continue
        key = (c["dataset"], json.dumps(c["dataset_kwargs"], sort_keys=True), c["model"] if design["kind"] == "mia_target"
               else None, design["seed"])
        if design["kind"] == "mia_target":
            targets.setdefault(key, {})[c["method"]] = r
        else:
            shadows.setdefault((key[0], key[1], design["seed"]), []).append(r)
    rows = []
    for (dataset, kw, model, seed), t in sorted(targets.items()):
        sh = [s for s in shadows.get((dataset, kw, seed), []) if s.config["model"] == model]

        def shadows_for(method, sh=sh):  # the target's own method's shadows where they exist, else LoRA's
            own = [s for s in sh if s.config["method"] == method]
            return own if len(own) >= 2 else [s for s in sh if s.config["method"] == "lora"]
        if not {"lora", "full"} <= set(t) or len(shadows_for("lora")) < 2:
            continue
        sp = {m: [s.predictions() for s in shadows_for(m)] for m in ("lora", "full")}
        for key, fn in (("lira_auc", lambda p, m: mia.lira_scores(p, sp[m])), ("loss_auc", lambda p, m: mia.loss_scores(p))):
            attack = get_metric(key).label
            d = mia.paired_auc_difference(fn(t["lora"].predictions(), "lora"), fn(t["full"].predictions(), "full"),
                                          n_boot, seed)
            rows.append({"experiment": "membership_inference", "dataset": dataset, "settings": kw, "model": model,
                         "attribute": "(all examples)", "comparison": "LoRA - full", "metric": attack,
                         "difference": d["difference"], "lo": d["ci"][0], "hi": d["ci"][1], "seeds": 1,
                         "verdict": _verdict(key, d["verdict"])})
    return pd.DataFrame(rows)


def generation_cases(store: RunStore, profile: str, n_boot: int) -> pd.DataFrame:
    """Pronoun task: LoRA minus full (and minus base) in the stereotype excess (the pro rate minus the
    anti rate: writing any gendered pronoun raises both, so the raw pro rate would call every model
    that leaves *they* behind "more stereotyped"), per training set and test set, paired over test
    sources and seeds. Probe: LoRA minus full (and minus
    base) in the token-bias flip rate, paired over texts (each text's mean over variants)."""
    recs = [r for r in store.records("generation_fairness") if r.config.get("profile") == profile]
    rows = []
    pron = [r for r in recs if r.config["part"] == "pronoun"]
    by_case: dict = {}
    for r in pron:
        by_case.setdefault((r.config["task"], json.dumps(r.config["task_kwargs"], sort_keys=True), r.config["model"]),
                           []).append(r)
    for (task, kw, model), rs in sorted(by_case.items()):
        preds = gen.pronoun_predictions(rs)
        for test_set in sorted(preds["test_set"].unique()):
            sub = preds[preds["test_set"] == test_set]
            for ts in sorted(set(sub["train_set"]) - {"-"}):
                metric = f"{get_metric('stereotype_excess').label} ({ts} refs)"
                for other, sel in (("full", {"method": "full", "train_set": ts}), ("base", {"method": "base"})):
                    d = gen.paired_rate_difference(sub, {"method": "lora", "train_set": ts}, sel,
                                                   gen.STEREOTYPE_EXCESS, n_boot)
                    if d is None:
                        continue
                    rows.append({"experiment": "generation_fairness", "dataset": f"{task} {test_set}", "settings": kw,
                                 "model": model, "attribute": "predisposition", "comparison": f"LoRA - {other}",
                                 "metric": metric, "difference": d["difference"], "lo": d["ci"][0], "hi": d["ci"][1],
                                 "seeds": len(set(sub["seed"])), "verdict": _verdict("stereotype_excess", d["verdict"])})
    probes: dict = {}
    for r in recs:
        if r.config["part"] == "token_bias":
            key = (r.config["corpus"], json.dumps(r.config["corpus_kwargs"], sort_keys=True), r.config["model"])
            probes.setdefault(key, {}).setdefault(r.config["method"], []).append(r)
    for (corpus, kw, model), by_method in sorted(probes.items()):
        if "lora" not in by_method:
            continue
        rows_of = {m: pd.concat([r.predictions().assign(seed=r.config["seed"]) for r in rs])
                   for m, rs in by_method.items()}
        for other in ("full", "base"):
            d = gen.flip_rate_difference(rows_of["lora"], rows_of[other], n_boot) if other in rows_of else None
            if d is None:
                continue
            rows.append({"experiment": "generation_fairness", "dataset": corpus, "settings": kw, "model": model,
                         "attribute": "(prompt variants)", "comparison": f"LoRA - {other}",
                         "metric": get_metric("flip_rate").label, "difference": d["difference"], "lo": d["ci"][0],
                         "hi": d["ci"][1], "seeds": d["seeds"],
                         "verdict": _verdict("flip_rate", d["verdict"])})
    return pd.DataFrame(rows)


CONTROL_EXPERIMENTS = ("vision_classification", "llm_classification", "membership_inference", "generation_fairness")


def controls(store: RunStore, profile: str, n_boot: int) -> pd.DataFrame:
    """Every experiment's positive control: the planted effect, its paired interval and whether it
    was detected; experiments without a control in the records get a row that says so."""
    rows = []
    for exp in CONTROL_EXPERIMENTS:
        recs = [r for r in store.records(exp) if r.config.get("profile") == profile]
        ctrl = [r for r in recs if (r.config.get("split_design") or {}).get("kind") == "downsample"]
        if not ctrl:
            rows.append({"experiment": exp, "control": "none in the records", "model": "", "method": "",
                         "effect": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0, "seeds": 0,
                         "detected": "no control"})
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
            eff = ex.control_effect(refs, cs, d["attribute"], d["group"], n_boot)
            if eff is None:
                continue
            g = eff["group_accuracy"]
            rows.append({"experiment": exp, "control": f"{d['attribute']} group '{d['group']}' thinned to {d['keep']:.0%} "
                         f"of its training examples: its test accuracy", "model": model, "method": method,
                         "effect": g["difference"], "lo": g["ci"][0], "hi": g["ci"][1],
                         "n": eff["group_test_examples"], "seeds": len(eff["seeds"]),
                         "detected": "detected" if eff["detected"] else "NOT detected"})
    return pd.DataFrame(rows)


def all_cases(store: RunStore, profile: str, n_boot: int) -> pd.DataFrame:
    frames = [classification_cases(store, e, profile, n_boot) for e in ("vision_classification", "llm_classification")]
    frames.append(mia_cases(store, profile, n_boot))
    frames.append(generation_cases(store, profile, n_boot))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out["case"] = out["experiment"].str.replace("_classification", "").str.replace("_fairness", "") + " | " + out["dataset"] + \
        out["settings"].map(_short) + " | " + out["model"] + " | " + out["metric"]
    return out


def _short(kw: str) -> str:
    d = json.loads(kw)
    return f" ({d['task']})" if "task" in d else ""


def counts(cases: pd.DataFrame) -> pd.DataFrame:
    t = cases.groupby(["comparison", "verdict"]).size().unstack(fill_value=0)
    for v in ("LoRA worse", "indistinguishable", "LoRA better"):
        if v not in t:
            t[v] = 0
    return t[["LoRA worse", "indistinguishable", "LoRA better"]]
