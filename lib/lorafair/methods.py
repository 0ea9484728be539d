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

Other parameter-efficient methods (the "beyond LoRA" chapter), all built by peft on LoRA's target
modules:

- ``dora``: LoRA with weight decomposition (``LoraConfig(use_dora=True)``);
- ``ia3``: learned rescaling of the target modules' outputs (``IA3Config``);
- ``vera``: one pair of frozen random low-rank matrices shared by every layer, with trained scaling
  vectors per layer (``VeraConfig``; peft supports linear layers only, so not the convolutional
  networks, ``ModelSpec.target_layer``);
- ``loha``: a low-rank Hadamard product (``LoHaConfig``, the LyCORIS family);
- ``oft``: an orthogonal rotation of each target's output, in blocks (``OFTConfig``);
- ``prompt``: soft-prompt tuning, trained virtual tokens before the input (``PromptTuningConfig``;
  text encoders only: a decoder classifier reads its last position, a pad token under right padding).

Fairness-aware adaptation (``objective``), LoRA with another training loss over the groups of the
dataset's sensitive attribute (``lorafair.train.group_objective``):

- ``fairlora``: LoRA plus ``penalty`` times the variance, over the groups present in a batch, of
  the groups' mean losses (after the FairLoRA regulariser of Sukumaran et al., 2024);
- ``reweight``: LoRA with every training example weighted by the inverse of its group's share of
  the training split, so each group weighs the same (group-balanced reweighting).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import LorafairError, choose

TRAINS = ("nothing", "head", "adapter", "all")
#: where an adapter on a fraction of the layers goes (``lorafair.models.select_layers``)
PLACEMENTS = ("front", "back", "random")


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
    #: the training loss: "erm" (mean cross-entropy) or a group objective of ``lorafair.train``
    objective: str = "erm"
    #: the kinds of model ("image", "text") peft can build this method for, whether only on linear
    #: target layers (not convolutions), and why not the others
    kinds: tuple[str, ...] = ("image", "text")
    linear_only: bool = False
    unsupported_because: str = ""
    #: a prompt-learning method (peft wraps the whole transformer, nothing merges into weights)
    prompt_learning: bool = False

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


def check_supported(method: str, kind: str, model: str = "", target_layer: str = "linear") -> Method:
    """The method, if peft can build it for a model of this kind whose adapter targets are
    ``target_layer`` ("linear" or "conv"); else a one-line error saying why."""
    m = get(method)
    if kind not in m.kinds or (m.linear_only and target_layer != "linear"):
        where = f"{kind} models" + (" with linear target layers" if m.linear_only else "")
        raise LorafairError(f"method {m.name!r} does not run on {model or 'this model'}: {m.unsupported_because} "
                            f"(it runs on {where})")
    return m


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


def _vera(settings, targets, modules_to_save, task_type, dropout: float = 0.0):
    from peft import VeraConfig

    kw = {"task_type": task_type} if task_type else {}
    return VeraConfig(r=int(settings["vera_rank"]), target_modules=list(targets), modules_to_save=modules_to_save,
                      vera_dropout=dropout, **kw)


def _loha(settings, targets, modules_to_save, task_type, dropout: float = 0.0):
    from peft import LoHaConfig

    kw = {"task_type": task_type} if task_type else {}
    return LoHaConfig(r=int(settings["rank"]), alpha=settings["alpha"], rank_dropout=dropout,
                      target_modules=list(targets), modules_to_save=modules_to_save, **kw)


def _oft(settings, targets, modules_to_save, task_type, dropout: float = 0.0):
    from peft import OFTConfig

    kw = {"task_type": task_type} if task_type else {}
    return OFTConfig(r=0, oft_block_size=int(settings["block_size"]), module_dropout=dropout,
                     target_modules=list(targets), modules_to_save=modules_to_save, **kw)


def _prompt(settings, targets, modules_to_save, task_type, dropout: float = 0.0):
    from peft import PromptTuningConfig

    return PromptTuningConfig(task_type=task_type, num_virtual_tokens=int(settings["virtual_tokens"]))


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
register(Method("vera", "VeRA", "adapter", "#E69F00", "P", (0, (5, 2)),
                "shared frozen random low-rank matrices, trained scaling vectors (peft VeraConfig)",
                settings=("vera_rank",), defaults={"vera_rank": 256}, peft_config=_vera, linear_only=True,
                unsupported_because="peft's VeRA adapts linear layers only, and its targets are convolutions"))
register(Method("loha", "LoHa", "adapter", "#56B4E9", "X", (0, (1, 1)),
                "low-rank Hadamard product (peft LoHaConfig)", settings=("rank", "alpha"), peft_config=_loha))
register(Method("oft", "OFT", "adapter", "#F0E442", "h", (0, (4, 1, 1, 1, 1, 1)),
                "block-diagonal orthogonal rotation of each target's output (peft OFTConfig)",
                settings=("block_size",), defaults={"block_size": 8}, peft_config=_oft))
register(Method("prompt", "prompt tuning", "adapter", "#999933", "*", (0, (2, 2)),
                "trained soft-prompt tokens before the input (peft PromptTuningConfig)",
                settings=("virtual_tokens",), defaults={"virtual_tokens": 10}, peft_config=_prompt,
                kinds=("text",), prompt_learning=True,
                unsupported_because="a soft prompt is a sequence of input tokens; images have none"))
register(Method("fairlora", "FairLoRA-style", "adapter", "#882255", "d", (0, (6, 2, 1, 2)),
                "LoRA plus a penalty on the variance of the groups' mean losses in a batch",
                settings=("rank", "alpha", "penalty"), defaults={"penalty": 1.0}, peft_config=_lora,
                objective="group_variance"))
register(Method("reweight", "group-balanced LoRA", "adapter", "#44AA99", "p", (0, (3, 3)),
                "LoRA with each group weighted equally in the loss (inverse group frequency)",
                settings=("rank", "alpha"), peft_config=_lora, objective="group_balanced"))
