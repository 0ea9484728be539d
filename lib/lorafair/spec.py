"""One run specification for every entry point: a frozen, validated configuration.

A run is named by the hash of its configuration (``runs.run_id``), so every value in it must make
sense before anything trains or is stored. ``build(config, where)`` is the one constructor: the
command line (``lorafair run``), the chapters' grids (``chapters.configs``: notebooks, papermill,
``lorafair plan`` and ``sweep``), the JSON lines of ``lorafair exec`` (``launch.read``) and the
sweep runner (``sweep.run_one``, for a configuration that arrives as a plain dict) all call it; the
store and the computations only read the ``RunSpec`` it returns. It checks

- known keys only, per kind of run (classification, pronoun, token bias, estimate): an unknown key
  is an error, never hashed;
- types, finite numbers and ranges (a seed fits the random generators: 0 <= seed < 2**32);
- registry membership by name, never a path: experiment, profile, dataset, model, method, task,
  corpus, split design, probe prompts, workload, precision, GPU;
- the dataset's own arguments against its loader's signature (``dataset_kwargs``); ``cache_dir``
  is not a run setting (it changes where files go, not what is computed: ``LORAFAIR_CACHE``);
- meaningful combinations: a rank only for rank-taking methods, adapter placement only for
  adapters, a method the model's kind supports, a training setting only where something trains.

Each error is one line: where the configuration came from, the key, the bad value and what is valid.
A ``RunSpec`` is a read-only mapping (a ``dict`` that refuses changes; nested mappings and lists
too), so it hashes and serialises exactly as the plain configuration did and run ids of
existing records stay as they are. ``spec.replace(key=value)`` builds a new, validated one.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence

from . import bench
from . import data as data_mod
from . import estimate as estimate_mod
from . import methods as methods_mod
from . import models as models_mod
from . import runs as runs_mod
from . import splits
from .errors import LorafairError
from .generation import probe as probe_mod
from .generation import pronoun as pronoun_mod
from .profiles import PROFILE_NAMES as PROFILES
#: the experiments (run-store folders) a new run may be stored under: the chapters and their pilots
EXPERIMENTS = ("vision_classification", "llm_classification", "membership_inference", "generation_fairness",
               "performance", "pilot_lr_vision", "pilot_lr_llm", "pilot_beyond_vision", "pilot_beyond_llm",
               "pilot_vision", "pilot_llm", "pilot_generation")
#: the largest seed + 1: numpy's legacy generators and ``torch.manual_seed`` of a worker take 32 bits
SEED_LIMIT = 2 ** 32
SELECT = ("best_val", "last")
SPLITS = ("train", "val", "test")


class FrozenDict(dict):
    """A dict that refuses changes after it is built (JSON and pickle see a plain dict)."""

    def __init__(self, *a, **k):
        if getattr(self, "_done", False):
            self._refuse()
        super().__init__(*a, **k)
        object.__setattr__(self, "_done", True)

    def __setattr__(self, name, value):
        self._refuse()

    def _refuse(self, *a, **k):
        raise TypeError(f"a {type(self).__name__} cannot be changed; build a new one (RunSpec.replace)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __reduce__(self):
        return (type(self)._restore, (dict(self),))

    @classmethod
    def _restore(cls, items: dict):
        return cls(items)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


class FrozenList(list):
    """A list that refuses changes after it is built (equal to, and serialised as, a plain list)."""

    def _refuse(self, *a, **k):
        raise TypeError(f"a {type(self).__name__} cannot be changed; build a new one (RunSpec.replace)")

    __setitem__ = __delitem__ = append = extend = insert = pop = remove = clear = sort = reverse = _refuse
    __iadd__ = __imul__ = _refuse

    def __reduce__(self):
        return (FrozenList, (list(self),))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def freeze(value):
    """Nested mappings as FrozenDicts, lists and tuples as FrozenLists."""
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return FrozenList(freeze(v) for v in value)
    return value


def thaw(value):
    """A FrozenDict (or RunSpec) as plain, mutable dicts and lists."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


