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
