"""`lorafair bench` on tiny configurations of the paper architectures (CPU), and the accelerate
configuration files for multi-GPU runs."""

from pathlib import Path

import pytest

from lorafair import bench
from lorafair.errors import LorafairError

ROOT = Path(__file__).resolve().parents[1]


def test_bench_tiny_every_workload():
    rows = bench.run(bench.DEFAULT_WORKLOADS, scale="tiny", batch=2, seq=16, steps=2, warmup=1, precision="fp32")
    assert [r["workload"] for r in rows] == list(bench.DEFAULT_WORKLOADS)
    by = {r["workload"]: r for r in rows}
    for r in rows:
        assert r["step_s"] > 0 and r["flops_per_step"] > 0
        assert 0 < r["mfu"] < 1 and r["samples_per_s"] == pytest.approx(2 / r["step_s"])
    for arch in ("vit_base", "swinv2_large", "llama_7b"):
        assert by[f"{arch}:lora"]["trainable_params"] < by[f"{arch}:full"]["trainable_params"]
        # LoRA skips the weight gradients of frozen matrices: fewer FLOPs per step
        assert by[f"{arch}:lora"]["flops_per_step"] < by[f"{arch}:full"]["flops_per_step"]
    lm = by["llama_7b:full"]
    assert lm["tokens_per_s"] == pytest.approx(2 * 16 / lm["step_s"]) and 0 < lm["mfu_6n"] < 1


def test_bench_checkpointing_recomputes_the_forward():
    plain = bench.run_workload(bench.Workload("l", "llama_7b", "full"), batch=2, seq=16, steps=1, warmup=1,
                               precision="fp32", peak=1e12)
    ckpt = bench.run_workload(bench.Workload("l", "llama_7b", "full"), batch=2, seq=16, steps=1, warmup=1,
                              precision="fp32", checkpointing=True, peak=1e12)
    assert ckpt["flops_per_step"] > plain["flops_per_step"]


def test_bench_errors_name_valid_choices():
    with pytest.raises(LorafairError, match="valid choices: vit_base, swinv2_large, llama_7b"):
        bench.parse_workloads(["vit:full"])
    with pytest.raises(LorafairError, match="must be ARCH:METHOD"):
        bench.parse_workloads(["vit_base"])
    with pytest.raises(LorafairError, match="for GPUs"):
        bench.run_workload(bench.Workload("v", "vit_base", "full"), precision="bf16", device="cpu", peak=1.0)


@pytest.mark.parametrize("name,kind", [("fsdp_full", "FSDP"), ("ddp_lora", "MULTI_GPU"),
                                       ("deepspeed_zero2_lora", "DEEPSPEED")])
def test_accelerate_configs_are_valid(name, kind):
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert cfg.distributed_type.value == kind and cfg.mixed_precision == "bf16" and not cfg.use_cpu


def test_bench_compiled_step_counts_the_same_flops():
    kw = dict(batch=2, steps=1, warmup=1, precision="fp32", peak=1e12)
    eager = bench.run_workload(bench.Workload("v", "vit_base", "lora"), **kw)
    compiled = bench.run_workload(bench.Workload("v", "vit_base", "lora"), compile=True, **kw)
    assert compiled["flops_per_step"] == eager["flops_per_step"] > 0 and compiled["compile"]


# --- lorafair bench --estimate: a roofline and memory model on fake tensors ---------------------

from lorafair import estimate  # noqa: E402

TOY_GPU = estimate.GPUSpec("toy", bf16_flops=1e12, fp32_flops=1e11, bandwidth=1e9, memory=1e9)


def test_roofline_costs_operations_by_hand():
    import torch

    mode = estimate.RooflineMode(TOY_GPU)
    a, b = torch.ones(64, 32), torch.ones(32, 16)
    big = torch.ones(1024, 1024, dtype=torch.bfloat16)
    x, y = torch.ones(256), torch.ones(1)
    with mode:
        a @ b                   # fp32: 65,536 FLOPs; 14,336 bytes -> memory-bound on the toy GPU
    assert mode.flops == 2 * 64 * 32 * 16 and mode.bytes == (64 * 32 + 32 * 16 + 64 * 16) * 4
    assert mode.seconds == pytest.approx(max(65536 / 1e11, 14336 / 1e9))
    fast = estimate.RooflineMode(estimate.GPUSpec("toy", 1e12, 1e11, 1e12, 1e9))
    with fast:
        big @ big               # bf16: compute-bound at the bf16 peak
        x + y.expand(256)       # element-wise, the broadcast operand read once: (256 + 1 + 256) * 4 bytes
    assert fast.flops == 2 * 1024 ** 3
    assert fast.by_category["matmul"] == pytest.approx(2 * 1024 ** 3 / 1e12)
    assert fast.by_category["memory-bound other"] == pytest.approx((256 + 1 + 256) * 4 / 1e12)
    assert estimate.tensor_bytes(torch.ones(4).expand(3, 4)) == 16