class RunSpec(FrozenDict):
    """The validated configuration of one run (build it with ``build``)."""

    @property
    def kind(self) -> str:
        return kind_of(self)

    @property
    def experiment(self) -> str:
        return self["experiment"]

    @property
    def run_id(self) -> str:
        """The record's name (``runs.run_id``: the same hash as the plain configuration's)."""
        return runs_mod.run_id(self)

    def replace(self, where: str = "configuration", **changes) -> "RunSpec":
        return build({**thaw(self), **changes}, where)

    def to_dict(self) -> dict:
        return thaw(self)


# ---------------------------------------------------------------- value checks
class _Bad(Exception):
    """A value that does not fit (turned into a LorafairError naming where and which key)."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(lo=None, hi=None, none=False):
    def check(v):
        if v is None and none:
            return
        if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = (f" of at least {lo}" if hi is None else f" from {lo} to {hi}") if lo is not None else ""
            raise _Bad(f"an integer{rng}" + (" or null" if none else ""))
    return check


def number(lo=None, hi=None, lo_open=False, hi_open=False):
    def check(v):
        ok = _is_num(v) and math.isfinite(v)
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if hi_open else v <= hi
        if not ok:
            lo_s = "" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
            hi_s = "" if hi is None else f"{'<' if hi_open else '<='} {hi:g}"
            raise _Bad("a finite number" + (f" {lo_s}" if lo_s else "") + (" and" if lo_s and hi_s else "")
                       + (f" {hi_s}" if hi_s else ""))
    return check


def one_of(choices, what="one of"):
    def check(v):
        c = list(choices() if callable(choices) else choices)
        if not isinstance(v, str) or v not in c:
            raise _Bad(f"{what}: {', '.join(map(str, c))}")
    return check


def boolean(v):
    if not isinstance(v, bool):
        raise _Bad("true or false")


def text(v):
    if not isinstance(v, str) or not v:
        raise _Bad("a non-empty string")


def data_path(v):
    """A data folder or file the run only reads (UTKFace's folder, a local copy of a dataset): a path
    without control characters. Runs never write there."""
    if v is None:
        return
    if not isinstance(v, str) or not v.strip() or any(ord(ch) < 32 for ch in v):
        raise _Bad("a path (a string without control characters) of data the run reads, or null")


def names_list(choices):
    def check(v):
        c = list(choices() if callable(choices) else choices)
        if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) and x in c for x in v):
            raise _Bad(f"a non-empty list of: {', '.join(c)}")
    return check


def _fail(where: str, key: str, value, want: str):
    raise LorafairError(f"{where}: {key} is {_short(value)}: {want}")


def _short(value) -> str:
    try:
        r = repr(thaw(value))
    except RecursionError:
        return f"a {type(value).__name__} nested too deeply to show"
    return r if len(r) <= 80 else r[:77] + "..."


def _check_fields(where: str, cfg: Mapping, fields: dict, prefix: str = "") -> None:
    """Every key known and present where required; each value passes its check."""
    unknown = sorted(set(cfg) - set(fields))
    if unknown:
        _fail(where, prefix + unknown[0], cfg[unknown[0]], "not a setting of this run; valid keys: "
              + ", ".join(sorted(fields)))
    for key, (check, required) in fields.items():
        if key not in cfg:
            if required:
                raise LorafairError(f"{where}: {prefix}{key} is missing (a run of this kind needs it)")
            continue
        try:
            check(cfg[key])
        except _Bad as e:
            _fail(where, prefix + key, cfg[key], str(e))


# ---------------------------------------------------------------- dataset arguments
#: loader arguments that are not run settings: where files are cached (``LORAFAIR_CACHE``)
NOT_SETTINGS = ("cache_dir",)
#: loader arguments that name data to read (never written)
PATH_ARGUMENTS = ("utkface_dir", "source", "mt_gender_dir", "yelp_path")
_RENDER_FIELDS = {"size": integer(8, 512), "low_res": None, "noise": number(0, 1), "max_rotation": number(0, 180),
                  "scale": None, "clutter": integer(0, 100), "occlusion": number(0, 1), "lighting": None}


def _pair(lo, hi):
    def check(v):
        if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_num(x) and math.isfinite(x) and lo <= x <= hi
                                                                       for x in v) and v[0] <= v[1]):
            raise _Bad(f"two numbers [low, high] from {lo:g} to {hi:g}")
    return check


_RENDER_FIELDS.update(low_res=_pair(4, 512), scale=_pair(0.05, 1), lighting=_pair(0, 10))


def _render(v):
    if v is None:
        return
    if not isinstance(v, Mapping):
        raise _Bad("a mapping of rendering settings: " + ", ".join(_RENDER_FIELDS))
    bad = sorted(set(v) - set(_RENDER_FIELDS))
    if bad:
        raise _Bad(f"a mapping of rendering settings; {bad[0]!r} is none of: {', '.join(_RENDER_FIELDS)}")
    for k, check in _RENDER_FIELDS.items():
        if k in v:
            try:
                check(v[k])
            except _Bad as e:
                raise _Bad(f"rendering setting {k} must be {e}") from None


#: checks of the loaders' arguments by name (every loader argument must have one)
ARGUMENT_CHECKS = {
    # at least enough examples for three stratified splits; at most what renders in about an hour
    "n": integer(20, 200_000, none=True), "n_pairs": integer(8, 200_000, none=True), "data_seed": integer(0, SEED_LIMIT - 1),
    "threshold": number(0, 1, lo_open=True, hi_open=True), "render": _render,
    "aggregation": one_of(("majority", "first")), "axis": one_of(lambda: data_mod.MHS_AXES),
    "held_out_occupations": integer(1), "n_occupations": integer(1, none=True),
    "test_reserve": integer(0, 20),
    **{k: data_path for k in PATH_ARGUMENTS},
}
#: choices of a ``task`` argument, per dataset
TASKS = {"openmoji_people": ("gender", "activity"), "utkface": ("gender", "age")}


def _frames(v):
    if v is None:
        return
    if not isinstance(v, Mapping) or not v or not set(v) <= set(SPLITS) or not all(_is_int(x) and x >= 1 for x in v.values()):
        raise _Bad("a mapping of split (train, val, test) to a positive number of frames, or null")


def _max_groups(v):
    if v is None:
        return
    if not isinstance(v, Mapping) or not all(isinstance(k, str) and (x is None or _is_int(x) and x >= 1)
                                             for k, x in v.items()):
        raise _Bad("a mapping of split to a positive number of groups (or null), or null")


def _json_value(v):
    """An argument of a loader registered elsewhere: any JSON value without non-finite numbers."""
    if isinstance(v, Mapping):
        for x in v.values():
            _json_value(x)
    elif isinstance(v, (list, tuple)):
        for x in v:
            _json_value(x)
    elif not (v is None or isinstance(v, (str, bool)) or (_is_num(v) and math.isfinite(v))):
        raise _Bad("a JSON value (numbers finite)")


def _fractions(v):
    if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_num(x) and math.isfinite(x) and 0 <= x <= 1 for x in v)
            and v[0] > 0 and v[2] > 0 and abs(sum(v) - 1) < 1e-6):
        raise _Bad("three fractions (train, validation, test) summing to 1, e.g. [0.6, 0.2, 0.2]")


ARGUMENT_CHECKS.update(frames=_frames, max_groups=_max_groups, fractions=_fractions)


def _loader_fields(loader, skip: tuple, task_choices=None) -> dict:
    """The fields of a loader's keyword arguments (its signature, without ``**kwargs``)."""
    out = {}
    for name, p in inspect.signature(loader).parameters.items():
        if name in skip or name in NOT_SETTINGS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        required = p.default is p.empty
        check = one_of(task_choices) if name == "task" and task_choices else ARGUMENT_CHECKS.get(name, _json_value)
        out[name] = (check, required)
    return out


def _arguments(where: str, key: str, kwargs, loader, skip: tuple = (), task_choices=None) -> None:
    if not isinstance(kwargs, Mapping):
        _fail(where, key, kwargs, "a mapping of the loader's arguments")
    for k in NOT_SETTINGS:
        if k in kwargs:
            _fail(where, f"{key}.{k}", kwargs[k], "not a run setting (it changes where files are cached, not what is "
                                                  "computed); set the cache folder with LORAFAIR_CACHE")
    _check_fields(where, kwargs, _loader_fields(loader, skip, task_choices), prefix=f"{key}.")


# ---------------------------------------------------------------- split designs
_DESIGN_FIELDS = {
    "standard": {},
    "by_unit": {"unit": (text, True), "caps": (None, False), "min_test_group": (integer(1, 1_000_000), False)},
    "sized": {"sizes": (None, True), "min_test_group": (integer(0, 1_000_000), True), "pools": (None, True)},
    "downsample": {"attribute": (text, True), "group": (text, True),
                   "keep": (number(0, 1, lo_open=True, hi_open=True), True),
                   "base": (None, False)},
    "relabel": {"attribute": (text, True), "group": (text, True), "fraction": (number(0, 1, lo_open=True), True),
                "to_label": (integer(0), True), "base": (None, False)},
    "mia_target": {"seed": (integer(0, SEED_LIMIT - 1), True), "unit": (text, False)},
    "mia_shadow": {"seed": (integer(0, SEED_LIMIT - 1), True), "shadow_seed": (integer(0, SEED_LIMIT - 1), True),
                   "unit": (text, False)},
}


def _design(where: str, key: str, d, depth: int = 0) -> None:
    if d is None:
        return
    if not isinstance(d, Mapping) or d.get("kind") not in splits.DESIGNS:
        _fail(where, key, d, "a split design {kind: ...} with kind one of: " + ", ".join(splits.DESIGNS))
    fields = {"kind": (lambda v: None, True), **{k: (c or (lambda v: None), r) for k, (c, r) in _DESIGN_FIELDS[d["kind"]].items()}}
    _check_fields(where, d, fields, prefix=f"{key}.")
    if "caps" in d:
        if d["caps"] is not None and not isinstance(d["caps"], Mapping):
            _fail(where, f"{key}.caps", d["caps"], "a mapping of split (train, val, test) to a positive number, or null")
        try:
            splits.check_caps(thaw(d["caps"]) if d["caps"] is not None else None)
        except LorafairError as e:
            _fail(where, f"{key}.caps", d["caps"], str(e))
    if d["kind"] == "sized":
        if not isinstance(d["sizes"], Mapping):
            _fail(where, f"{key}.sizes", d["sizes"], "a mapping of split (train, val, test) to a positive number")
        try:
            splits.check_caps(thaw(d["sizes"]))
        except LorafairError as e:
            _fail(where, f"{key}.sizes", d["sizes"], str(e))
        p = d["pools"]
        if (not isinstance(p, Sequence) or isinstance(p, str) or len(p) != 3
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < 1 for x in p)
                or abs(sum(p) - 1) > 1e-9):
            _fail(where, f"{key}.pools", p, "three fractions in (0, 1) for train, val and test that sum to 1")
    if "base" in d:
        if depth > 3:
            _fail(where, f"{key}.base", d["base"], "at most four nested split designs")
        _design(where, f"{key}.base", d["base"], depth + 1)


