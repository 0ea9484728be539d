"""``lorafair bench --estimate``: a model of one training step on a GPU that is not here.

The paper architectures are built on the meta device and trained for one step on *fake* tensors
(``torch._subclasses.FakeTensorMode``: shapes, dtypes and strides, no data, no memory), on the CPU
dispatch path. Two things are read from that step:

- **Memory.** ``torch.distributed._tools.MemTracker`` gives the peak of live tensors by kind
  (parameters, gradients, optimizer states, activations, temporaries), after a first step has
  created the AdamW states. It does not see the CUDA context (about 0.5-1 GiB), cuBLAS workspaces
  or allocator fragmentation, so a real peak is somewhat higher.
- **Time, as a roofline.** Every aten operation costs ``max(FLOPs / peak FLOP/s, bytes / memory
  bandwidth)``, with the FLOPs of ``torch.utils.flop_counter`` (matmuls, convolutions, attention)
  and the bytes of its inputs and outputs, at the datasheet peaks of the chosen GPU. This is an
  *optimistic eager* model: every kernel runs at its roofline, nothing is fused, and launch gaps
  and kernel inefficiency are not modelled. Its MFU is a ceiling for an eager loop, and its time
  shares say which operations keep a workload below the peak: matmuls (compute-bound), attention,
  dtype casts (autocast copies of the weights), the optimizer, and the other memory-bound
  operations (normalisations, activations, element-wise and reductions).

These are estimates, not measurements; ``lorafair bench`` without ``--estimate`` measures on a
real device.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from . import bench
from . import methods as methods_mod
from .errors import as_int, choose


@dataclass(frozen=True)
class GPUSpec:
    name: str
    bf16_flops: float     # dense Tensor-Core bf16 FLOP/s
    fp32_flops: float     # non-Tensor-Core fp32 FLOP/s (PyTorch's default fp32 matmul precision)
    bandwidth: float      # memory bandwidth, bytes/s
    memory: float         # bytes


# NVIDIA datasheets (SXM parts); dense = half the "with sparsity" Tensor-Core figure.
GPUS = {
    "h200": GPUSpec("NVIDIA H200 SXM", 989.5e12, 67e12, 4.8e12, 141e9),
    "h100": GPUSpec("NVIDIA H100 SXM", 989.5e12, 67e12, 3.35e12, 80e9),
    "a100": GPUSpec("NVIDIA A100 SXM 80GB", 312e12, 19.5e12, 2.039e12, 80e9),
}

_FREE = {"view", "_unsafe_view", "t", "transpose", "permute", "expand", "expand_as", "detach", "alias",
         "as_strided", "select", "slice", "squeeze", "unsqueeze", "split", "split_with_sizes", "unbind",
         "chunk", "unflatten", "lift_fresh", "_reshape_alias", "reshape", "view_as", "diagonal", "movedim",
         "set_", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "_local_scalar_dense",
         "is_same_size", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset"}


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes an operation reads or writes for ``t``: broadcast (stride-0) dimensions count once."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size()


class RooflineMode(TorchDispatchMode):
    """Costs every aten operation as max(FLOPs / peak, bytes / bandwidth) on ``gpu``.

    ``phase`` is set by the caller (forward, backward, optimizer); the totals are kept per
    category and per phase."""

    def __init__(self, gpu: GPUSpec):
        super().__init__()
        bench.register_cpu_attention_flops()
        self.gpu = gpu
        self.phase = "forward"
        self.flops = 0
        self.bytes = 0
        self.kernels = 0
        self.seconds = 0.0
        self.by_category: dict[str, float] = defaultdict(float)
        self.by_phase: dict[str, float] = defaultdict(float)
        self.by_op: dict[tuple[str, str], list] = defaultdict(lambda: [0.0, 0, 0, 0])  # s, FLOPs, bytes, calls

    def cost(self, func, args, kwargs, out) -> tuple[int, int, float, str]:
        packet = func._overloadpacket
        formula = flop_registry.get(packet)
        flops = int(formula(*args, **kwargs, out_val=out)) if formula is not None else 0
        seen, nbytes = set(), 0
        for t in pytree.tree_leaves((args, kwargs)) + pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                nbytes += tensor_bytes(t)
        if func.__name__.split(".")[0].endswith("_"):  # in place (e.g. fused AdamW): what it reads, it writes
            nbytes *= 2
        low = any(isinstance(t, torch.Tensor) and t.dtype in (torch.bfloat16, torch.float16)
                  for t in pytree.tree_leaves(args))
        peak = self.gpu.bf16_flops if low else self.gpu.fp32_flops
        seconds = max(flops / peak, nbytes / self.gpu.bandwidth)
        name = packet.__name__
        if self.phase == "optimizer":
            category = "optimizer"
        elif "attention" in name:
            category = "attention"
        elif flops:
            category = "matmul"
        elif name in ("_to_copy", "copy_"):
            category = "cast"
        else:
            category = "memory-bound other"
        return flops, nbytes, seconds, category

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func._overloadpacket.__name__
        if func.namespace != "aten" or name in _FREE:
            return out
        flops, nbytes, seconds, category = self.cost(func, args, kwargs, out)
        self.flops += flops
        self.bytes += nbytes
        self.seconds += seconds
        self.kernels += 1
        self.by_category[category] += seconds
        self.by_phase[self.phase] += seconds
        op = self.by_op[(name, category)]
        op[0] += seconds
        op[1] += flops
        op[2] += nbytes
        op[3] += 1
        return out

    def table(self) -> "pd.DataFrame":
        """One row per (aten operation, category): modelled seconds, FLOPs, bytes, calls, share of the step."""
        import pandas as pd

        rows = [{"op": k[0], "category": k[1], "seconds": v[0], "flops": v[1], "bytes": v[2], "calls": v[3]}
                for k, v in self.by_op.items()]
        t = pd.DataFrame(rows).sort_values("seconds", ascending=False, ignore_index=True)
        t["share"] = t["seconds"] / self.seconds
        return t


def estimate_workload(w, scale: str = "paper", batch: int = 8, seq: int = 256, precision: str = "autocast",
                      checkpointing: bool = False, gpu: str = "h200", ops: bool = False):
    """One fake training step of ``w`` (a ``bench.Workload``): peak memory and a roofline time on ``gpu``.
    Returns the row; with ``ops=True`` also the per-operation table."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker
    from torch.utils.hooks import RemovableHandle
    from transformers.initialization import no_init_weights

    choose("precision", precision, bench.PRECISIONS)
    choose("scale", scale, ("tiny", "paper"))
    choose("gpu", gpu, GPUS)
    spec = GPUS[gpu]
    start = time.perf_counter()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    with no_init_weights():  # weights are never read: no initialisation, no memory
        model, n_params = bench.build(w.arch, w.method, scale, dtype, checkpointing, "meta")
    with FakeTensorMode(allow_non_fake_inputs=True):
        model.to_empty(device="cpu")
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5, fused=True)  # the fused kernel of the GPU loop
        inputs, tokens = bench._inputs(w.arch, model, batch, seq, "cpu", dtype)

        def step(roofline=None):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "autocast"):
                loss = model(**inputs).loss
            if roofline is not None:
                roofline.phase = "backward"
            loss.backward()
            if roofline is not None:
                roofline.phase = "optimizer"
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()  # creates the AdamW states, as in every later step
        tracker = MemTracker()
        # MemTracker hooks every parameter's gradient, and a frozen (LoRA) parameter cannot take a
        # hook: mark those as hooked already (torch 2.14's attribute; a test covers LoRA)
        for p in model.parameters():
            if not p.requires_grad:
                inert = RemovableHandle(OrderedDict())
                tracker._param_to_grad_hook_handles[p] = (inert, inert)
        tracker.track_external(model, opt)
        roofline = RooflineMode(spec)
        with tracker, roofline:
            step(roofline)
        snap = next(iter(tracker.get_tracker_snapshot("peak").values()))
    gib = 2 ** 30
    t = roofline.seconds
    row = {"workload": w.name, "arch": w.arch, "method": w.method, "scale": scale, "precision": precision,
           "checkpointing": checkpointing, "batch": batch, "seq": seq if tokens else None, "gpu": spec.name,
           "est_step_s": t, "est_samples_per_s": batch / t, "est_tokens_per_s": tokens / t if tokens else None,
           "flops_per_step": roofline.flops, "bytes_per_step": roofline.bytes, "kernels": roofline.kernels,
           "est_mfu": roofline.flops / t / spec.bf16_flops,
           "est_peak_gib": snap["Total"] / gib, "gpu_gib": spec.memory / gib,
           "trainable_params": int(sum(p.numel() for p in params)),
           "estimate_seconds": time.perf_counter() - start}
    row.update({f"mem_{k.lower()}_gib": v / gib for k, v in snap.items() if k != "Total"})
    row.update({f"share_{k.replace(' ', '_').replace('-', '_')}": v / t for k, v in roofline.by_category.items()})
    row.update({f"share_phase_{k}": v / t for k, v in roofline.by_phase.items()})
    if tokens:
        row["est_mfu_6n"] = (6 if methods_mod.get(w.method).trains == "all" else 4) * n_params * tokens / t / spec.bf16_flops
    return (row, roofline.table()) if ops else row


