"""Every chapter's grid of run configurations, built from its resolved parameters (``profiles``).

``configs(chapter, P)`` returns the chapter's named groups of configurations (for example
``main``, ``rank_sweep`` and ``second_task`` for the vision chapter); ``runs(chapter, P)`` all of them
once. So a chapter's runs can be listed, counted and launched without executing its notebook
(``lorafair plan``), and the notebooks only read the records. The findings chapter trains nothing.
"""

from __future__ import annotations

from . import estimate
from . import methods as methods_mod
from . import spec as spec_mod
from . import splits
from .errors import LorafairError, choose
from .experiments import classification_config
from .generation.runs import probe_config, pronoun_config
from .profiles import SHADOW_SEEDS, per_model, seeds_for
from .runs import run_id

CHAPTERS = ("vision_classification", "llm_classification", "membership_inference", "generation_fairness",
            "performance", "findings", "records")


def _classification(P: dict, experiment: str, max_length=None):
    def config(model, method, seed, dataset_kwargs=None, dataset=None, split_design=None, lr=None, epochs=None,
               design=None, **adapter):
        # ``design``: an earlier design's dataset_kwargs, split_fractions and min_test_group (a pilot kept from it)
        Q = dict(P, **design) if design else P
        split_design = split_design or unit_design(Q)
        return classification_config(experiment, P["profile"], dataset or P["dataset"],
                                     dataset_kwargs or Q["dataset_kwargs"], model, method, seed,
                                     per_model(P["epochs"], model, method) if epochs is None else epochs,
                                     per_model(P["lrs"], model, method) if lr is None else lr,
                                     P["batch_size"], n_boot=P["n_boot"], max_length=max_length,
                                     split_design=split_design, split_fractions=split_fractions(Q),
                                     where=f"{experiment} (its parameters)", **adapter)
    return config


def lr_pilot_configs(config, P: dict, experiment: str, seeds_of) -> list[dict]:
    """The learning-rate pilot (``P["lr_pilot"]``: ``factors``, ``seeds``, optional ``models`` and
    ``methods``): every model and method at its chosen learning rate times each factor, on each pilot seed that the model
    runs, stored apart from the chapter's runs (``pilot_lr_<experiment>``), so that the chapter can show
    whether each seed's validation split would choose the same learning rate
    (``experiments.lr_stability``)."""
    lp = P.get("lr_pilot")
    if not lp:
        return []
    out = []
    for me in lp.get("methods") or []:
        choose("lr_pilot method", me, P["methods"])
    for mo in lp.get("models") or P["models"]:
        choose("lr_pilot model", mo, P["models"])
        for me in lp.get("methods") or P["methods"]:
            lr = per_model(P["lrs"], mo, me)
            for f in lp["factors"]:
                for s in [s for s in lp["seeds"] if s in seeds_of(mo)]:
                    c = config(mo, me, s, lr=float(f"{lr * f:.3g}"))
                    out.append(c.replace(experiment=f"pilot_lr_{experiment}"))
    return out


def beyond_configs(config, P: dict, experiment: str) -> dict[str, list[dict]]:
    """The other parameter-efficient and fairness-aware methods (``P["beyond"]``: ``model``,
    ``methods``, ``seeds``, ``lrs`` {method: lr}, ``penalty``, and ``pilot`` {``seed``, ``lrs``
    {method: [grid]}, ``penalties`` [grid]}) on the chapter's main case, each seed paired with the
    chapter's runs of the same seed; and their pilot (``pilot_beyond_<experiment>``): every method at
    each learning rate of its grid, and the FairLoRA-style penalty over its grid at LoRA's learning
    rate, on the pilot seed. The chosen values (``lrs``, ``penalty``) are the pilot's best validation
    accuracy (the penalty: best validation worst-group accuracy), checked by
    ``experiments.beyond_choice``."""
    b = P.get("beyond")
    if not b:
        return {"methods": [], "methods_pilot": []}
    mo = b["model"]
    choose("beyond model", mo, P["models"])

    def settings(me, penalty=None):
        return {"settings": {"penalty": float(b["penalty"] if penalty is None else penalty)}} if me == "fairlora" else {}

    def lr_of(me):
        if me in b["lrs"]:
            return float(b["lrs"][me])
        return float(per_model(P["lrs"], mo, "lora"))  # the LoRA objectives at LoRA's learning rate
    epochs = per_model(P["epochs"], mo, "lora")  # every method trains as long as LoRA
    main = [config(mo, me, s, lr=lr_of(me), epochs=epochs, **settings(me)) for me in b["methods"] for s in b["seeds"]]
    pilot, pl = [], b["pilot"]
    earlier = pl.get("design")  # the pilot's records were computed on an earlier design (kept as they are)
    for me in b["methods"]:
        for lr in pl["lrs"].get(me, []):
            pilot.append(config(mo, me, pl["seed"], lr=float(lr), epochs=epochs, design=earlier, **settings(me)))
        if me == "fairlora":
            pilot += [config(mo, me, pl["seed"], lr=lr_of(me), epochs=epochs, design=earlier, **settings(me, w))
                      for w in pl["penalties"]]
    pilot = [c.replace(experiment=f"pilot_beyond_{experiment}") for c in pilot]
    return {"methods": main, "methods_pilot": pilot}