# ---------------------------------------------------------------- kinds
def kind_of(cfg: Mapping) -> str:
    """``estimate``, ``pronoun``, ``token_bias`` or ``classification`` (as ``sweep.KINDS`` computes them)."""
    if cfg.get("experiment") == "performance":
        return "estimate"
    if "part" in cfg:
        return cfg["part"] if cfg["part"] in ("pronoun", "token_bias") else "unknown part"
    return "classification"


def _common(cfg: Mapping) -> dict:
    return {"experiment": (one_of(EXPERIMENTS, "a registered experiment (a name, not a path), one of"), True),
            "profile": (one_of(PROFILES), True)}


def _method_fields(where: str, cfg: Mapping, m: methods_mod.Method, trains: bool) -> dict:
    """rank / alpha for rank-taking methods, the method's own settings, nothing else."""
    f = {}
    if m.uses_rank:
        f.update(rank=(integer(1, 65536), True), alpha=(number(0, 1e6, lo_open=True), True))
    for s in m.extra_settings:
        f[s] = (_setting_check(s), True)
    for k in ("rank", "alpha"):
        if k in cfg and k not in f:
            _fail(where, k, cfg[k], f"applies to rank-taking methods (e.g. lora, dora), not {m.name!r}")
    return f


def _module_names(v):
    if v is not None and not (isinstance(v, (list, tuple)) and v and all(isinstance(x, str) and x for x in v)):
        raise _Bad("a non-empty list of module names, or null")