def test_estimate_counts_the_flops_of_a_real_step_and_exact_weight_and_adam_memory():
    import torch

    w = bench.Workload("l", "llama_7b", "full")
    real = bench.run_workload(w, batch=2, seq=16, steps=1, warmup=1, precision="fp32", peak=1e12)
    est = estimate.estimate_workload(w, scale="tiny", batch=2, seq=16, precision="fp32", gpu="h200")
    assert est["flops_per_step"] == real["flops_per_step"] > 0  # the fake step is the real step's shapes
    model, _ = bench.build("llama_7b", "full", "tiny", torch.float32, False)
    n_all = sum(p.numel() for p in model.parameters())
    n_tensors = sum(1 for p in model.parameters() if p.requires_grad)
    assert est["mem_parameter_gib"] * 2 ** 30 == n_all * 4
    # AdamW: two fp32 moments per trainable weight, one fp32 step counter per tensor (fused kernel)
    assert est["mem_optstate_gib"] * 2 ** 30 == 2 * 4 * est["trainable_params"] + 4 * n_tensors
    assert est["est_step_s"] > 0 and 0 < est["est_mfu"] < 1 and est["est_peak_gib"] > est["mem_parameter_gib"]
    assert sum(est[f"share_{k}"] for k in estimate.SHARES if f"share_{k}" in est) == pytest.approx(1)


def test_estimate_lora_and_checkpointing_behave_as_they_should():
    kw = dict(scale="tiny", batch=2, seq=64, precision="autocast")
    full = estimate.estimate_workload(bench.Workload("f", "llama_7b", "full"), **kw)
    lora = estimate.estimate_workload(bench.Workload("l", "llama_7b", "lora"), **kw)
    ckpt = estimate.estimate_workload(bench.Workload("f", "llama_7b", "full"), checkpointing=True, **kw)
    assert lora["mem_optstate_gib"] < full["mem_optstate_gib"] / 10   # states for the adapters only
    assert lora["flops_per_step"] < full["flops_per_step"]            # no weight gradients of frozen layers
    assert ckpt["flops_per_step"] > full["flops_per_step"]            # the forward is recomputed
    assert ckpt["mem_activation_gib"] < full["mem_activation_gib"]    # fewer activations kept
    assert full["share_cast"] > 0                                     # autocast copies the fp32 weights


def test_estimate_errors_and_cli(capsys):
    from lorafair.cli import main

    with pytest.raises(LorafairError, match="valid choices: h200, h100, a100"):
        estimate.estimate_workload(bench.Workload("v", "vit_base", "full"), scale="tiny", gpu="v100")
    assert main(["bench", "--estimate", "--compile"]) == 2
    assert "--compile is measured only" in capsys.readouterr().err
    assert main(["bench", "--estimate", "--workloads", "vit_base:lora", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "ESTIMATE" in out and "not a measurement" in out and "vit_base:lora" in out


def test_estimate_runs_every_workload_in_bf16_weights():
    """bf16 weights cannot be measured on a CPU; the fake step still runs them, which once caught
    images left in fp32 for Swin-v2's patch convolution."""
    rows = estimate.run(bench.DEFAULT_WORKLOADS, scale="tiny", batch=2, seq=16, precision="bf16")
    assert [r["workload"] for r in rows] == list(bench.DEFAULT_WORKLOADS)
    by = {r["workload"]: r for r in rows}
    for arch in ("vit_base", "swinv2_large", "llama_7b"):
        full, lora = by[f"{arch}:full"], by[f"{arch}:lora"]
        # bf16 weights and AdamW states: 2 bytes per weight, moments in the weights' dtype
        assert full["mem_parameter_gib"] * 2 ** 30 == 2 * sum_params(arch)
        assert lora["mem_optstate_gib"] < full["mem_optstate_gib"]


def sum_params(arch):
    import torch

    model, _ = bench.build(arch, "full", "tiny", torch.bfloat16, False)
    return sum(p.numel() for p in model.parameters())


def test_compare_puts_measurements_beside_their_estimates(tmp_path):
    import json

    est = {"workload": "vit_base:full", "scale": "paper", "precision": "bf16", "batch": 256, "checkpointing": False,
           "seq": None,
           "est_mfu": 0.5, "est_step_s": 0.04, "est_peak_gib": 14.0}
    lm = {**est, "workload": "llama_7b:lora", "batch": 16, "seq": 256, "est_mfu": 0.6}
    measured = [{"workload": "vit_base:full", "scale": "paper", "precision": "bf16", "batch": 256, "checkpointing": False,
                 "compile": False, "seq": None, "mfu": 0.2, "step_s": 0.1, "peak_mem_gib": 15.5},
                {"workload": "llama_7b:lora", "scale": "paper", "precision": "bf16", "batch": 16, "checkpointing": False,
                 "compile": False, "seq": 512, "mfu": 0.3, "step_s": 0.5, "peak_mem_gib": 40.0},
                {"workload": "swinv2_large:full", "error": "out of memory: ..."}]
    rows = estimate.compare(measured, [est, lm])
    assert rows[0]["of_ceiling"] == pytest.approx(0.4) and rows[0]["est_peak_gib"] == 14.0
    assert rows[1]["ceiling_mfu"] is None and rows[1]["of_ceiling"] is None  # another sequence length
    assert rows[2] == {"workload": "swinv2_large:full", "error": "out of memory: ..."}
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "vit.json").write_text(json.dumps({"environment": {}, "rows": measured[:1]}))
    (tmp_path / "e" / "abc").mkdir(parents=True)
    (tmp_path / "e" / "abc" / "metrics.json").write_text(json.dumps(est))
    assert estimate.main([str(tmp_path / "m"), str(tmp_path / "e")]) == 0
    assert estimate.main([str(tmp_path / "m"), str(tmp_path / "nothing")]) == 2