def rank_sweep_configs(make_config, model: str, seed: int, ranks, placements, with_head: bool = True) -> list[dict]:
    """A LoRA rank sweep: rank 0 (head-only), integer ranks, and each fractional rank (rank 1 on a
    fraction of the layers) at every placement."""
    cfgs = [make_config(model, "head", seed)] if with_head else []
    for r in ranks:
        if r >= 1:
            cfgs.append(make_config(model, "lora", seed, rank=r))
        else:
            cfgs += [make_config(model, "lora", seed, rank=r, placement=pl) for pl in placements]
    return cfgs


PLACEMENT_ORDER = {"front": 0, "back": 0.001, "random": 0.002}


def rank_sweep_label(cfg: dict) -> tuple[str, float]:
    """The x-axis label and sort key of a rank-sweep run, read from its configuration."""
    if methods_mod.get(cfg["method"]).trains == "head":
        return "0 (head)", 0.0
    frac = cfg.get("layer_fraction", 1.0)
    if frac < 1:
        return f"1 on {frac:g} of layers ({cfg['placement']})", frac / 10 + PLACEMENT_ORDER[cfg["placement"]]
    return f"{int(cfg['rank'])}", float(cfg["rank"])


def split_fractions(P: dict) -> tuple:
    """The chapter's train / validation / test fractions (``split_fractions``; default 60 / 20 / 20)."""
    return tuple(P.get("split_fractions") or (0.6, 0.2, 0.2))


def unit_design(P: dict) -> dict | None:
    """The split design of a chapter whose examples come in units (``split_unit``, e.g. the person drawing an
    image renders): whole units on one side of every split, each split capped at ``split_caps`` examples
    where given. None: examples are split one by one."""
    if not P.get("split_unit"):
        return None
    design = {"kind": "by_unit", "unit": P["split_unit"]}
    if P.get("split_caps"):  # checked here, when the grid is built, before any run trains
        design["caps"] = dict(sorted(splits.check_caps(P["split_caps"]).items()))
    if P.get("min_test_group"):  # the test split topped up from the dataset's reserve renderings
        if not (P.get("dataset_kwargs") or {}).get("test_reserve"):
            raise LorafairError(f"min_test_group {P['min_test_group']} needs reserve test renderings: "
                                "set dataset_kwargs.test_reserve to 1 or more")
        design["min_test_group"] = int(P["min_test_group"])
    return design


def control_configs(config, P: dict, seeds) -> list[dict]:
    """The positive control (``P["control"]``): the named group thinned to ``keep`` of its training
    examples, one run per seed, for comparison with the same model, method and seed on the full split."""
    c = P.get("control")
    if not c:
        return []
    design = {"kind": "downsample", "attribute": c["attribute"], "group": str(c["group"]), "keep": float(c["keep"])}
    if unit_design(P):
        design["base"] = unit_design(P)
    return [config(c["model"], c["method"], s, split_design=design) for s in c.get("seeds") or seeds]


def relabel_control_configs(config, P: dict, seeds) -> list[dict]:
    """The second positive control (``P["control"]["relabel"]``, optional): a planted label bias, a
    ``fraction`` (or each of ``fractions``) of the group's training examples of other classes relabelled
    ``to_label``, one run per seed, compared with the same references as the down-sampling control."""
    c = P.get("control")
    if not c or not c.get("relabel"):
        return []
    r = c["relabel"]
    if ("fraction" in r) == ("fractions" in r):
        raise LorafairError(f"control.relabel needs exactly one of fraction or fractions, got {sorted(r)}")
    out = []
    for fraction in r.get("fractions") or [r["fraction"]]:
        design = {"kind": "relabel", "attribute": c["attribute"], "group": str(c["group"]),
                  "fraction": float(fraction), "to_label": int(r["to_label"])}
        if unit_design(P):
            design["base"] = unit_design(P)
        out += [config(c["model"], c["method"], s, split_design=design) for s in c.get("seeds") or seeds]
    return out