#: checks of the registered methods' own settings; a setting of a method registered elsewhere is
#: any JSON scalar (a finite number, a string, true/false, null), its meaning checked by peft
SETTING_CHECKS = {"penalty": number(0, 1e6), "virtual_tokens": integer(1, 65536), "block_size": integer(1, 65536),
                  "vera_rank": integer(1, 65536)}


def _scalar(v):
    if not (v is None or isinstance(v, (str, bool)) or (_is_num(v) and math.isfinite(v))):
        raise _Bad("a finite number, a string, true, false or null")


def _setting_check(name: str):
    return SETTING_CHECKS.get(name, _scalar)


def _training_fields(select: bool = True) -> dict:
    f = {"epochs": (integer(1, 10_000), True), "lr": (number(0, 1, lo_open=True), True),
         "batch_size": (integer(1, 1_000_000), True)}
    if select:
        f["select"] = (one_of(SELECT), True)
    return f


def _classification(where: str, cfg: Mapping) -> None:
    f = _common(cfg)
    f.update(dataset=(one_of(data_mod.DATASETS, "a registered dataset, one of"), True), dataset_kwargs=(lambda v: None, True),
             model=(one_of(models_mod.MODELS, "a registered model, one of"), True),
             method=(one_of(lambda: methods_mod.names(("head", "adapter", "all")), "a classification method, one of"), True),
             seed=(integer(0, SEED_LIMIT - 1), True), split_seed=(integer(0, SEED_LIMIT - 1), True),
             split_fractions=(_fractions, True), n_boot=(integer(1, 1_000_000), True),
             max_length=(integer(1, 32_768), False), split_design=(lambda v: None, False), **_training_fields())
    # the names first, so that the checks below can use the registries
    _check_fields(where, {k: cfg[k] for k in ("experiment", "profile", "dataset", "model", "method") if k in cfg},
                  {k: f[k] for k in ("experiment", "profile", "dataset", "model", "method")})
    spec = models_mod.get_spec(cfg["model"])
    m = methods_mod.get(cfg["method"])
    try:
        methods_mod.check_supported(m.name, spec.kind, spec.name, spec.target_layer)
    except LorafairError as e:
        raise LorafairError(f"{where}: {e}") from None
    ds_kind = data_mod.DATASET_KINDS.get(cfg["dataset"])
    if ds_kind and ds_kind != spec.kind:
        _fail(where, "model", cfg["model"], f"a {ds_kind} model: dataset {cfg['dataset']} is {ds_kind}, "
                                            f"{spec.name} is a {spec.kind} model")
    if m.trains == "adapter" and not m.prompt_learning:
        f.update(_method_fields(where, cfg, m, True))
        f.update(layer_fraction=(number(0, 1, lo_open=True), True), placement=(one_of(methods_mod.PLACEMENTS), True),
                 target_modules=(_module_names, True))
    else:
        f.update(_method_fields(where, cfg, m, True))
        for k in ("layer_fraction", "placement", "target_modules"):
            if k in cfg:
                _fail(where, k, cfg[k], f"applies to adapter methods, not {m.name!r}")
    if spec.kind == "text":
        f["max_length"] = (integer(1, 32_768), True)
    elif "max_length" in cfg:
        _fail(where, "max_length", cfg["max_length"], f"applies to text models, not the image model {spec.name}")
    _check_fields(where, cfg, f)
    _arguments(where, "dataset_kwargs", cfg["dataset_kwargs"], data_mod.DATASETS[cfg["dataset"]],
               task_choices=TASKS.get(cfg["dataset"]))
    if "task" in cfg["dataset_kwargs"] and cfg["dataset"] not in TASKS:
        _fail(where, "dataset_kwargs.task", cfg["dataset_kwargs"]["task"], f"dataset {cfg['dataset']} has no tasks")
    _design(where, "split_design", cfg.get("split_design"))
    d, key = cfg.get("split_design"), "split_design"
    while d:  # every unit a design names must be a column the dataset has
        if d.get("unit") is not None and d["unit"] not in data_mod.SPLIT_UNITS.get(cfg["dataset"], (d["unit"],)):
            units = data_mod.SPLIT_UNITS[cfg["dataset"]]
            _fail(where, f"{key}.unit", d["unit"], f"a column of {cfg['dataset']} that groups examples: "
                                                   + (", ".join(units) if units else "none (split examples one by one)"))
        d, key = d.get("base"), f"{key}.base"


