"""``lorafair bench --cpu``: the evidence behind the CPU precision of every offline model.

For each model and method it times, side by side in one process, one training step (zero_grad,
forward, loss, backward, AdamW) and one evaluation batch (inference forward) in every variant:

- ``fp32``: the reference;
- ``bf16``: the same fp32 model under ``torch.autocast("cpu", dtype=torch.bfloat16)``;
- ``channels_last``: fp32 with NHWC memory format (image models only; the other variants of an
  image model run in NCHW, whatever the model's training default);
- ``compile``: fp32 under ``torch.compile`` (only with ``compile=True``; compilation time excluded).

Variants are interleaved (one step of each in turn, then the next round), so a change in the
machine's load hits all of them alike; each time is the median over rounds after warm-up. Inputs are
synthetic tensors of the offline profile's shapes (timing does not depend on their values); the
weights are the real pretrained ones. Method ``head`` is timed as it trains: the step is the head
alone on cached features and the evaluation batch is the backbone's feature pass;
``head_per_step`` times the old way (the frozen backbone's forward in every step) for comparison.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from . import methods as methods_mod
from . import models as models_mod
from .errors import LorafairError, choose
from .precision import choose_precision, cpu_info
from .train import HeadOnFeatures, head_features, merged_for_inference

#: head-only (on cached features), head_per_step (head-only through the backbone every step, for
#: comparison), and every registered method that trains an adapter or everything
METHODS = ("head", "head_per_step", *methods_mod.names(("adapter", "all")))
VARIANTS = ("fp32", "bf16", "channels_last", "compile")
OFFLINE_MODELS = ("mobilenet_v2", "efficientnet_lite0", "minilm", "smollm2_135m")


class _Synthetic:
    """An encoder-like source of synthetic batches of the right shape."""

    views = 1

    def __init__(self, spec: models_mod.ModelSpec, batch: int, seq: int, channels_last: bool = False):
        g = torch.Generator().manual_seed(0)
        if spec.kind == "image":
            x = torch.randn(batch, 3, spec.image_size, spec.image_size, generator=g)
            self.batch = {"pixel_values": x.contiguous(memory_format=torch.channels_last) if channels_last else x}
        else:
            tok = spec.tokenizer()
            ids = torch.randint(0, len(tok), (batch, seq), generator=g)
            self.batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        self.labels = torch.randint(0, 2, (batch,), generator=g)

    def view(self, ids, views=None) -> dict:
        return self.batch


def _prepared(name: str, method: str, variant: str) -> tuple[nn.Module, list]:
    spec = models_mod.get_spec(name)
    model, _ = models_mod.build(name, 2, seed=0)
    model, info = models_mod.adapt(model, spec, "head" if method == "head_per_step" else method, seed=0)
    if spec.kind == "image":  # the reference variants in NCHW order, whatever the training default
        models_mod.set_channels_last(model, variant == "channels_last")
    models_mod.set_train_mode(model, info["freeze_norm_stats"])
    return model, [p for p in model.parameters() if p.requires_grad]


def _timers(name: str, method: str, variant: str, batch: int, seq: int):
    """(train step, eval batch) closures of one (model, method, variant)."""
    spec = models_mod.get_spec(name)
    model, params = _prepared(name, method, variant)
    src = _Synthetic(spec, batch, seq, channels_last=variant == "channels_last")
    precision = "bf16" if variant == "bf16" else "fp32"
    amp = dict(device_type="cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    if method == "head":  # the head on cached features; evaluation = the backbone's feature pass
        feats = head_features(model, spec.head, src, range(batch), 0, batch, precision)
        train_model = HeadOnFeatures(model.get_submodule(spec.head), spec.head_dropout(model) if spec.head_dropout else 0)
        train_batch = {"features": feats}

        def evaluate():
            head_features(model, spec.head, src, range(batch), 0, batch, precision)
    else:
        train_model, train_batch = model, src.batch
        eval_model = merged_for_inference(copy.deepcopy(model))  # adapters merged; other models as they are
        if variant == "compile":
            eval_model = torch.compile(eval_model)

        def evaluate():
            with torch.inference_mode(), torch.autocast(**amp):
                eval_model(**src.batch)
    if variant == "compile":
        train_model = torch.compile(train_model)
    opt = torch.optim.AdamW(params, lr=1e-5)

    def step():
        with torch.autocast(**amp):
            logits = train_model(**train_batch)
        nn.functional.cross_entropy(logits.float(), src.labels).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, evaluate


def variants_for(name: str, variants) -> list[str]:
    spec = models_mod.get_spec(name)
    return [v for v in variants if v != "channels_last" or spec.kind == "image"]


def measure(name: str, method: str, variants=("fp32", "bf16", "channels_last"), batch: int = 32, seq: int = 32,
            steps: int = 5, warmup: int = 1, budget_s: float = 120.0) -> list[dict]:
    """Rows of one (model, method): every variant's median step and eval-batch time, interleaved.
    Rounds stop after ``steps``, or earlier once ``budget_s`` has passed (at least one timed round)."""
    choose("method", method, METHODS)
    for v in variants:
        choose("variant", v, VARIANTS)
    variants = variants_for(name, variants)
    timers = {v: _timers(name, method, v, batch, seq) for v in variants}
    times = {v: {"step": [], "eval": []} for v in variants}
    start = time.perf_counter()
    for r in range(warmup + steps):
        for v, (step, evaluate) in timers.items():
            for kind, fn in (("step", step), ("eval", evaluate)):
                t0 = time.perf_counter()
                fn()
                if r >= warmup:
                    times[v][kind].append(time.perf_counter() - t0)
        if r >= warmup and time.perf_counter() - start > budget_s:
            break
    ref = {k: statistics.median(times["fp32"][k]) if "fp32" in times else None for k in ("step", "eval")}
    rows = []
    for v in variants:
        step, ev = statistics.median(times[v]["step"]), statistics.median(times[v]["eval"])
        rows.append({"model": name, "method": method, "variant": v, "batch": batch,
                     "seq": seq if models_mod.get_spec(name).kind == "text" else None,
                     "step_ms": 1000 * step, "eval_ms": 1000 * ev,
                     "step_speedup": ref["step"] / step if ref["step"] else None,
                     "eval_speedup": ref["eval"] / ev if ref["eval"] else None, "rounds": len(times[v]["step"])})
    return rows


def run(models=OFFLINE_MODELS, methods=("head", "head_per_step", "lora", "full"), variants=("fp32", "bf16", "channels_last"),
        threads: int = 1, **kw) -> list[dict]:
    """Every (model, method): see ``measure``. ``threads``: torch threads (1, as each worker runs)."""
    if threads < 1:
        raise LorafairError(f"--threads must be at least 1, got {threads}")
    for m in models:
        models_mod.get_spec(m)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return [row for m in models for me in methods for row in measure(m, me, variants, **kw)]
    finally:
        torch.set_num_threads(previous)


def header(threads: int) -> str:
    c = cpu_info()
    return (f"CPU {c['name']}; torch capability {c['capability']}; native bf16: AVX512-BF16 {c['avx512_bf16']}, "
            f"AMX {c['amx']}; {threads} thread(s); torch {torch.__version__}; "
            f"{time.strftime('%Y-%m-%d', time.gmtime())}")


def chosen(models) -> dict:
    """The precision each model trains in on this machine, and why (lorafair.precision)."""
    return {m: choose_precision(m) for m in models}