def control_references(config, P: dict, seeds) -> list[dict]:
    """The runs the control is compared with (the same model, method and seeds, standard split)."""
    c = P.get("control")
    return [config(c["model"], c["method"], s) for s in c.get("seeds") or seeds] if c else []


def vision_classification(P: dict) -> dict[str, list[dict]]:
    config = _classification(P, "vision_classification")
    s0 = P["seeds"][0]
    second = dict(P["dataset_kwargs"], task=P["second_task"])
    if P["second_task_n"]:
        second["n"] = P["second_task_n"]
    cs = seeds_for(P, P["control"]["model"]) if P.get("control") else []
    return {"main": [config(mo, me, s) for mo in P["models"] for me in P["methods"] for s in seeds_for(P, mo)],
            "rank_sweep": rank_sweep_configs(config, P["rank_sweep_model"], s0, P["ranks"], P["placements"],
                                             "head" in P["methods"]),
            "second_task": [config(P["models"][0], me, s, second) for me in P["methods"]
                            for s in P.get("second_task_seeds") or [s0]],
            "control": control_configs(config, P, cs),
            "control_relabel": relabel_control_configs(config, P, cs),
            "control_reference": control_references(config, P, cs),
            "lr_pilot": lr_pilot_configs(config, P, "vision", lambda m: seeds_for(P, m)),
            **beyond_configs(config, P, "vision")}


def powered_design(T: dict) -> dict:
    """The ``sized`` split design of the powered task (``P["powered"]``)."""
    return {"kind": "sized", "sizes": dict(sorted(splits.check_caps(dict(T["sizes"])).items())),
            "min_test_group": int(T["min_test_group"]), "pools": [float(x) for x in T["pools"]]}


def powered_configs(P: dict, experiment: str) -> dict[str, list[dict]]:
    """The powered text task (``P["powered"]``: a large dataset whose test split is sized for its
    small groups) and its control planted at the margin: a ``fraction`` of one group's training
    examples of other classes relabelled ``to_label``, on every seed, compared with the same method
    and seed on the unplanted split (a run of the ``powered`` group); one control per fraction in
    ``fractions``."""
    T = P.get("powered")
    if not T:
        return {"powered": [], "powered_control": [], "powered_lr_pilot": []}
    design = powered_design(T)

    def config(method, seed, split_design, lr=None):
        return classification_config(experiment, P["profile"], T["dataset"], T["dataset_kwargs"], T["model"], method,
                                     seed, T["epochs"], lr if lr is not None else per_model(T["lrs"], T["model"], method),
                                     P["batch_size"], n_boot=P["n_boot"], max_length=T["max_length"],
                                     split_design=split_design, where=f"{experiment} (parameter powered)")
    main = [config(me, s, design) for me in T["methods"] for s in T["seeds"]]
    lp = T.get("lr_pilot") or {}
    pilot = []
    for me, rates in (lp.get("lrs") or {}).items():
        choose("powered lr_pilot method", me, T["methods"])
        for s in lp["seeds"]:
            choose("powered lr_pilot seed", s, T["seeds"])
        pilot += [config(me, s, design, lr=float(lr)).replace(experiment=f"pilot_lr_{experiment.split('_')[0]}")
                  for lr in rates for s in lp["seeds"]]
    c = T.get("control")
    control = []
    if c:
        choose("powered control method", c["method"], T["methods"])
        for fraction in c["fractions"]:
            planted = {"kind": "relabel", "attribute": c["attribute"], "group": str(c["group"]),
                       "fraction": float(fraction), "to_label": int(c["to_label"]), "base": design}
            control += [config(c["method"], s, planted) for s in T["seeds"]]
    return {"powered": main, "powered_control": control, "powered_lr_pilot": pilot}