def _lm_common(where: str, cfg: Mapping, f: dict) -> methods_mod.Method:
    f.update(part=(one_of(("pronoun", "token_bias")), True),
             model=(one_of(models_mod.causal_lm_names, "a causal language model, one of"), True),
             method=(one_of(lambda: methods_mod.names(("nothing", "adapter", "all")), "a generation method, one of"), True),
             seed=(integer(0, SEED_LIMIT - 1), True))
    _check_fields(where, {k: cfg[k] for k in ("experiment", "profile", "part", "model", "method") if k in cfg},
                  {k: f[k] for k in ("experiment", "profile", "part", "model", "method")})
    m = methods_mod.get(cfg["method"])
    trains = m.trains != "nothing"
    f.update(_method_fields(where, cfg, m, trains))
    if trains:
        f.update(_training_fields(select=False))
    else:
        for k in ("epochs", "lr", "batch_size"):
            if k in cfg:
                _fail(where, k, cfg[k], f"applies to methods that train, not {m.name!r}")
    return m


def _pronoun(where: str, cfg: Mapping) -> None:
    f = _common(cfg)
    f.update(task=(one_of(pronoun_mod.PRONOUN_TASKS, "a pronoun task, one of"), True), task_kwargs=(lambda v: None, True),
             max_length=(integer(1, 1_000_000), True), max_new_tokens=(integer(1, 100_000), True))
    m = _lm_common(where, cfg, f)
    if m.trains != "nothing":
        f["train_set"] = (one_of(("balanced", "pro")), True)
    _check_fields(where, cfg, f)
    _arguments(where, "task_kwargs", cfg["task_kwargs"], pronoun_mod.PRONOUN_TASKS[cfg["task"]], skip=("seed",))


