"""Classification runs: the hashed configuration of one run, its computation, and the tables the
chapters read from its records.

Every configuration value that can change a result is part of the hashed configuration, so a
changed parameter gives a new run and an unchanged one re-uses its record. The chapters' grids of
configurations are in ``lorafair.chapters``; ``lorafair.sweep`` runs them.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from . import assets
from . import data as data_mod
from . import inference
from . import methods as methods_mod
from . import metrics as metrics_mod
from . import models as models_mod
from . import spec as spec_mod
from . import splits
from .errors import LorafairError, as_float, as_int
from .runs import RunRecord, RunStore
from .precision import choose_precision
from .train import TrainConfig, fit_predict, fit_predict_head


def classification_config(experiment: str, profile: str, dataset: str, dataset_kwargs: dict, model: str,
                          method: str, seed: int, epochs: int, lr: float, batch_size: int,
                          rank=None, alpha=None, layer_fraction: float = 1.0, placement: str = "front",
                          target_modules=None, split_fractions=(0.6, 0.2, 0.2), select: str = "best_val",
                          n_boot: int = 1000, max_length: int | None = None,
                          split_design: dict | None = None, settings: dict | None = None,
                          where: str = "configuration") -> spec_mod.RunSpec:
    """The resolved, hashed configuration of one classification run, validated (``spec.build``;
    ``where`` names its source in an error)."""
    spec = models_mod.get_spec(model)
    m = methods_mod.for_classification(method)
    methods_mod.check_supported(m.name, spec.kind, spec.name, spec.target_layer)
    method = m.name
    cfg = {"experiment": experiment, "profile": profile, "dataset": dataset,
           "dataset_kwargs": dict(sorted(dataset_kwargs.items())), "model": spec.name, "method": method,
           "seed": as_int(seed), "split_seed": as_int(seed), "split_fractions": list(split_fractions),
           "epochs": as_int(epochs), "lr": as_float(lr), "batch_size": as_int(batch_size), "select": select,
           "n_boot": as_int(n_boot)}
    if spec.kind == "text":
        cfg["max_length"] = as_int(max_length or spec.max_length)
    if split_design:  # lorafair.splits: a unit split, a positive control, or a membership-inference split
        cfg["split_design"] = dict(sorted(split_design.items()))
    if m.prompt_learning:  # virtual tokens before the input: no target modules, no layers
        cfg.update(m.resolve_settings(settings))
    elif m.trains == "adapter":  # the method's own settings, then where the adapter is placed
        frac = layer_fraction
        if m.uses_rank:
            r, frac = models_mod.rank_and_fraction(rank if rank is not None else spec.default_rank, layer_fraction)
            cfg.update({"rank": r, "alpha": as_float(alpha if alpha is not None else spec.default_alpha)})
        cfg.update(m.resolve_settings(settings))  # the method's other settings (none for LoRA)
        cfg.update({"layer_fraction": as_float(frac), "placement": placement if frac < 1 else "front",
                    "target_modules": sorted(target_modules) if target_modules else None})
    return spec_mod.build(cfg, where)


class ClassificationRunner:
    """Loads the dataset once and runs configurations through the run store."""

    def __init__(self, store: RunStore | None, dataset: str, dataset_kwargs: dict, progress: bool = True,
                 train_options: dict | None = None):
        """``train_options``: TrainConfig speed settings that do not enter the run's hash (compile,
        gradient_checkpointing, num_workers)."""
        self.store = store
        self.train_options = dict(train_options or {})
        self.dataset_name = dataset
        self.dataset_kwargs = dataset_kwargs
        self.progress = progress
        self._dataset = None
        self._encoders: dict = {}

    @property
    def dataset(self) -> data_mod.Dataset:
        if self._dataset is None:
            self._dataset = data_mod.load(self.dataset_name, **self.dataset_kwargs)
        return self._dataset

    def encoder(self, spec: models_mod.ModelSpec, max_length: int | None = None, rows=None):
        """The dataset's encoder for ``spec`` (cached per runner), or one of the rows ``rows`` only
        (a boolean mask; not cached)."""
        ds = self.dataset
        if rows is not None:
            sub = ds.table["input"][rows].tolist()
            if spec.kind == "text":
                return data_mod.TextEncoder(sub, spec.tokenizer(), max_length or spec.max_length)
            return data_mod.ImageEncoder(sub, spec.image_size, spec.mean, spec.std)
        if spec.kind == "text":
            key = ("text", spec.tokenizer, max_length)
            if key not in self._encoders:
                self._encoders[key] = data_mod.TextEncoder(ds.table["input"].tolist(), spec.tokenizer(),
                                                          max_length or spec.max_length)
            return self._encoders[key]
        key = (spec.image_size, spec.mean, spec.std)
        if key not in self._encoders:
            self._encoders[key] = data_mod.ImageEncoder(ds.table["input"].tolist(), spec.image_size,
                                                       spec.mean, spec.std)
        return self._encoders[key]

    def run(self, cfg: dict, force: bool = False) -> RunRecord:
        """One configuration through this runner's store (``lorafair.sweep`` runs many)."""
        cfg = spec_mod.as_spec(cfg)
        return self.store.get_or_run(cfg["experiment"], cfg, lambda: self.compute(cfg), force=force)

    def compute(self, cfg: dict):
        """Train and evaluate one configuration; returns (predictions, metrics, extra meta)."""
        ds = self.dataset
        spec = models_mod.get_spec(cfg["model"])
        if spec.kind != ds.kind:
            raise LorafairError(f"model {spec.name} is a {spec.kind} model but dataset {ds.name} is {ds.kind}")
        table = ds.table.copy()
        table["split"] = splits.split_for(ds, cfg["split_seed"], tuple(cfg["split_fractions"]), cfg.get("split_design"))
        used = None
        if splits.stores_used_only(cfg.get("split_design")):  # only the examples the split uses are encoded and kept
            used = (table["split"] != "unused").to_numpy()
        sizes = table["split"].value_counts()
        for part in ("train", "test"):
            if not sizes.get(part, 0):
                raise LorafairError(f"the {part} split is empty ({len(table)} examples of {ds.name}, split "
                                    f"{dict(sizes)}): give the dataset more examples")
        model, _ = models_mod.build(spec.name, ds.num_labels, seed=cfg["seed"])
        m = methods_mod.get(cfg["method"])
        model, info = models_mod.adapt(model, spec, cfg["method"], rank=cfg.get("rank"), alpha=cfg.get("alpha"),
                                       settings={k: cfg[k] for k in m.extra_settings},
                                       target_modules=cfg.get("target_modules"),
                                       layer_fraction=cfg.get("layer_fraction", 1.0),
                                       placement=cfg.get("placement", "front"), seed=cfg["seed"])
        options = dict(self.train_options)
        precision, why = choose_precision(spec.name, options.pop("precision", None))
        tcfg = TrainConfig(epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"],
                           select=cfg["select"], seed=cfg["seed"], precision=precision, **options)
        planted = splits.training_labels(ds, table["split"], cfg["split_seed"], cfg.get("split_design"))
        if used is not None:
            table = table[used].reset_index(drop=True)
            planted = None if planted is None else planted[used]
        labels = torch.from_numpy(np.array(table["label"] if planted is None else planted, dtype=np.int64))
        enc = self.encoder(spec, cfg.get("max_length"), rows=used)
        if methods_mod.get(cfg["method"]).trains == "head":  # the frozen backbone runs once; the head trains on its features
            out, history = fit_predict_head(model, spec.head, spec.head_dropout(model) if spec.head_dropout else None,
                                            enc, labels, table["split"], tcfg, progress=self.progress,
                                            cache_key=feature_cache_key(spec, cfg["seed"]), cache_dir=FEATURE_CACHE)
        else:
            groups = None
            if m.objective != "erm":  # the groups of the dataset's sensitive attribute enter the loss
                groups = torch.from_numpy(pd.factorize(table[f"group_{ds.attributes[0]}"].astype(str))[0].astype(np.int64))
                info.update(objective=m.objective, objective_attribute=ds.attributes[0])
            out, history = fit_predict(model, info["freeze_norm_stats"], enc, labels,
                                       table["split"], tcfg, progress=self.progress,
                                       objective=m.objective, groups=groups,
                                       penalty=float(cfg.get("penalty", 0.0)))
        keep = ["example_id", "split"] + [c for c in table.columns if c.startswith("group_")]
        preds = pd.concat([table[keep].reset_index(drop=True), out], axis=1)
        if planted is not None:  # "label" is what training saw; the dataset's label is kept beside it
            preds.insert(2, "true_label", table["label"].to_numpy(dtype=np.int8))
        unit = splits.unit_column(ds, cfg.get("split_design"))
        if unit:  # the unit the split keeps together, so disjointness can be checked from the record
            preds.insert(2, "split_unit", table[unit].astype(str).to_numpy())
        metrics = all_metrics(preds, cfg["n_boot"], cfg["seed"])
        extra = {"adaptation": info, "history": history, "skipped_records": ds.skipped,
                 "environment": {"precision": precision, "precision_reason": why}}
        if spec.kind == "text":
            extra["truncated_inputs"] = enc.truncated
        return preds, metrics, extra