def llm_classification(P: dict) -> dict[str, list[dict]]:
    config = _classification(P, "llm_classification", P["max_length"])
    mo = P["rank_sweep_model"]
    m0 = P["models"][0]
    return {"main": [config(m, me, s) for m in P["models"] for me in P["methods"] for s in seeds_for(P, m)],
            "rank_sweep": rank_sweep_configs(config, mo, seeds_for(P, mo)[0], P["ranks"], P["placements"],
                                             "head" in P["methods"]),
            "second_dataset": [config(m0, me, seeds_for(P, m0)[0], P["second_dataset_kwargs"], P["second_dataset"])
                               for me in P["methods"]] if P.get("second_dataset") else [],
            "control": control_configs(config, P, seeds_for(P, P["control"]["model"]) if P.get("control") else []),
            "control_relabel": relabel_control_configs(config, P, seeds_for(P, P["control"]["model"])
                                                       if P.get("control") else []),
            "control_reference": control_references(config, P, seeds_for(P, P["control"]["model"])
                                                    if P.get("control") else []),
            "lr_pilot": lr_pilot_configs(config, P, "llm", lambda m: seeds_for(P, m)),
            **powered_configs(P, "llm_classification"),
            **beyond_configs(config, P, "llm")}


def shadow_seeds(P: dict) -> list[int]:
    if P["n_shadows"] > len(SHADOW_SEEDS):
        raise LorafairError(f"n_shadows is at most {len(SHADOW_SEEDS)} (the original study's shadow seeds), "
                            f"got {P['n_shadows']}")
    return SHADOW_SEEDS[: P["n_shadows"]]


def _mia_config(task: dict, P: dict, method: str, run_seed: int, design: dict, select: str, epochs=None) -> dict:
    if task.get("split_unit"):
        design = {**design, "unit": task["split_unit"]}
    return classification_config(
        "membership_inference", P["profile"], task["dataset"], task["dataset_kwargs"], task["model"], method,
        run_seed, task["epochs"] if epochs is None else epochs, task["lrs"][method], P["batch_size"],
        n_boot=P["n_boot"], max_length=task.get("max_length"), split_design=design, select=select,
        where=f"membership_inference task {task['name']!r}")


def mia_variant_configs(task: dict, P: dict, seed: int) -> dict[str, tuple[dict, list[dict]]]:
    """The task's extra targets (``task["variants"]``), each attacked on the same members and
    non-members as the main targets: {name: (target, shadows)}. A variant sets ``method``,
    ``epochs`` and ``select`` (``last``: no checkpoint selection); with ``shadows: true`` its LiRA
    shadows are trained the same way (same method and epochs, last checkpoint), else it is attacked
    by the shadow-free loss attack only (empty list).

    - the positive control (``role: control``): a target trained to over-fit (more epochs, no
      selection), which the attack must find leakier than the main target of its method;
    - the utility-matched target (``role: matched``): trained for as long as makes its validation
      accuracy comparable with the other method's main target."""
    out = {}
    for v in task.get("variants") or []:
        choose("variant role", v.get("role"), ("control", "matched"))
        choose("variant method", v["method"], P["methods"])
        choose("variant select", v.get("select", "last"), ("last", "best_val"))
        target = _mia_config(task, P, v["method"], seed, {"kind": "mia_target", "seed": seed},
                             v.get("select", "last"), v["epochs"])
        shadows = [_mia_config(task, P, v["method"], s, {"kind": "mia_shadow", "seed": seed, "shadow_seed": s},
                               "last", v["epochs"]) for s in shadow_seeds(P)] if v.get("shadows") else []
        out[v["name"]] = (target, shadows)
    return out


def mia_task_configs(task: dict, P: dict, seed: int) -> tuple[dict, dict]:
    """One attacked task and seed: a target per method (the chapter's ``methods``, then the task's
    ``extra_methods``; best-validation checkpoint) and, per target method, the shadows LiRA uses against it (last checkpoint): trained with the target's own method
    (``shadow_methods: matched``) or LoRA for every target (``lora``); each run on its
    membership-inference split (``lorafair.splits``). The shadows of different methods train on the
    same halves of the pool."""
    def cfg(method, run_seed, design, select):
        return _mia_config(task, P, method, run_seed, design, select)

    choose("shadow_methods", P.get("shadow_methods", "lora"), ("matched", "lora"))
    methods = list(P["methods"]) + [m for m in task.get("extra_methods") or [] if m not in P["methods"]]
    targets = {m: cfg(m, seed, {"kind": "mia_target", "seed": seed}, "best_val") for m in methods}
    shadows = {m: [cfg(m if P.get("shadow_methods") == "matched" else "lora", s,
                       {"kind": "mia_shadow", "seed": seed, "shadow_seed": s}, "last") for s in shadow_seeds(P)]
               for m in methods}
    return targets, shadows