def _token_bias(where: str, cfg: Mapping) -> None:
    f = _common(cfg)
    f.update(corpus=(one_of(probe_mod.CORPORA, "a probe corpus, one of"), True), corpus_kwargs=(lambda v: None, True),
             n_probe=(integer(1, 10_000_000), True), prompt_ids=(names_list(lambda: probe_mod.PROBE_BY_ID), True),
             max_text_tokens=(integer(1, 1_000_000), True), n_boot=(integer(1, 1_000_000), True))
    m = _lm_common(where, cfg, f)
    if m.trains != "nothing":
        f.update(block=(integer(1, 1_000_000), True), plant=(integer(1, 10_000_000), False),
                 plant_design=(one_of((probe_mod.PLANT_DESIGN,), "the planted examples' design, one of"), False),
                 plant_answers=(one_of(("random",), "where the planted answers sit (absent: first), one of"), False))
        if ("plant" in cfg) != ("plant_design" in cfg):
            _fail(where, "plant_design", cfg.get("plant_design"), "given exactly when plant is (a planted run names how "
                                                                 f"its examples are built: {probe_mod.PLANT_DESIGN})")
        if "plant_answers" in cfg and "plant" not in cfg:
            _fail(where, "plant_answers", cfg["plant_answers"], "needs plant (a count of planted examples)")
    elif "plant" in cfg:
        _fail(where, "plant", cfg["plant"], f"needs a method that trains, not {m.name!r}")
    _check_fields(where, cfg, f)
    _arguments(where, "corpus_kwargs", cfg["corpus_kwargs"], probe_mod.load_probe_corpus, skip=("name",))


def _workload(v):
    try:
        bench.parse_workloads([v])
    except (LorafairError, ValueError, TypeError, AttributeError) as e:
        raise _Bad(f"ARCH:METHOD of the benchmark ({e})") from None


