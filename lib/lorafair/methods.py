"""The method registry: one entry per adaptation method, the single place a method is defined.

A ``Method`` says what trains (``nothing``, the new ``head``, an ``adapter``, or ``all``
parameters), how it is labelled and drawn, which of its settings enter a run's hashed
configuration, and, for adapters, the peft config that builds it (``peft.get_peft_model`` does the
rest). ``lorafair.models.adapt`` applies any entry to a classifier or a causal language model; the
chapter tables and plots read labels, styles and order from here. Adding a PEFT method is one
``register(Method(...))`` call plus its learning rates in ``lorafair.profiles``. Register it in
this module (or a module imported by ``lorafair``): a method registered only in a notebook exists in
that process, not in the sweep's spawned worker processes (use ``workers=1`` there).

The study's methods:

- ``base``: nothing trains. A classifier needs a new head, so for classification ``base`` is the
  same run as ``head`` (resolved before hashing: both names share one run record).
- ``head`` (rank 0, a linear probe): only the new classification head trains; the backbone is frozen
  and its normalisation statistics stay fixed.
- ``lora``: peft LoRA of rank ``rank`` and scaling ``alpha / rank`` on the architecture's default
  target modules (``ModelSpec.lora_targets``: attention query/value projections of transformers, the
  pointwise convolutions of the convolutional networks); for a classifier the head trains fully.
- ``full``: every parameter trains.

Registered for extensions (no committed records yet): ``dora`` (LoRA with weight decomposition,
``LoraConfig(use_dora=True)``) and ``ia3`` (learned rescaling vectors, ``IA3Config``), on the same
target modules.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import LorafairError, choose

TRAINS = ("nothing", "head", "adapter", "all")


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    trains: str                       # one of TRAINS
    color: str
    marker: str
    dash: str
    description: str = ""
    #: settings of this method that enter the hashed configuration (besides model, seed, lr, ...);
    #: ``rank`` and ``alpha`` default to the model's (``ModelSpec.default_rank``/``default_alpha``), any
    #: other setting to its value in ``defaults``
    settings: tuple[str, ...] = ()
    defaults: dict = field(default_factory=dict)
    #: (settings, target module names, modules to save, peft task type, dropout) -> a peft config
    peft_config: Callable[..., object] | None = None
    #: for classification this method is run as another one (``base`` -> ``head``)
    classifier_alias: str | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def uses_rank(self) -> bool:
        return "rank" in self.settings

    @property
    def extra_settings(self) -> tuple[str, ...]:
        """The settings besides rank and alpha (e.g. a decomposition factor)."""
        return tuple(s for s in self.settings if s not in ("rank", "alpha"))

    def resolve_settings(self, given: dict | None = None) -> dict:
        """The extra settings of a run: given values, else this method's defaults (errors name the valid ones)."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.extra_settings))
        if unknown:
            raise LorafairError(f"method {self.name!r} has no setting {unknown[0]!r}; its settings: "
                                f"{', '.join(self.settings) or 'none'}")
        missing = [s for s in self.extra_settings if s not in given and s not in self.defaults]
        if missing:
            raise LorafairError(f"method {self.name!r} needs a value for {missing[0]!r} (no default)")
        return {s: given.get(s, self.defaults.get(s)) for s in self.extra_settings}


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    choose("trains", method.trains, TRAINS)
    if method.trains == "adapter" and method.peft_config is None:
        raise LorafairError(f"adapter method {method.name!r} needs a peft_config builder")
    METHODS[method.name] = method
    return method


def get(name: str) -> Method:
    for m in METHODS.values():
        if name == m.name or name in m.aliases:
            return m
    raise LorafairError(f"unknown method {name!r}; valid choices: {', '.join(METHODS)}")


def for_classification(name: str) -> Method:
    """The method a classification run actually trains (``base`` is run as ``head``)."""
    m = get(name)
    return get(m.classifier_alias) if m.classifier_alias else m


def names(trains: tuple[str, ...] | None = None) -> tuple[str, ...]:
    return tuple(m.name for m in METHODS.values() if trains is None or m.trains in trains)


def order(present) -> list[str]:
    """The methods in ``present`` in registry order (the order of every table and legend)."""
    present = set(present)
    return [m for m in METHODS if m in present]


def label(name: str) -> str:
    return get(name).label


def style(name: str) -> dict:
    """Colour, marker and line style of a method (colour-blind-safe, distinguishable in grey)."""
    m = get(name)
    return {"color": m.color, "marker": m.marker, "dash": m.dash}


def peft_dict(cfg) -> dict:
    """A peft config as peft serialises it (``to_dict``), made JSON-safe (sets sorted, enums by value)."""
    def clean(v):
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, (set, frozenset)):
            return sorted(clean(x) for x in v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return clean(cfg.to_dict())


# ---------------------------------------------------------------- peft config builders
def _lora(settings: dict, targets: list[str], modules_to_save, task_type, dropout: float = 0.0, **extra):
    from peft import LoraConfig

    kw = {"task_type": task_type} if task_type else {}
    return LoraConfig(r=int(settings["rank"]), lora_alpha=settings["alpha"], lora_dropout=dropout,
                      target_modules=list(targets), modules_to_save=modules_to_save, bias="none", **kw, **extra)


def _dora(settings, targets, modules_to_save, task_type, dropout: float = 0.0):
    return _lora(settings, targets, modules_to_save, task_type, dropout, use_dora=True)


def _ia3(settings, targets, modules_to_save, task_type, dropout: float = 0.0):
    from peft import IA3Config

    kw = {"task_type": task_type} if task_type else {}
    # the targets' outputs are rescaled (no feed-forward input scaling): the same modules as LoRA
    return IA3Config(target_modules=list(targets), feedforward_modules=[], modules_to_save=modules_to_save, **kw)


# Okabe-Ito colours; grey for the methods that train no adapter
register(Method("base", "base (not fine-tuned)", "nothing", "#9e9e9e", "s", ":",
                "no training; classification trains a new head (= head)", classifier_alias="head"))
register(Method("head", "head-only (rank 0)", "head", "#9e9e9e", "s", ":",
                "only the new classification head trains"))
register(Method("lora", "LoRA", "adapter", "#0072B2", "o", "-", "peft LoRA on the default target modules",
                settings=("rank", "alpha"), peft_config=_lora))
register(Method("full", "full fine-tuning", "all", "#D55E00", "^", "--", "every parameter trains"))
register(Method("dora", "DoRA", "adapter", "#009E73", "D", "-.",
                "LoRA with weight decomposition (peft LoraConfig(use_dora=True))",
                settings=("rank", "alpha"), peft_config=_dora))
register(Method("ia3", "IA3", "adapter", "#CC79A7", "v", (0, (3, 1, 1, 1)),
                "learned rescaling of the target modules' outputs (peft IA3Config)", peft_config=_ia3))
