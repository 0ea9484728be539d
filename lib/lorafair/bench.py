"""``lorafair bench``: training throughput of the paper architectures with random weights.

Throughput does not depend on weight values, so every workload builds its architecture from a
config (no download) and trains on synthetic inputs of the right shape. For each workload the
table reports step time (median after warm-up), samples/s and tokens/s, peak memory, the FLOPs of
one step counted by ``torch.utils.flop_counter`` (matmuls and attention, forward and backward) and
MFU = counted FLOP/s / the measured peak of the device (a large bf16 matmul on a GPU, fp32 on a
CPU). Language-model rows also give the MFU under the usual 6N (full) / 4N (LoRA: no weight
gradients of the frozen matrices) tokens counting.

Options: precision ``bf16`` (bf16 weights and AdamW states; GPUs), ``autocast`` (fp32 weights,
bf16 autocast; the original study's setting), ``fp32``; SDPA attention (transformers' default, set
explicitly); fused AdamW on GPUs; ``compile`` (torch.compile); ``checkpointing`` (gradient
checkpointing). ``scale='tiny'`` gives the same architectures at toy sizes for tests on a CPU.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from . import methods as methods_mod
from . import runs as runs_mod
from .errors import LorafairError, choose
from .models import _attention_qv

PRECISIONS = ("bf16", "autocast", "fp32")


@dataclass
class Workload:
    name: str
    arch: str        # vit_base, swinv2_large, llama_7b
    method: str      # full, or an adapter method of lorafair.methods (lora, dora, ia3)


def _vit_config(scale: str):
    from transformers import ViTConfig

    if scale == "paper":
        return ViTConfig(image_size=224, patch_size=16, num_labels=2)  # ViT-Base/16 defaults
    return ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, num_labels=2)


def _swin_config(scale: str):
    from transformers import Swinv2Config

    if scale == "paper":  # Swin-v2-Large, window 12, 192 px
        return Swinv2Config(image_size=192, patch_size=4, embed_dim=192, depths=[2, 2, 18, 2],
                            num_heads=[6, 12, 24, 48], window_size=12, num_labels=2)
    return Swinv2Config(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                        window_size=4, num_labels=2)


def _llama_config(scale: str):
    from transformers import LlamaConfig

    if scale == "paper":  # Llama-2 7B
        return LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                           num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
    return LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256)


ARCHS = ("vit_base", "swinv2_large", "llama_7b")
#: adapter settings per architecture: the original study's rank and alpha (vision 16/16, Llama 8/16)
ADAPTER_SETTINGS = {"vit_base": {"rank": 16, "alpha": 16}, "swinv2_large": {"rank": 16, "alpha": 16},
                    "llama_7b": {"rank": 8, "alpha": 16}}


def bench_methods() -> tuple[str, ...]:
    """The methods a workload can train: full fine-tuning and every adapter method."""
    return methods_mod.names(("all", "adapter"))


def build(arch: str, method: str, scale: str, dtype: torch.dtype, checkpointing: bool, device: str = "cpu"):
    """A random-weight model of ``arch`` adapted for ``method``; returns (model, params for 6N counting)."""
    choose("architecture", arch, ARCHS)
    choose("method", method, bench_methods())
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its precision (no fp32 copy; `.to` cannot swap fake tensors)
    try:
        return _build(arch, method, scale, checkpointing, device)
    finally:
        torch.set_default_dtype(previous)


def _build(arch, method, scale, checkpointing, device):
    import transformers
    from peft import get_peft_model

    with torch.device(device):  # built where it trains: a 7B model never passes through host memory
        if arch == "vit_base":
            cfg = _vit_config(scale)
            model = transformers.ViTForImageClassification(cfg)
        elif arch == "swinv2_large":
            cfg = _swin_config(scale)
            model = transformers.Swinv2ForImageClassification(cfg)
        else:
            cfg = _llama_config(scale)
            cfg._attn_implementation = "sdpa"
            model = transformers.LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "config"):
            model.config.use_cache = False
    m = methods_mod.get(method)
    if m.trains == "adapter":  # on the query/value projections; for the vision models the head trains too
        lm = arch == "llama_7b"
        adapter = m.peft_config(ADAPTER_SETTINGS[arch], _attention_qv(model), None if lm else ["classifier"],
                                "CAUSAL_LM" if lm else None)
        if checkpointing:
            model.enable_input_require_grads()
        with torch.device(device):  # adapters created next to their layers (no move: fake tensors cannot)
            model = get_peft_model(model, adapter)
    return model, n_params


def _inputs(arch: str, model, batch: int, seq: int, device, dtype=torch.float32):
    """Synthetic inputs; images in the weights' dtype (Swin-v2's patch convolution does not cast them)."""
    if arch == "llama_7b":
        vocab = model.config.vocab_size
        ids = torch.randint(0, vocab, (batch, seq), device=device)
        return {"input_ids": ids, "labels": ids}, batch * seq
    size = model.config.image_size
    x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    return {"pixel_values": x, "labels": torch.randint(0, 2, (batch,), device=device)}, 0


def matmul_peak(device: str, n: int | None = None, repeats: int = 10) -> float:
    """Measured FLOP/s of a large square matmul: bf16 on a GPU, fp32 on a CPU."""
    cuda = device.startswith("cuda")
    n = n or (8192 if cuda else 1024)
    dtype = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if cuda:
        torch.cuda.synchronize()
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0)


def register_cpu_attention_flops() -> None:
    """The CPU flash-attention kernels have no FLOP formula in torch; count them like the CUDA ones."""
    from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    fwd, bwd = aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_flash_attention_for_cpu_backward
    if fwd not in flop_registry:
        @register_flop_formula(fwd)
        def _fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return sdpa_flop_count(query_shape, key_shape, value_shape)
    if bwd not in flop_registry:
        @register_flop_formula(bwd)
        def _bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def run_workload(w: Workload, scale: str = "tiny", batch: int = 8, seq: int = 256, steps: int = 10, warmup: int = 3,
                 precision: str = "autocast", compile: bool = False, checkpointing: bool = False,
                 device: str | None = None, peak: float | None = None) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    register_cpu_attention_flops()  # CPU attention kernels count like the CUDA ones
    choose("precision", precision, PRECISIONS)
    choose("scale", scale, ("tiny", "paper"))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    if precision == "bf16" and not cuda:
        raise LorafairError("precision 'bf16' (bf16 weights) is for GPUs; use 'fp32' or 'autocast' on a CPU")
    model, n_params = build(w.arch, w.method, scale, torch.bfloat16 if precision == "bf16" else torch.float32,
                            checkpointing, device)
    model = model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=cuda or None)
    step_model = torch.compile(model) if compile else model
    autocast = torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=precision == "autocast" and cuda)
    inputs, tokens = _inputs(w.arch, model, batch, seq, device, torch.bfloat16 if precision == "bf16" else torch.float32)

    def step(m=step_model):
        with autocast:
            loss = m(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    with FlopCounterMode(display=False) as fc:  # eager: compiled kernels bypass the FLOP counter
        step(model)
    flops = fc.get_total_flops()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    peak = peak or matmul_peak(device)
    row = {"workload": w.name, "arch": w.arch, "method": w.method, "scale": scale, "precision": precision,
           "compile": compile, "checkpointing": checkpointing, "batch": batch, "seq": seq if tokens else None,
           "step_s": t, "samples_per_s": batch / t, "tokens_per_s": tokens / t if tokens else None,
           "trainable_params": int(sum(p.numel() for p in params)), "flops_per_step": flops,
           "mfu": flops / t / peak, "peak_flops": peak,
           "peak_mem_gib": (torch.cuda.max_memory_allocated() / 2 ** 30) if cuda else _cpu_rss_gib()}
    if tokens:
        factor = 6 if methods_mod.get(w.method).trains == "all" else 4  # frozen weights: no weight gradients
        row["mfu_6n"] = factor * n_params * tokens / t / peak
    del model, opt, step_model
    if cuda:
        torch.cuda.empty_cache()
    return row


def _cpu_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # kB on Linux


DEFAULT_WORKLOADS = ("vit_base:full", "vit_base:lora", "swinv2_large:full", "swinv2_large:lora",
                     "llama_7b:lora", "llama_7b:full")


def parse_workloads(specs) -> list[Workload]:
    out = []
    for s in specs:
        if ":" not in s:
            raise LorafairError(f"workload {s!r} must be ARCH:METHOD, e.g. vit_base:lora; architectures: {', '.join(ARCHS)}")
        arch, method = s.split(":", 1)
        choose("architecture", arch, ARCHS)
        choose("method", method, bench_methods())
        out.append(Workload(s, arch, method))
    return out


def run(specs=DEFAULT_WORKLOADS, **kw) -> "list[dict]":
    """Every workload; a failure (e.g. out of memory) becomes a row with its error, not a crash."""
    device = kw.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    peak = matmul_peak(device)
    rows = []
    for w in parse_workloads(specs):
        try:
            rows.append(run_workload(w, device=device, peak=peak, **{k: v for k, v in kw.items() if k != "device"}))
        except torch.OutOfMemoryError as e:
            rows.append({"workload": w.name, "error": f"out of memory: {str(e).splitlines()[0]}"})
            torch.cuda.empty_cache()
        except RuntimeError as e:  # the CPU allocator raises a plain RuntimeError
            if "allocate" not in str(e):
                raise
            rows.append({"workload": w.name, "error": f"out of memory: {str(e).splitlines()[0]}"})
    return rows


def environment() -> dict:
    info = runs_mod.environment()  # includes the device
    info["date_utc"] = time.strftime("%Y-%m-%d", time.gmtime())
    return info