#: Backbone features for head-only runs, shared by every run with the same frozen backbone and inputs.
FEATURE_CACHE = assets.CACHE / "features"


def feature_cache_key(spec: models_mod.ModelSpec, seed: int) -> str:
    """What decides a frozen backbone's features besides its inputs: the model (a random-init model's
    weights depend on the seed) and the versions that compute them."""
    from importlib import metadata

    weights = f"seed{seed}" if spec.source == "random" else "pretrained"
    return "|".join([spec.name, weights, f"channels_last={spec.channels_last}", metadata.version("torch"),
                     metadata.version("transformers"),
                     metadata.version("timm"), metadata.version("torchvision")])


def all_metrics(preds: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """metrics.json: the test-split aggregates at the top level, brief val/train summaries below."""
    m = metrics_mod.classification_metrics(preds, "test", n_boot=n_boot, seed=seed)
    for split in ("val", "train"):
        d = preds[preds["split"] == split]
        if len(d):
            m[split] = {"n": int(len(d)), "accuracy": float((d["label"] == d["pred"]).mean()),
                        "mean_loss": float(d["loss"].mean())}
    return m


def control_effect(reference: list[RunRecord], control: list[RunRecord], attribute: str, group: str,
                   n_boot: int = 1000) -> dict | None:
    """The positive control's planted effect: the group's test accuracy with its training examples
    thinned (``control``) minus with the full split (``reference``: the same model, method and seed),
    paired over the same test examples and seeds; and the worst-group accuracy difference with the seed
    as the unit (``metrics.seed_worst_group_difference``). ``seed_level``:
    the group's per-seed effects read with the seed as the unit (``inference.planted_effect``);
    ``detected``: their seed-level interval lies below zero. None if no control has its reference."""
    ref = {(r.config["model"], r.config["method"], r.config["seed"]): r for r in reference}
    col = f"group_{attribute}"
    a, b, g, blocks, labels = [], [], [], [], []
    seeds = []
    for c in sorted(control, key=lambda r: r.config["seed"]):  # one order, so every reader gets one interval
        key = (c.config["model"], c.config["method"], c.config["seed"])
        if key not in ref:
            continue
        pc, pr = c.predictions(), ref[key].predictions()
        tc = pc[pc["split"] == "test"].set_index("example_id")
        tr = pr[pr["split"] == "test"].set_index("example_id").loc[tc.index]
        a.append((tc["label"] == tc["pred"]).to_numpy())
        b.append((tr["label"] == tr["pred"]).to_numpy())
        g.append(tc[col].astype(str).to_numpy())
        labels.append(tc["label"].to_numpy())
        blocks.append(np.full(len(tc), key[2]))
        seeds.append(key[2])
    if not seeds:
        return None
    a, b, g, blocks, labels = map(np.concatenate, (a, b, g, blocks, labels))
    in_group = g == str(group)
    d_group = metrics_mod.paired_difference(a[in_group], b[in_group], n_boot)
    design = control[0].config.get("split_design") or {}
    other_class = None
    if design.get("kind") == "relabel":  # where a planted label bias acts: the group's other-class examples
        hit = in_group & (labels != int(design["to_label"]))
        other_class = metrics_mod.paired_difference(a[hit], b[hit], n_boot)
        other_class["n"] = int(hit.sum())
    d_worst = metrics_mod.seed_worst_group_difference(a, b, g, blocks)
    per_seed = {int(sd): float(a[in_group & (blocks == sd)].mean() - b[in_group & (blocks == sd)].mean())
                for sd in seeds if (in_group & (blocks == sd)).any()}
    seed_level = inference.planted_effect(per_seed, higher=False)
    return {"group": str(group), "group_test_examples": int(in_group.sum()), "seeds": seeds,
            "group_accuracy": d_group, "worst_group_accuracy": d_worst, "worst_groups": d_worst["groups"],
            "other_class_accuracy": other_class, "seed_level": seed_level,
            "detected": seed_level["detected"]}


def control_intervention(C: dict, kind: str = "downsample", fraction: float | None = None) -> str:
    """The words for a control's intervention (``C``: the profile's ``control``; ``fraction``: the
    relabelled share of one of several ``relabel.fractions``)."""
    if kind == "relabel":
        r = C["relabel"]
        f = fraction if fraction is not None else r.get("fraction", (r.get("fractions") or [None])[0])
        return (f"Relabelling {float(f):.0%} of the `{C['group']}` group's training examples of other classes "
                f"as class {int(r['to_label'])} (a planted label bias)")
    return f"Training with only {float(C['keep']):.0%} of the `{C['group']}` group's training examples"


def control_reading(effect: dict | None, attribute: str, keep, glue=None, prefix: str = "") -> str:
    """One paragraph on a positive control, with its numbers glued. ``keep``: the down-sampling
    fraction, or the intervention's words (``control_intervention``)."""
    if effect is None:
        return "No positive control ran on this profile (parameter `control`)."
    d, w = effect["group_accuracy"], effect["worst_group_accuracy"]
    if glue:
        glue(f"{prefix}_control_group_difference", round(d["difference"], 4), display=False)
        glue(f"{prefix}_control_detected", "detected" if effect["detected"] else "not detected", display=False)
    sl = effect["seed_level"]
    per = ", ".join(f"{v:+.3f}" for v in sl["per_seed"].values())
    seed_ci = inference.interval_text(sl)
    verdict = (f"**detected**: per seed {per}, seed-level 95% interval {seed_ci} below zero" if effect["detected"] else
               f"**not detected**: per seed {per}, seed-level 95% interval {seed_ci} does not lie below zero, so at "
               "this scale this control shows no power to see a group-level accuracy effect of this kind; the "
               "chapter's comparisons carry verdicts only if another of its controls is detected (see the findings)")
    what = keep if isinstance(keep, str) else f"Training with only {keep:.0%} of the `{effect['group']}` group's training examples"
    oc = effect.get("other_class_accuracy")
    where = (f" On the group's {oc['n']} test examples of the relabelled classes, where the planted bias acts, the "
             f"accuracy changes by {oc['difference']:+.3f} [{oc['ci'][0]:+.3f}, {oc['ci'][1]:+.3f}] (shown, not the "
             "detection criterion: the chapter's claims are about group accuracy).") if oc else ""
    return (f"{what} changes that group's test accuracy by {d['difference']:+.3f} (95% example-level paired interval "
            f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], "
            f"{effect['group_test_examples']} test examples of the group over seeds {effect['seeds']}); worst-group "
            f"accuracy ({attribute.replace('_', ' ')}; worst groups {', '.join(w['worst']) or 'none'}) changes by "
            f"{w['difference']:+.3f}, seed-level 95% interval {inference.interval_text({'lo': w['ci'][0], 'hi': w['ci'][1]})}. "
            f"The planted effect is {verdict}.{where}")