SHARES = ("matmul", "attention", "cast", "optimizer", "memory_bound_other")


def run(specs, **kw) -> "list[dict]":
    return [estimate_workload(w, **kw) for w in bench.parse_workloads(specs)]


def estimate_config(profile: str, workload: str, precision: str, batch: int, checkpointing: bool = False,
                    seq: int = 256, scale: str = "paper", gpu: str = "h200") -> dict:
    """The run-store configuration of one estimate (its hash names the record)."""
    bench.parse_workloads([workload])
    choose("precision", precision, bench.PRECISIONS)
    choose("gpu", gpu, GPUS)
    return {"experiment": "performance", "profile": profile, "workload": workload, "scale": scale, "gpu": gpu,
            "precision": precision, "batch": as_int(batch), "seq": as_int(seq), "checkpointing": bool(checkpointing)}


def compute_estimate(cfg: dict):
    """The record of one estimate configuration: its operation table and its summary row."""
    w = bench.parse_workloads([cfg["workload"]])[0]
    row, ops = estimate_workload(w, scale=cfg["scale"], batch=cfg["batch"], seq=cfg["seq"],
                                 precision=cfg["precision"], checkpointing=cfg["checkpointing"],
                                 gpu=cfg["gpu"], ops=True)
    return ops, row


_MATCH = ("workload", "scale", "precision", "batch", "checkpointing")


