import pytest
import torch

from lorafair import models
from lorafair.errors import LorafairError


def trainable(m):
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def build(name="vit_tiny_random", k=2):
    return models.build(name, k, seed=0)


def test_head_only_trains_only_the_head():
    m, spec = build()
    head = m.get_submodule(spec.head)
    m, info = models.adapt(m, spec, "head")
    assert info["trainable_params"] == sum(p.numel() for p in head.parameters()) == 32 * 2 + 2
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    assert names and all(n.startswith(spec.head) for n in names)


def test_base_is_head_only_for_classification():
    assert models.resolve_method("base") == "head"


def test_full_trains_everything():
    m, spec = build()
    total = sum(p.numel() for p in m.parameters())
    _, info = models.adapt(m, spec, "full")
    assert info["trainable_params"] == total


def test_lora_parameter_count_matches_formula():
    m, spec = build()
    targets = spec.lora_targets(m)
    assert len(targets) == 8  # q and v in 4 layers
    expected = sum(r * (32 + 32) for r in [4] * len(targets)) + (32 * 2 + 2)
    m, info = models.adapt(m, spec, "lora", rank=4, alpha=8)
    assert info["trainable_params"] == expected
    assert info["adapter_layers"] == 4
    lora_names = [n for n, p in m.named_parameters() if p.requires_grad and "lora_" in n]
    assert len(lora_names) == 2 * len(targets)


def test_swin_lora_targets_found():
    m, spec = build("swinv2_tiny_random")
    assert len(spec.lora_targets(m)) == 8  # 4 blocks x (q, v)
    _, info = models.adapt(m, spec, "lora", rank=2)
    assert info["adapter_layers"] == 4


def test_mobilenet_lora_on_pointwise_convs():
    m, spec = models.build("mobilenet_v2", 2, seed=0)
    m, info = models.adapt(m, spec, "lora", rank=8, alpha=16)
    # 34 pointwise convolutions (torchvision MobileNetV2: 16 blocks with a 1x1 expand and a 1x1 project
    # conv, the first block's project conv, and the last 1x1 conv), counted independently of the code
    assert info["adapter_modules"] == 34
    assert info["trainable_params"] == 150_786


@pytest.mark.parametrize("name,key", [
    ("net.vit.encoder.layer.3.attention.q_proj", "net.vit.encoder.layer.3"),
    ("net.swinv2.encoder.layers.1.blocks.0.attention.self.query", "net.swinv2.encoder.layers.1.blocks.0"),
    ("net.features.3.conv.0.0", "net.features.3"),
    ("net.blocks.1.0.conv_pw", "net.blocks.1.0"),
])
def test_layer_key(name, key):
    assert models.layer_key(name) == key


def test_fractional_placement():
    t = [f"m.layer.{i}.attn.{p}" for i in range(10) for p in ("q", "v")]
    front = models.select_layers(t, 0.3, "front", 0)
    assert front == t[:6]
    back = models.select_layers(t, 0.3, "back", 0)
    assert back == t[-6:]
    rnd = models.select_layers(t, 0.5, "random", 7)
    assert len(rnd) == 10 and rnd == models.select_layers(t, 0.5, "random", 7)
    assert len({models.layer_key(x) for x in rnd}) == 5
    with pytest.raises(LorafairError, match="valid choices: front, back, random"):
        models.select_layers(t, 0.5, "middle", 0)


def test_fractional_rank_convention_and_lora_on_fraction():
    assert models.rank_and_fraction(0.5, 1.0) == (1, 0.5)
    assert models.rank_and_fraction(8, 1.0) == (8, 1.0)
    with pytest.raises(LorafairError, match="rank 0 is method 'head'"):
        models.rank_and_fraction(0, 1.0)
    m, spec = build()
    m, info = models.adapt(m, spec, "lora", rank=0.5, placement="back")
    assert info["rank"] == 1 and info["adapter_layers"] == 2
    names = [n for n, p in m.named_parameters() if "lora_A" in n]
    assert len(names) == 4 and all(".layers.2." in n or ".layers.3." in n for n in names)


def test_errors_name_valid_choices():
    with pytest.raises(LorafairError, match="unknown model 'resnet50'; valid choices: mobilenet_v2"):
        models.get_spec("resnet50")
    m, spec = build()
    with pytest.raises(LorafairError, match="unknown method 'qlora'; valid choices: base, head, lora, full, dora, ia3"):
        models.adapt(m, spec, "qlora")
    with pytest.raises(LorafairError, match="match no module"):
        models.adapt(m, spec, "lora", target_modules=["nonexistent"])


def test_paper_names_and_timm_aliases_resolve():
    assert models.get_spec("google/vit-base-patch16-224-in21k").name == "vit_base"
    assert models.get_spec("swinv2_large_window12_192.ms_in22k").name == "swinv2_large"


def test_unreachable_hub_points_to_offline_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(LorafairError, match="--profile offline"):
        models.build("vit_base", 2)


def test_efficientnet_weights_load_and_predict():
    m, spec = models.build("efficientnet_lite0", 3, seed=0)
    out = m(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 3)