def control_report(control: list[RunRecord], reference: list[RunRecord], C: dict | None, n_boot: int,
                   glue=None, prefix: str = "", relabel: list[RunRecord] | None = None) -> str:
    """A chapter's positive-control paragraphs from its control runs (down-sampling; ``relabel``: the
    planted label bias, if it ran) and their references (``C``: the profile's ``control`` parameter;
    None or no runs: says that no control ran)."""
    if not C or not (control or relabel):
        return control_reading(None, "", 0)
    out = []
    parts = [("downsample", control, prefix, None)]
    fractions = sorted({r.config["split_design"]["fraction"] for r in relabel or []}, reverse=True)
    for i, f in enumerate(fractions):  # the first (largest) share keeps the plain glue prefix
        parts.append(("relabel", [r for r in relabel if r.config["split_design"]["fraction"] == f],
                      f"{prefix}_relabel" + ("" if i == 0 else f"_{round(100 * f)}"), f))
    for kind, runs, pre, f in parts:
        if runs:
            effect = control_effect(reference, runs, C["attribute"], C["group"], n_boot)
            out.append(f"- **{C['model']}, {C['method']}**: "
                       + control_reading(effect, C["attribute"], control_intervention(C, kind, f), glue, pre))
    return "\n".join(out)


def pilot_table(pilots: list[RunRecord], chapter: list[RunRecord], dataset: str) -> pd.DataFrame:
    """The learning-rate pilots of ``dataset`` and the chapter's own runs of the same models, with
    the validation accuracy of every epoch and of the selected one (lowest learning rate first)."""
    rows = []
    for source, recs in (("pilot", pilots), ("chapter", chapter)):
        for r in recs:
            c, h = r.config, r.meta.get("history", {})
            if c.get("dataset") != dataset:
                continue
            rows.append({"model": c["model"], "method": c["method"], "lr": c["lr"], "epochs": c["epochs"],
                         "tokens": c.get("max_length"), "seed": c["seed"],
                         "val accuracy per epoch": ", ".join("-" if v is None else f"{v:.3f}"
                                                                    for v in h.get("val_accuracy", [])),
                         "selected val accuracy": h.get("selected_val_accuracy"), "record": source})
    t = pd.DataFrame(rows)
    if t.empty:
        return t
    return t.sort_values(["model", "method", "tokens", "lr", "record"], ignore_index=True)