def membership_inference(P: dict) -> dict[str, list[dict]]:
    out = []
    for task in P["tasks"]:
        for seed in P["seeds"]:
            targets, shadows = mia_task_configs(task, P, seed)
            out += list(targets.values()) + [c for m in shadows for c in shadows[m]]
            for target, vshadows in mia_variant_configs(task, P, seed).values():
                out += [target] + vshadows
    return {"runs": out}


def generation_fairness(P: dict) -> dict[str, list[dict]]:
    """Pronoun runs (every method and training set per seed; the base model per seed too, since the
    test frames are drawn per seed), probe runs (the base model once: its probe texts do not depend on
    the seed) and the probe's positive control (``probe_plant`` planted answers, ``probe_control_method``):
    per model and seed the planted run and its format-matched reference (the same planted questions
    answered at random listed positions).
    ``extra_methods`` ({``methods``, ``train_sets``}): other methods, pronoun runs only, on those training
    sets (the "beyond LoRA" comparison: how far each method moves the base model)."""
    pronoun, probe, probe_control = [], [], []

    def probe_cfg(model, method, seed, plant=None, plant_answers="first"):
        trains = methods_mod.get(method).trains != "nothing"
        return probe_config(P["profile"], P["probe_corpus"], P["probe_corpus_kwargs"], model, method, seed,
                            per_model(P["probe_epochs"], model, method) if trains else 0,
                            per_model(P["probe_lrs"], model, method) if trains else 0.0,
                            P["batch_size"], P["probe_block"], P["n_probe"], P["probe_prompts"], P["max_text_tokens"],
                            rank=P["rank"], n_boot=P["n_boot"], plant=plant, plant_answers=plant_answers)
    extra = P.get("extra_methods") or {}
    for model in P["models"]:
        for seed in P["seeds"]:
            for method in list(P["methods"]) + list(extra.get("methods", [])):
                trains = methods_mod.get(method).trains != "nothing"
                sets = extra["train_sets"] if method in extra.get("methods", []) else P["train_sets"]
                for ts in (sets if trains else [None]):
                    pronoun.append(pronoun_config(
                        P["profile"], P["pronoun_task"], P["pronoun_task_kwargs"], model, method, ts, seed,
                        per_model(P["epochs"], model, method) if trains else 0,
                        per_model(P["lrs"], model, method) if trains else 0.0,
                        P["batch_size"], P["max_length"], P["max_new_tokens"], rank=P["rank"]))
                if method not in extra.get("methods", []) and (trains or seed == P["seeds"][0]):
                    probe.append(probe_cfg(model, method, seed))
            if P.get("probe_plant"):  # the planted run and its format-matched reference (amendment 3)
                probe_control += [probe_cfg(model, P["probe_control_method"], seed, P["probe_plant"], answers)
                                  for answers in ("first", "random")]
    return {"pronoun": pronoun, "probe": probe, "probe_control": probe_control}


def performance(P: dict) -> dict[str, list[dict]]:
    return {"estimates": [estimate.estimate_config(P["profile"], s["workload"], s["precision"], s["batch"],
                                                   s["checkpointing"], seq=P["seq"], scale=P["scale"], gpu=P["gpu"])
                          for s in P["steps"]]}


def findings(P: dict) -> dict[str, list[dict]]:
    return {}


def records(P: dict) -> dict[str, list[dict]]:
    """The records-only page trains nothing: it reads findings.csv and controls.csv."""
    return {}


def configs(chapter: str, P: dict) -> dict[str, list[spec_mod.RunSpec]]:
    """The chapter's named groups of run specifications for the resolved parameters ``P``: every
    configuration passes the one constructor (``spec.build``) here, before any run trains."""
    choose("chapter", chapter, CHAPTERS)
    try:
        grid = globals()[chapter](P)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:  # a shape the parameter checks missed
        raise LorafairError(f"the parameters of {chapter} do not make a grid of runs ({type(e).__name__}: {e}); "
                            f"compare them with `lorafair params {chapter}`") from None
    return {group: [spec_mod.as_spec(c, f"{chapter} ({group})") for c in cfgs] for group, cfgs in grid.items()}


def runs(chapter: str, P: dict) -> list[dict]:
    """Every configuration of a chapter once, in grid order."""
    seen: dict = {}
    for group in configs(chapter, P).values():
        for c in group:
            seen.setdefault(run_id(c), c)
    return list(seen.values())