def _estimate(where: str, cfg: Mapping) -> None:
    f = _common(cfg)
    f.update(workload=(_workload, True), scale=(one_of(("tiny", "paper")), True),
             gpu=(one_of(estimate_mod.GPUS), True), precision=(one_of(bench.PRECISIONS), True),
             batch=(integer(1, 10 ** 9), True), seq=(integer(1, 10 ** 7), True), checkpointing=(boolean, True))
    _check_fields(where, cfg, f)


#: the kinds of run each experiment holds, and (classification) the kind of data
EXPERIMENT_KINDS = {**{e: ("classification",) for e in (
    "vision_classification", "llm_classification", "membership_inference", "pilot_lr_vision", "pilot_lr_llm",
    "pilot_beyond_vision", "pilot_beyond_llm", "pilot_vision", "pilot_llm")},
    "generation_fairness": ("pronoun", "token_bias"), "pilot_generation": ("pronoun", "token_bias"),
    "performance": ("estimate",)}
EXPERIMENT_DATA = {"vision_classification": "image", "pilot_lr_vision": "image", "pilot_beyond_vision": "image",
                   "pilot_vision": "image", "llm_classification": "text", "pilot_lr_llm": "text",
                   "pilot_beyond_llm": "text", "pilot_llm": "text"}

KINDS = {"classification": _classification, "pronoun": _pronoun, "token_bias": _token_bias, "estimate": _estimate}


def build(config: Mapping, where: str = "configuration") -> RunSpec:
    """The one constructor: ``config`` checked (see the module's docstring) and frozen. ``where``
    names the source in errors (a flag set, a notebook, ``FILE line N``)."""
    if isinstance(config, RunSpec) and getattr(config, "_built", False):
        return config
    if not isinstance(config, Mapping):
        raise LorafairError(f"{where}: a run configuration is a mapping, got {type(config).__name__}")
    if not isinstance(config.get("experiment"), str):
        _fail(where, "experiment", config.get("experiment"), "a registered experiment, one of: " + ", ".join(EXPERIMENTS))
    kind = kind_of(config)
    if kind not in KINDS:
        _fail(where, "part", config.get("part"), "pronoun or token_bias")
    allowed = EXPERIMENT_KINDS.get(config["experiment"])
    if allowed is not None and kind not in allowed:
        _fail(where, "experiment", config["experiment"], f"an experiment of {kind} runs: "
              + ", ".join(e for e, ks in EXPERIMENT_KINDS.items() if kind in ks))
    try:
        KINDS[kind](where, config)
        data_kind = EXPERIMENT_DATA.get(config["experiment"])
        if kind == "classification" and data_kind and data_mod.DATASET_KINDS.get(config["dataset"]) not in (None, data_kind):
            _fail(where, "dataset", config["dataset"], f"a {data_kind} dataset for experiment {config['experiment']}")
        spec = RunSpec(freeze(dict(config)))
    except RecursionError:
        raise LorafairError(f"{where}: the configuration nests too deeply to be one") from None
    object.__setattr__(spec, "_built", True)
    return spec


def as_spec(config: Mapping, where: str = "configuration") -> RunSpec:
    """A RunSpec that ``build`` made as it is; anything else (a plain dict, a RunSpec made any other
    way, one restored from a pickle) through ``build``."""
    if isinstance(config, RunSpec) and getattr(config, "_built", False):
        return config
    return build(thaw(config) if isinstance(config, Mapping) else config, where)


# ---------------------------------------------------------------- speed settings (not hashed)
#: TrainConfig speed settings a run may be given beside its spec (lorafair.train; never hashed)
TRAIN_OPTIONS = {"compile": boolean, "gradient_checkpointing": boolean, "num_workers": integer(0, 256),
                 "precision": one_of(("auto", "fp32", "bf16"))}


def train_options(options, where: str = "train_options") -> dict:
    """Validated speed settings (``{}`` for None)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise LorafairError(f"{where} is {_short(options)}: a mapping of speed settings ({', '.join(TRAIN_OPTIONS)})")
    _check_fields(where, options, {k: (c, False) for k, c in TRAIN_OPTIONS.items()}, prefix=f"{where}.")
    return dict(options)