def lr_stability(pilots: list[RunRecord], chapter: list[RunRecord]) -> pd.DataFrame:
    """Whether the learning rate chosen on one seed's validation split is the one every seed's
    validation split would choose: per (model, method, seed) of the chapter's runs, every learning
    rate tried on that seed with the same dataset, epochs, input length and split (pilot runs and the
    chapter's own), the one with the best selected validation accuracy (ties: the chapter's), and
    whether it is the chapter's. Seeds with only the chapter's learning rate are left out."""
    def key(c):
        return (c["dataset"], json.dumps(c["dataset_kwargs"], sort_keys=True), c["model"], c["method"], c["seed"],
                c["epochs"], c.get("max_length"), c.get("rank"), c.get("layer_fraction", 1.0),
                (c.get("split_design") or {}).get("kind"))
    tried: dict = {}
    for r in list(pilots) + list(chapter):
        h = r.meta.get("history", {})
        if h.get("selected_val_accuracy") is not None:
            tried.setdefault(key(r.config), {})[float(r.config["lr"])] = float(h["selected_val_accuracy"])
    rows = []
    for r in chapter:
        c, lrs = r.config, tried.get(key(r.config), {})
        if len(lrs) < 2:
            continue
        best = max(lrs.values())
        pick = float(c["lr"]) if lrs[float(c["lr"])] == best else max(lrs, key=lrs.get)
        rows.append({"model": c["model"], "method": c["method"], "seed": c["seed"],
                     "val accuracy by lr": ", ".join(f"{lr:g}: {v:.3f}" for lr, v in sorted(lrs.items())),
                     "chapter lr": float(c["lr"]), "best on this seed": pick, "same": pick == float(c["lr"])})
    t = pd.DataFrame(rows)
    if t.empty:
        return t
    t = t.sort_values(["model", "method", "seed"], ignore_index=True)
    return t.assign(**{c: t[c].map(lambda v: f"{v:g}") for c in ("chapter lr", "best on this seed")})  # rates as written


def beyond_choice(pilots: list[RunRecord], attribute: str) -> pd.DataFrame:
    """The pilot of the other methods (``chapters.beyond_configs``): per (model, method) every value
    tried on the pilot seed (a learning rate; for the FairLoRA-style method its penalty), the
    selected validation accuracy and the validation worst-group accuracy (over the groups with at
    least 30 validation examples, the small-group rule when these pilots chose; every group if fewer than two have), and the value chosen: the best validation
    accuracy for a learning rate, the best validation worst-group accuracy for a penalty (ties: the
    smaller value)."""
    rows = []
    for r in pilots:
        c, h = r.config, r.meta.get("history", {})
        p = r.predictions()
        v = p[p["split"] == "val"]
        g = v[f"group_{attribute}"].astype(str)
        ok, _ = metrics_mod.claim_groups(g.to_numpy(), min_n=30)  # the rule when these pilots chose (amendment 8)
        acc = (v["label"] == v["pred"]).groupby(g).mean()
        rows.append({"model": c["model"], "method": c["method"],
                     "value": float(c["penalty"]) if c["method"] == "fairlora" else float(c["lr"]),
                     "lr": float(c["lr"]), "val accuracy": _number(h.get("selected_val_accuracy")),
                     "val worst-group accuracy": float(acc.reindex(ok or list(acc.index)).min()),
                     "trainable": int(r.meta.get("adaptation", {}).get("trainable_params", 0))})
    t = pd.DataFrame(rows)
    if t.empty:
        return t
    t["tuned"] = np.where(t["method"] == "fairlora", "penalty", "lr")
    t = t.sort_values(["model", "method", "value"], ignore_index=True)
    crit = np.where(t["tuned"] == "penalty", t["val worst-group accuracy"], t["val accuracy"])
    t["chosen"] = False
    for _, idx in t.assign(crit=crit).groupby(["model", "method"]).groups.items():
        sub = pd.Series(crit, index=t.index)[idx]
        t.loc[sub.idxmax(), "chosen"] = True  # idxmax: the first (smallest value) of ties
    return t