def compare(measured: list[dict], estimates: list[dict]) -> list[dict]:
    """Each measured ``lorafair bench`` row beside the estimate of the same configuration (workload,
    precision, batch, checkpointing, and sequence length for language models): measured MFU against
    the eager ceiling, measured peak memory against the modelled one. Rows without an estimate keep
    empty estimate columns; compiled rows are compared with the eager estimate."""
    def key(r):
        return tuple(r.get(k) for k in _MATCH) + ((r.get("seq"),) if r.get("workload", "").startswith("llama") else ())

    by_key = {key(e): e for e in estimates}
    out = []
    for m in measured:
        if "error" in m:
            out.append({"workload": m["workload"], "error": m["error"]})
            continue
        e = by_key.get(key(m), {})
        row = {k: m.get(k) for k in (*_MATCH, "compile")}
        row.update({"measured_mfu": m["mfu"], "ceiling_mfu": e.get("est_mfu"),
                    "of_ceiling": m["mfu"] / e["est_mfu"] if e else None,
                    "measured_step_s": m["step_s"], "est_step_s": e.get("est_step_s"),
                    "measured_peak_gib": m.get("peak_mem_gib"), "est_peak_gib": e.get("est_peak_gib")})
        out.append(row)
    return out


def main(argv=None) -> int:
    """``python -m lorafair.estimate MEASURED_DIR [ESTIMATES_DIR]``: print the measured bench JSON files
    of MEASURED_DIR beside the committed estimates (default results/performance). Needs no pandas."""
    import json
    import sys
    from pathlib import Path

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(main.__doc__, file=sys.stderr)
        return 2
    est_dir = Path(args[1] if len(args) > 1 else "results/performance")
    measured = [r for f in sorted(Path(args[0]).glob("*.json")) for r in json.loads(f.read_text())["rows"]]
    estimates = [json.loads(m.read_text()) for m in sorted(est_dir.glob("*/metrics.json"))]
    if not estimates:
        print(f"no estimates in {est_dir}", file=sys.stderr)
        return 2
    cols = ("workload", "precision", "batch", "checkpointing", "compile", "measured_mfu", "ceiling_mfu",
            "of_ceiling", "measured_step_s", "est_step_s", "measured_peak_gib", "est_peak_gib")
    print(" | ".join(cols))
    for r in compare(measured, estimates):
        print(" | ".join(f"{r[c]:.3g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols)
              if "error" not in r else f"{r['workload']} | error: {r['error']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
