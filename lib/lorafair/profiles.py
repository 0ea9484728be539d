"""Named presets of every notebook's parameters: ``smoke`` (tests, CI), ``offline`` (the default,
published book on a CPU) and ``paper`` (the original scale, GPUs and Hub access).

A notebook's parameters cell sets ``profile`` and leaves the others ``None``; ``resolve`` fills every
``None`` from the profile, so any single parameter can be overridden with papermill or
``lorafair notebook NAME -p key value``.
"""

from __future__ import annotations

import copy

from .errors import LorafairError, choose

PROFILE_NAMES = ("smoke", "offline", "paper")
#: Where each profile's run records live. The offline records are committed (the published record).
RESULTS_DIRS = {"smoke": "_runs/smoke", "offline": "results", "paper": "_runs/paper"}

VISION = {
    "smoke": {
        "dataset": "openmoji_people",
        "dataset_kwargs": {"task": "gender", "n": 60, "data_seed": 0, "render": {"size": 32}},
        "models": ["vit_tiny_random", "swinv2_tiny_random"],
        "methods": ["head", "lora", "full"],
        "seeds": [13],
        "epochs": 1,
        "lrs": {"head": 1e-2, "lora": 1e-3, "full": 1e-3},
        "batch_size": 16,
        "rank_sweep_model": "vit_tiny_random",
        "ranks": [1, 2, 0.5],
        "placements": ["front", "back"],
        "second_task": "role",
        "second_task_n": 45,
        "n_boot": 100,
        "workers": 1,
    },
    "offline": {
        "dataset": "openmoji_people",
        "dataset_kwargs": {"task": "gender", "n": 2000, "data_seed": 0},
        "models": ["mobilenet_v2", "efficientnet_lite0"],
        "methods": ["head", "lora", "full"],
        "seeds": [13, 1337, 42],
        "epochs": 3,
        "lrs": {"head": 1e-2, "lora": 1e-3, "full": 1e-3},
        "batch_size": 32,
        "rank_sweep_model": "mobilenet_v2",
        "ranks": [1, 2, 4, 8, 32, 0.5],
        "placements": ["front", "back"],
        "second_task": "role",
        "second_task_n": 2000,
        "n_boot": 1000,
        "workers": 2,
    },
    "paper": {
        "dataset": "utkface",
        "dataset_kwargs": {"task": "gender", "utkface_dir": "data/UTKFace"},
        "models": ["vit_base", "swinv2_large"],
        "methods": ["head", "lora", "full"],
        "seeds": [13, 1337, 42, 666, 888],
        # the original study's selected (epochs, lr) for UTK gender (paper-study.md B.3); head: ours
        "epochs": {"vit_base": {"head": 2, "lora": 2, "full": 2}, "swinv2_large": {"head": 2, "lora": 2, "full": 6}},
        "lrs": {"vit_base": {"head": 1e-3, "lora": 3e-4, "full": 3e-5},
                "swinv2_large": {"head": 1e-3, "lora": 1e-3, "full": 3e-6}},
        "batch_size": 32,
        "rank_sweep_model": "vit_base",
        "ranks": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 0.25, 0.5, 0.75],
        "placements": ["front", "back", "random"],
        "second_task": "age",
        "second_task_n": None,
        "n_boot": 1000,
        "workers": 1,
    },
}

PRESETS = {"vision_classification": VISION}


def resolve(notebook: str, profile: str, **overrides) -> dict:
    """The profile's parameters with every non-None override applied; errors name valid choices."""
    choose("notebook", notebook, PRESETS)
    choose("profile", profile, PROFILE_NAMES)
    params = copy.deepcopy(PRESETS[notebook][profile])
    params["profile"] = profile
    params.setdefault("results_dir", RESULTS_DIRS[profile])
    for k, v in overrides.items():
        if k not in params:
            raise LorafairError(f"unknown parameter {k!r} for {notebook}; valid: {', '.join(sorted(params))}")
        if v is not None:
            params[k] = v
    for k in ("models", "methods", "seeds"):
        if not isinstance(params[k], (list, tuple)):
            params[k] = [params[k]]
    return params


def per_model(value, model: str, method: str):
    """A setting given as a scalar, a {method: v} dict, or a {model: {method: v}} dict."""
    if isinstance(value, dict):
        value = value.get(model, value)
        if isinstance(value, dict):
            if method not in value:
                raise LorafairError(f"no setting for method {method!r} in {value}")
            value = value[method]
    return value


def parameter_names(notebook: str) -> list[str]:
    choose("notebook", notebook, PRESETS)
    return sorted(set(PRESETS[notebook]["offline"]) | {"profile", "results_dir", "force"})