def beyond_pilot_note(table: pd.DataFrame, beyond: dict) -> str:
    """Whether the profile's learning rates and penalty (``beyond``) are the pilot's choice
    (``beyond_choice``): one sentence, naming every method where they are not."""
    if table.empty:
        return "No pilot of the other methods on this profile."
    off = []
    for _, r in table[table["chosen"]].iterrows():
        used = beyond.get("penalty") if r["method"] == "fairlora" else beyond.get("lrs", {}).get(r["method"])
        if used is None or float(used) != float(r["value"]):
            off.append(f"{r['method']} (profile {used}, pilot {r['value']:g})")
    if off:
        return "The profile does not use the pilot's choice for: " + "; ".join(off) + "."
    return ("The profile's learning rates (and the FairLoRA-style penalty) are the pilot's choices for every method "
            "tuned; group-balanced LoRA uses LoRA's learning rate.")


def beyond_report(records: list[RunRecord], pilots: list[RunRecord], others: list[RunRecord], attribute: str,
                  beyond: dict | None) -> list:
    """What a classification chapter shows of the other methods (``chapters.beyond_configs``): the
    pilot table with the values chosen, whether the profile uses them, and per method (the chapter's
    own on the same model and seeds included) the mean over seeds of accuracy, worst-group accuracy,
    accuracy gap and ECE with the half-width of their seed-level interval and the trainable
    parameters. A list of tables and Markdown strings, in order."""
    if not beyond:
        return ["This profile runs no other methods (`beyond`)."]
    out = []
    pilot_table = beyond_choice(pilots, attribute)
    if len(pilot_table):  # rates as written (1e-4 is not 0.000)
        out.append(pilot_table.assign(value=pilot_table["value"].map("{:g}".format),
                                      lr=pilot_table["lr"].map("{:g}".format)))
    out.append(beyond_pilot_note(pilot_table, beyond))
    same = [r for r in records if r.config["model"] == beyond["model"] and r.config["seed"] in beyond["seeds"]]
    summary = summary_table(same + list(others), attribute)
    summary["method"] = summary["method"].map(methods_mod.label)
    out.append(seed_interval_table(summary, ["method"], ["accuracy", "worst_group_accuracy", "accuracy_gap", "ece"],
                                   "trainable_params"))
    return out


def seed_interval_table(rows: pd.DataFrame, by: list[str], cols: list[str], count: str | None = None) -> pd.DataFrame:
    """Per ``by`` cell (one row per seed in ``rows``): each column's mean over seeds with the
    half-width of its 95% t-interval over seeds ("0.812 ± 0.034"; the mean alone with fewer than 3
    seeds), the seeds, and the mean of ``count``."""
    def cell(x):
        x = x.dropna()
        if len(x) >= inference.MIN_SEEDS:
            s = inference.seed_summary(x.to_numpy(), 0.0)  # the study's seed-level t-interval
            return f"{s['difference']:.3f} ± {(s['hi'] - s['lo']) / 2:.3f}"
        return f"{x.mean():.3f}" if len(x) else ""
    g = rows.groupby(by, sort=False)
    out = g[cols].agg(cell)
    out.insert(0, "seeds", g.size())
    if count:
        out.insert(1, f"{count} (mean)", g[count].mean().round().astype(int))
    return out.reset_index()


def lr_stability_note(table: pd.DataFrame, glue=None, prefix: str = "") -> str:
    """One sentence on ``lr_stability``'s table: on how many (model, method, seed) the seed's own
    validation split picks the chapter's learning rate, and which do not."""
    if table.empty:
        return "No learning-rate pilot on this profile (`lr_pilot`): the learning rates are not checked across seeds."
    same, n = int(table["same"].sum()), len(table)
    if glue is not None:
        glue(f"{prefix}_lr_same", same, display=False)
        glue(f"{prefix}_lr_checked", n, display=False)
    off = table[~table["same"]]
    text = f"On {same} of {n} (model, method, seed) the seed's own validation split picks the chapter's learning rate"
    if not len(off):
        return text + ": the choice is stable across these seeds."
    cases = "; ".join(f"`{mo}` {me} seed {sd} ({b} instead of {c})" for mo, me, sd, b, c in
                      zip(off["model"], off["method"], off["seed"], off["best on this seed"], off["chapter lr"]))
    return (text + f". It does not for {cases}: there the chapter's learning rate is not the best this pilot "
            "found on that seed, and the method may be under-tuned relative to the others.")


def _task_key(c: dict) -> str:
    return json.dumps([c.get("dataset"), c.get("dataset_kwargs"), (c.get("split_design") or {}).get("kind")],
                      sort_keys=True, default=str)


def claim_groups_of(records: list[RunRecord], attribute: str, min_n: int = metrics_mod.MIN_GROUP_N) -> dict:
    """Per task (dataset, its arguments and split design): the groups with at least ``min_n`` test
    examples in every seed's test split (``metrics.claim_groups``) and every group's smallest count."""
    by_task: dict = {}
    for r in records:
        p = r.predictions()
        t = p[p["split"] == "test"]
        by_task.setdefault(_task_key(r.config), []).append(
            pd.DataFrame({"g": t[f"group_{attribute}"].astype(str).to_numpy(), "b": r.config["seed"],
                          "id": t["example_id"].to_numpy()}))
    out = {}
    for key, frames in by_task.items():
        d = pd.concat(frames).drop_duplicates(["b", "id"])
        out[key] = metrics_mod.claim_groups(d["g"], d["b"], min_n)
    return out


def summary_table(records: list[RunRecord], attribute: str) -> pd.DataFrame:
    """One row per run: configuration and headline metrics (test split). Worst group and accuracy gap
    are over the groups with at least ``metrics.MIN_GROUP_N`` test examples in every seed of the task
    (``claim_groups_of``); ``small_groups`` names the others with their smallest count."""
    rows = []
    eligible = claim_groups_of(records, attribute)
    for r in records:
        c, m = r.config, r.metrics
        a = dict(m["attributes"][attribute])
        ok, smallest = eligible[_task_key(c)]
        if set(ok) != set(a["groups"]):
            p = r.predictions()
            t = p[p["split"] == "test"]
            a.update(metrics_mod.group_gap_summary((t["label"] == t["pred"]).to_numpy(),
                                                   t[f"group_{attribute}"].to_numpy(), ok,
                                                   c.get("n_boot", 1000), c["seed"]))
        row = {"run_id": r.run_id, "model": c["model"], "method": c["method"], "seed": c["seed"],
               "rank": c.get("rank", 0 if methods_mod.get(c["method"]).trains == "head" else None),
               "layer_fraction": c.get("layer_fraction", 1.0), "placement": c.get("placement"),
               "trainable_params": r.meta["adaptation"]["trainable_params"],
               "selected_epoch": r.meta["history"]["selected_epoch"],
               "val_accuracy": r.meta["history"]["selected_val_accuracy"],
               "accuracy": m["accuracy"]["value"], "accuracy_lo": m["accuracy"]["ci"][0],
               "accuracy_hi": m["accuracy"]["ci"][1],
               "worst_group_accuracy": a["worst_group_accuracy"]["value"],
               "worst_group": a["worst_group"], "accuracy_gap": a["accuracy_gap"]["value"],
               "accuracy_gap_lo": a["accuracy_gap"]["ci"][0], "accuracy_gap_hi": a["accuracy_gap"]["ci"][1],
               "ece": m["ece"]["value"], "ece_gap": a["ece_gap"], "wall_seconds": r.meta["wall_seconds"],
               "small_groups": ", ".join(f"{g} ({n})" for g, n in sorted(smallest.items()) if g not in ok) or "-"}
        if "demographic_parity_difference" in a:
            row["dp_difference"] = a["demographic_parity_difference"]
            row["eo_difference"] = a["equalized_odds_difference"]
        rows.append(row)
    return pd.DataFrame(rows)


def group_size_note(summary: pd.DataFrame) -> str:
    """One sentence on which groups the worst-group numbers of ``summary`` (``summary_table``) leave out."""
    small = sorted(set(summary["small_groups"]) - {"-"})
    rule = (f"Worst-group accuracy and accuracy gap are computed over the groups with at least "
            f"{metrics_mod.MIN_GROUP_N} test examples in every seed")
    if not small:
        return rule + "; every group qualifies here."
    return rule + "; left out (smallest test count in any seed): " + "; ".join(small) + \
        ". Their accuracies are in the per-group figure, with their counts, and carry no claim."


def mean_sd_table(summary: pd.DataFrame, cols: list[str], by=("model", "method")) -> pd.DataFrame:
    """Per (model, method): "mean ± sd (n)" over seeds for each metric, as compact strings."""
    rows = []
    for key, g in summary.groupby(list(by), sort=False):
        row = dict(zip(by, key))
        for c in cols:
            v = g[c].dropna()
            if c == "trainable_params":
                row[c] = f"{int(v.iloc[0]):,}"
            elif len(v) > 1:
                row[c] = f"{v.mean():.3f} ± {v.std():.3f}"
            else:
                row[c] = f"{v.mean():.3f}" if len(v) else "n/a"
        row["seeds"] = g["seed"].nunique()
        rows.append(row)
    return pd.DataFrame(rows).rename(columns=lambda c: c.replace("_", " "))


def predictions(records: list[RunRecord]) -> pd.DataFrame:
    """All runs' prediction rows with their model, method, seed and run id."""
    frames = [r.predictions().assign(model=r.config["model"], method=r.config["method"],
                                     seed=r.config["seed"], run_id=r.run_id) for r in records]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def per_seed_differences(preds: pd.DataFrame, model: str, attribute: str, a: str = "lora", b: str = "full") -> pd.DataFrame:
    """Method ``a`` minus ``b`` per seed (the unit of inference, ``lorafair.inference``): test accuracy
    and ECE, and over the groups that can carry a claim in every seed (``metrics.claim_groups``) the
    worst-group accuracy and the accuracy gap (best minus worst group), with each method's worst group
    and the smaller of their test counts. The methods of a seed share its split, so each row is a
    paired difference. Empty if no seed has both methods.

    Calibration (amendment 6 of book/design.md): ``ece`` raw; ``ece_ts`` after temperature scaling,
    each run with its own temperature fitted on its own validation rows (``metrics.fit_temperature``;
    T = 1 where ``preds`` holds no validation rows); ``calibration_gap`` (temperature-scaled) and
    ``calibration_gap_raw``: the largest minus the smallest eligible group's ECE."""
    t = preds[(preds["split"] == "test") & (preds["model"] == model)]
    col = f"group_{attribute}"
    A, B = (t[t["method"] == m].set_index(["seed", "example_id"]) for m in (a, b))
    common = A.index.intersection(B.index)
    if not len(common):
        return pd.DataFrame()
    A, B = A.loc[common], B.loc[common]
    val = preds[(preds["split"] == "val") & (preds["model"] == model)]
    eligible, _ = metrics_mod.claim_groups(A[col].astype(str).to_numpy(), A.index.get_level_values("seed"))
    rows = []
    for seed in sorted(set(common.get_level_values("seed"))):
        ca = (A.loc[seed, "label"] == A.loc[seed, "pred"])
        cb = (B.loc[seed, "label"] == B.loc[seed, "pred"])
        g = A.loc[seed, col].astype(str)
        scaled = {m: metrics_mod.temperature_scaled(
            X.loc[seed], metrics_mod.fit_temperature(val[(val["method"] == m) & (val["seed"] == seed)]))
            for m, X in ((a, A), (b, B))}
        row = {"seed": int(seed), "n": int(len(ca)), "accuracy": float(ca.mean() - cb.mean()),
               "ece": metrics_mod.ece(A.loc[seed]) - metrics_mod.ece(B.loc[seed]),
               "ece_ts": metrics_mod.ece(scaled[a]) - metrics_mod.ece(scaled[b])}
        if len(eligible) >= 2:
            row.update(calibration_gap=metrics_mod.calibration_gap(scaled[a], g, eligible)
                       - metrics_mod.calibration_gap(scaled[b], g, eligible),
                       calibration_gap_raw=metrics_mod.calibration_gap(A.loc[seed], g, eligible)
                       - metrics_mod.calibration_gap(B.loc[seed], g, eligible))
        if eligible:
            acc_a = ca.groupby(g).mean().reindex(eligible)
            acc_b = cb.groupby(g).mean().reindex(eligible)
            wa, wb = acc_a.idxmin(), acc_b.idxmin()
            row.update(worst_group_accuracy=float(acc_a[wa] - acc_b[wb]), worst_group_a=wa, worst_group_b=wb,
                       worst_n=int(min((g == wa).sum(), (g == wb).sum())),
                       accuracy_gap=float((acc_a.max() - acc_a[wa]) - (acc_b.max() - acc_b[wb])))
        rows.append(row)
    return pd.DataFrame(rows)


def group_ece_table(records: list[RunRecord], attribute: str, groups: list[str], n_sim: int = 100) -> pd.DataFrame:
    """Per (model, method) and group: the test ECE and the ECE expected of a perfectly calibrated
    model with the same probabilities at that size (``metrics.ece_if_calibrated``), each the mean
    over seeds, as "observed (expected)"; with the group's test count per seed."""
    rows = []
    for r in records:
        p = r.predictions()
        t = p[p["split"] == "test"]
        for g, sub in t.groupby(f"group_{attribute}"):
            rows.append({"model": r.config["model"], "method": r.config["method"], "group": str(g), "n": len(sub),
                         "ece": metrics_mod.ece(sub), "expected": metrics_mod.ece_if_calibrated(sub, n_sim, r.config["seed"])})
    m = pd.DataFrame(rows).groupby(["model", "method", "group"], sort=False)[["ece", "expected", "n"]].mean()
    cell = m.apply(lambda x: f"{x['ece']:.3f} ({x['expected']:.3f})", axis=1).unstack("group")
    n = m["n"].groupby("group").mean().round().astype(int)
    return cell[[g for g in groups if g in cell]].rename(columns=lambda g: f"{g} (n≈{n[g]})")


#: the metrics ``per_seed_differences`` pairs, in the order the chapters and the findings show them
PAIRED_METRICS = ("accuracy", "worst_group_accuracy", "accuracy_gap", "ece", "ece_ts", "calibration_gap",
                  "calibration_gap_raw")


def paired_table(preds: pd.DataFrame, models: list[str], attribute: str,
                 against: tuple = ("full", "head")) -> tuple[pd.DataFrame, dict]:
    """The LoRA-minus-other table shown in the chapters, read with the seed as the unit: per-seed
    paired differences (``per_seed_differences``), their mean, seed-level 95% t-interval and
    unadjusted p-value (``inference.seed_summary``), and for the group metrics every group that was
    either method's worst on some seed, with the smallest test count among them. Returns the table and, by (model, other), the
    summary of each metric. The verdicts, adjusted for multiplicity, are the findings chapter's."""
    rows, diffs = [], {}
    for mo in models:
        for other in against:
            d = per_seed_differences(preds, mo, attribute, "lora", other)
            if d.empty:
                continue
            diffs[(mo, other)] = {}
            for metric in PAIRED_METRICS:
                if metric not in d:
                    continue
                s = inference.seed_summary(d[metric].to_numpy(), inference.margin(metric))
                s["per_seed"] = dict(zip(d["seed"], d[metric]))
                diffs[(mo, other)][metric] = s
                worst = ""
                if metric in ("worst_group_accuracy", "accuracy_gap"):
                    names = sorted(set(d["worst_group_a"]) | set(d["worst_group_b"]))
                    worst = f"{', '.join(names)} ({int(d['worst_n'].min())})"
                rows.append({"model": mo, "LoRA minus": other, "metric": metrics_mod.get_metric(metric).label,
                             "per seed": ", ".join(f"{v:+.3f}" for v in d[metric]),
                             "mean [95% seed CI]": f"{s['difference']:+.3f} {inference.interval_text(s)}",
                             "seeds": s["seeds"], "p (unadjusted)": s["p"], "worst groups (smallest n)": worst})
    return pd.DataFrame(rows), diffs


def neighbour_table(neighbours: pd.DataFrame) -> pd.DataFrame:
    """The chapters' table of learning-rate neighbours (``findings.lr_neighbour_cases``): per model,
    moved method and rate, and metric, the per-seed LoRA-minus-full differences, their mean and
    seed-level 95% interval."""
    rows = []
    for _, c in neighbours.iterrows():
        vals = list(c["per_seed"].values())
        if not vals:
            continue
        s = inference.seed_summary(vals, inference.margin(c["metric_key"]))
        rows.append({"model": c["model"], "moved": c["lr_neighbour"], "metric": metrics_mod.get_metric(c["metric_key"]).label,
                     "per seed": ", ".join(f"{v:+.3f}" for v in vals),
                     "mean [95% seed CI]": f"{s['difference']:+.3f} {inference.interval_text(s)}", "seeds": s["seeds"]})
    return pd.DataFrame(rows)


def reading(summary: pd.DataFrame, diffs: dict, models: list[str], methods: list[str], prefix: str,
            glue=None) -> list[str]:
    """Bullet points that state what the run records show (and glue the numbers they quote)."""
    means = summary.groupby(["model", "method"])[["accuracy", "worst_group_accuracy", "accuracy_gap"]].mean()
    lines = []
    for mo in models:
        present = [me for me in methods if (mo, me) in means.index]
        if not present:
            continue
        n_seeds = summary[summary["model"] == mo]["seed"].nunique()
        txt = (f"- **{mo}** ({n_seeds} seed{'s' if n_seeds > 1 else ''}): mean test accuracy "
               + ", ".join(f"{me} {means.loc[(mo, me), 'accuracy']:.3f}" for me in present)
               + "; mean worst-group accuracy "
               + ", ".join(f"{me} {means.loc[(mo, me), 'worst_group_accuracy']:.3f}" for me in present) + ".")
        for other in ("full", "head"):
            if (mo, other) not in diffs:
                continue
            d = diffs[(mo, other)]
            parts = [f"{label} {d[k]['difference']:+.3f} {inference.interval_text(d[k])}"
                     for k, label in (("accuracy", "accuracy"), ("worst_group_accuracy", "worst-group accuracy")) if k in d]
            txt += f" LoRA minus {other}, mean of the per-seed differences with its seed-level 95% interval: " + \
                "; ".join(parts) + "."
            if glue:
                for k, key in (("accuracy", "accuracy"), ("worst_group_accuracy", "worst_group")):
                    if k in d:
                        glue(f"{prefix}_{mo}_lora_minus_{other}_{key}", round(d[k]["difference"], 4), display=False)
        if glue:
            for me in present:
                glue(f"{prefix}_{mo}_{me}_accuracy", round(float(means.loc[(mo, me), "accuracy"]), 4), display=False)
                glue(f"{prefix}_{mo}_{me}_worst_group_accuracy",
                     round(float(means.loc[(mo, me), "worst_group_accuracy"]), 4), display=False)
        lines.append(txt)
    worst = summary.groupby("worst_group").size().sort_values(ascending=False)
    lines.append(f"- Across all {len(summary)} runs, the worst group was "
                 + ", ".join(f"`{g}` in {n}" for g, n in worst.items()) + " runs.")
    return lines


def _number(v) -> float:
    """A stored number, or NaN where the record holds null (standard JSON has no NaN)."""
    return float("nan") if v is None else float(v)


def fewer_seeds(preds: pd.DataFrame, models: list[str], attribute: str, keep: list[int]) -> pd.DataFrame:
    """An exercise's solution: the chapter's LoRA-minus-full differences (``paired_table``) over all
    its seeds beside the same differences over the seeds in ``keep`` only, with how much wider the
    seed-level 95% interval gets."""
    _, all_d = paired_table(preds, models, attribute, against=("full",))
    _, few_d = paired_table(preds[preds["seed"].isin(keep)], models, attribute, against=("full",))
    rows = []
    for key, metrics in all_d.items():
        for metric, s in metrics.items():
            f = few_d.get(key, {}).get(metric)
            if f is None:
                continue
            wide = (f["hi"] - f["lo"]) / (s["hi"] - s["lo"]) if s["hi"] > s["lo"] else float("nan")
            rows.append({"model": key[0], "metric": metrics_mod.get_metric(metric).label,
                         f"{s['seeds']} seeds": f"{s['difference']:+.3f} {inference.interval_text(s)}",
                         f"{f['seeds']} seeds": f"{f['difference']:+.3f} {inference.interval_text(f)}",
                         "interval width, fewer / all": wide,
                         "excludes 0 (all / fewer)": f"{'yes' if s['lo'] > 0 or s['hi'] < 0 else 'no'} / "
                                                     f"{'yes' if f['lo'] > 0 or f['hi'] < 0 else 'no'}"})
    return pd.DataFrame(rows)


def fewer_seeds_reading(fs: pd.DataFrame, n_all: int, n_few: int) -> str:
    """The solution's sentence for a ``fewer_seeds`` table: how much wider the intervals get and how
    many differences lose an interval that excluded zero."""
    from scipy import stats

    if fs.empty:
        return "This profile has no LoRA-minus-full differences to compare."
    w = fs["interval width, fewer / all"]
    excl = fs["excludes 0 (all / fewer)"]
    n_excl = int(excl.str.startswith('yes').sum())
    return (f"Over {n_few} seeds instead of {n_all}, the seed-level intervals are on average {w.mean():.1f} times as "
            f"wide (range {w.min():.1f} to {w.max():.1f}): the t critical value grows "
            f"({stats.t.ppf(0.975, max(n_few - 1, 1)):.2f} at {n_few} seeds against "
            f"{stats.t.ppf(0.975, max(n_all - 1, 1)):.2f} at {n_all}) and the seed SD is estimated from fewer "
            f"differences. Of the {n_excl} {'difference' if n_excl == 1 else 'differences'} whose interval excluded zero "
            f"with all seeds, {int((excl == 'yes / no').sum())} no longer do with fewer; the minimum detectable effect "
            "grows the same way.")
