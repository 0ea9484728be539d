"""One training entry point for every classification experiment, on ``accelerate``.

``fit_predict`` trains the trainable parameters of a model with AdamW (weight decay 0.001, cosine
schedule with 1% warm-up, as the original study), evaluates validation accuracy after every epoch,
keeps the epoch with the best validation accuracy (ties: the earlier epoch), and returns per-example
outputs on every split. The precision (bf16 autocast or fp32) is chosen per model by
``lorafair.precision``: bf16 on GPUs (with fused AdamW), and on CPUs only for the transformer models
where the CPU has native bf16. Under ``accelerate launch`` batches are sharded over processes and
outputs gathered.

Head-only training (``fit_predict_head``) runs the frozen backbone once per example and view (the
image augmentation has two: as is and mirrored), caches the head's input features, and then trains
the head alone on them with the same batches, augmentation draws and dropout as the full loop.
Evaluation batches texts of similar length together and uses merged LoRA weights (a merged copy for
the per-epoch validation), which gives the same outputs faster.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from .errors import LorafairError
from .models import set_train_mode


@dataclass
class TrainConfig:
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 32
    eval_batch_size: int = 128
    weight_decay: float = 0.001
    warmup_ratio: float = 0.01
    select: str = "best_val"        # or "last"
    precision: str = "fp32"         # "bf16" (autocast, fp32 weights) or "fp32": lorafair.precision
    seed: int = 13
    compile: bool = False           # torch.compile the model (GPUs; pays off on long runs)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (large models)
    num_workers: int = 0            # DataLoader workers (0: inputs are pre-encoded tensors in memory)


class IndexDataset(torch.utils.data.Dataset):
    def __init__(self, indices):
        self.indices = list(map(int, indices))

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.indices[i]


def make_accelerator(precision: str = "fp32"):
    """An Accelerator for one run. Accelerate keeps one mixed-precision setting per process; a
    single process that trains several runs (a chapter with one worker) may need bf16 for one model
    and fp32 for the next, so outside a distributed launch the setting is reset between runs."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, DistributedType

    cuda = torch.cuda.is_available()
    mixed = "bf16" if precision == "bf16" else "no"
    state = AcceleratorState._shared_state
    if state and str(state.get("mixed_precision")) != mixed and state.get("distributed_type") == DistributedType.NO:
        AcceleratorState._reset_state()
    return Accelerator(cpu=not cuda, mixed_precision=mixed)


def speedups(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """Gradient checkpointing and torch.compile where asked (book/methods.md, "Performance")."""
    if cfg.gradient_checkpointing:
        net = model
        while not hasattr(net, "gradient_checkpointing_enable") and hasattr(net, "net"):
            net = net.net
        if not hasattr(net, "gradient_checkpointing_enable"):
            raise ValueError(f"{type(model).__name__} does not support gradient checkpointing")
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.compile:
        model.compile()
    return model


def _loader_kwargs(cfg: TrainConfig) -> dict:
    return {"num_workers": cfg.num_workers, "pin_memory": torch.cuda.is_available(),
            "persistent_workers": cfg.num_workers > 0}


def _optimizer(model: nn.Module, cfg: TrainConfig, batches_per_epoch: int):
    """AdamW over the trainable parameters (fused on GPUs) with a cosine schedule and warm-up."""
    from transformers import get_cosine_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=torch.cuda.is_available() or None)
    steps = cfg.epochs * batches_per_epoch
    return opt, get_cosine_schedule_with_warmup(opt, int(cfg.warmup_ratio * steps), steps), steps


class NonFiniteLoss(LorafairError):
    """The training loss became NaN or infinite: the run stops and stores nothing."""


def check_finite(loss: torch.Tensor, epoch: int, step: int, lr: float, accelerator=None) -> None:
    """Stop a run whose training loss is not a finite number (``NonFiniteLoss``, one line). Under a
    distributed launch every rank stops together (the flag is summed over ranks), so that no rank
    waits forever in a collective the others have left."""
    bad = (~torch.isfinite(loss.detach())).any().float().reshape(1)
    if accelerator is not None and accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, "sum")
    if bad.item() > 0:
        raise NonFiniteLoss(f"the training loss is {float(loss.detach().float().reshape(-1)[0])} at epoch {epoch}, "
                            f"step {step} (learning rate {lr:g}: most likely too high; try a smaller one)")


def _step(accelerator, loss: torch.Tensor, opt, sched, losses: list, bar, epoch: int, lr: float = float("nan")) -> None:
    """Backward, optimizer and schedule step, loss bookkeeping and the progress bar; a loss that is
    not finite stops the run (``check_finite``)."""
    try:
        check_finite(loss, epoch, len(losses) + 1, lr, accelerator)
    except NonFiniteLoss:
        bar.close()  # the bar leaves the line, so the one-line error stands alone
        raise
    accelerator.backward(loss)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    losses.append(loss.item())
    bar.update(1)
    bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-10:]):.3f}")


def merged_for_inference(model: nn.Module) -> nn.Module:
    """LoRA weights merged into the base layers for the final predictions: the same function, and
    unmerged LoRA inference was measured 1.3-1.8x slower on a CPU. Other models pass through."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    return model.eval()


def merged_copy(model: nn.Module) -> nn.Module:
    """A merged copy of a LoRA model for a validation pass (training continues on the original, whose
    frozen weights stay untouched); other models are returned as they are."""
    import copy

    from peft import PeftModel

    return merged_for_inference(copy.deepcopy(model)) if isinstance(model, PeftModel) else model


def _trainable_state(model: nn.Module) -> dict:
    keep = {n for n, p in model.named_parameters() if p.requires_grad}
    keep |= {n for n, _ in model.named_buffers()}
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if k in keep}


def by_length(encode, indices) -> list:
    """``indices`` ordered by text length (stable) where the encoder knows lengths, else as given:
    batches of similar length waste no compute on padding."""
    order = list(indices)
    if hasattr(encode, "lengths"):
        order = [order[i] for i in np.argsort(encode.lengths[torch.as_tensor(order)].numpy(), kind="stable")]
    return order


def predict(model: nn.Module, encode: Callable, indices, labels: torch.Tensor, accelerator,
            batch_size: int, desc: str = "eval", progress: bool = False) -> dict:
    """Logits for ``indices`` (in order), with per-example loss. Texts are batched by length (the
    encoder cuts each batch to its longest text); the outputs are put back in ``indices`` order."""
    order = by_length(encode, indices)
    loader = torch.utils.data.DataLoader(IndexDataset(order), batch_size=batch_size, shuffle=False,
                                         collate_fn=lambda ids: (ids, encode(ids, train=False, generator=None)))
    loader = accelerator.prepare(loader)
    model.eval()
    out_ids, out_logits = [], []
    with torch.inference_mode():
        for ids, batch in tqdm(loader, desc=desc, leave=False, disable=not progress, file=sys.stderr):
            with accelerator.autocast():
                logits = model(**batch).float()
            ids_t = torch.as_tensor(ids, device=logits.device)
            ids_t, logits = accelerator.gather_for_metrics((ids_t, logits))
            out_ids.append(ids_t.cpu())
            out_logits.append(logits.cpu())
    ids = torch.cat(out_ids).numpy()
    logits = torch.cat(out_logits)
    order = np.argsort(ids, kind="stable")
    pos = {int(v): i for i, v in enumerate(ids[order])}
    logits = logits[order][[pos[int(i)] for i in indices]]
    y = labels[torch.as_tensor(list(indices))]
    loss = nn.functional.cross_entropy(logits, y, reduction="none")
    return {"logits": logits, "loss": loss}


OBJECTIVES = ("erm", "group_variance", "group_balanced")


def group_objective(objective: str, losses: torch.Tensor, groups: torch.Tensor | None,
                    weights: torch.Tensor | None = None, penalty: float = 0.0) -> torch.Tensor:
    """The training loss of a batch from its per-example cross-entropies ``losses``:

    - ``erm``: their mean;
    - ``group_variance``: their mean plus ``penalty`` times the (population) variance, over the groups
      present in the batch, of each group's mean loss (a FairLoRA-style regulariser);
    - ``group_balanced``: their mean weighted by ``weights`` (each example's inverse group share of
      the training split, ``balanced_weights``), so every group weighs the same."""
    if objective == "erm":
        return losses.mean()
    if objective == "group_balanced":
        return (losses * weights).sum() / weights.sum()
    if objective == "group_variance":
        present, inv = torch.unique(groups, return_inverse=True)
        sums = torch.zeros(len(present), dtype=losses.dtype).index_add(0, inv, losses)
        counts = torch.zeros(len(present), dtype=losses.dtype).index_add(0, inv, torch.ones_like(losses))
        means = sums / counts
        return losses.mean() + penalty * ((means - means.mean()) ** 2).mean()
    raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")


def balanced_weights(groups: torch.Tensor, train_idx) -> torch.Tensor:
    """Per example, the training split's size over (number of groups x its group's training count)."""
    g = groups[torch.as_tensor(train_idx)]
    present, counts = torch.unique(g, return_counts=True)
    share = torch.zeros(int(groups.max()) + 1)
    share[present] = counts.float()
    w = torch.zeros(len(groups))
    ok = share[groups] > 0
    w[ok] = len(g) / (len(present) * share[groups[ok]])
    return w


def fit_predict(model: nn.Module, freeze_norm_stats: bool, encode: Callable, labels: torch.Tensor,
                splits: pd.Series, cfg: TrainConfig, progress: bool = True, objective: str = "erm",
                groups: torch.Tensor | None = None, penalty: float = 0.0) -> tuple[pd.DataFrame, dict]:
    """Train on ``splits == 'train'``, select on ``'val'``, return outputs for every example.

    ``encode(ids, train, generator) -> dict`` builds a model-input batch (``train=True`` applies the
    training augmentation, drawn from ``generator``). ``objective`` (``group_objective``) with the
    examples' ``groups`` (integer codes) replaces the mean cross-entropy. Returns (outputs, history)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    if objective != "erm" and groups is None:
        raise ValueError(f"objective {objective!r} needs the examples' groups")

    accelerator = make_accelerator(cfg.precision)
    torch.manual_seed(cfg.seed)
    train_idx = np.flatnonzero((splits == "train").to_numpy())
    val_idx = np.flatnonzero((splits == "val").to_numpy())
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    loader = torch.utils.data.DataLoader(
        IndexDataset(train_idx), batch_size=cfg.batch_size, shuffle=True, generator=loader_gen,
        collate_fn=lambda ids: (encode(ids, train=True, generator=aug_gen), labels[torch.as_tensor(ids)],
                                torch.as_tensor(ids)), **_loader_kwargs(cfg))
    weights = balanced_weights(groups, train_idx) if objective == "group_balanced" else None
    model = speedups(model, cfg)
    opt, sched, steps = _optimizer(model, cfg, len(loader))
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)
    history = {"epoch": [], "train_loss": [], "val_accuracy": [], "seconds": []}
    best_acc, best_state, best_epoch = -1.0, None, 0
    bar = tqdm(total=steps, desc="train", leave=False, disable=not progress, file=sys.stderr)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.time()
        set_train_mode(model, freeze_norm_stats)
        losses = []
        for batch, y, ids in loader:
            with accelerator.autocast():
                logits = model(**batch)
            if objective == "erm":
                loss = nn.functional.cross_entropy(logits.float(), y)
            else:
                ids = ids.cpu()
                loss = group_objective(objective, nn.functional.cross_entropy(logits.float(), y, reduction="none").cpu(),
                                       groups[ids], None if weights is None else weights[ids], penalty)
            _step(accelerator, loss, opt, sched, losses, bar, epoch, cfg.lr)
        if len(val_idx):
            out = predict(merged_copy(accelerator.unwrap_model(model)), encode, val_idx, labels, accelerator,
                          cfg.eval_batch_size)
            acc = float((out["logits"].argmax(1) == labels[torch.as_tensor(val_idx)]).float().mean())
        else:  # no validation split (MIA shadow models): the last epoch is kept
            acc = float("nan")
        history["epoch"].append(epoch)
        history["train_loss"].append(float(np.mean(losses)))
        history["val_accuracy"].append(acc)
        history["seconds"].append(round(time.time() - t0, 2))
        if cfg.select == "last" or not len(val_idx) or acc > best_acc:
            best_acc, best_epoch = acc, epoch
            if cfg.select == "best_val" and epoch < cfg.epochs:
                best_state = _trainable_state(accelerator.unwrap_model(model))
            else:
                best_state = None  # the current weights are the selected ones
    bar.close()
    if best_state is not None:
        accelerator.unwrap_model(model).load_state_dict(best_state, strict=False)
    model = merged_for_inference(accelerator.unwrap_model(model))
    history["world_size"] = accelerator.num_processes
    history["selected_epoch"] = best_epoch
    history["selected_val_accuracy"] = best_acc
    history["train_config"] = asdict(cfg)
    history["precision"] = cfg.precision
    all_idx = np.arange(len(labels))
    out = predict(model, encode, all_idx, labels, accelerator, cfg.eval_batch_size, "predict", progress)
    return outputs_table(out["logits"], out["loss"], labels), history


class HeadOnFeatures(nn.Module):
    """A classification head applied to cached features, with the dropout the model applies to its
    head's input in training."""

    def __init__(self, head: nn.Module, dropout: float | None):
        super().__init__()
        self.dropout = nn.Dropout(dropout or 0.0)
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))


class FeatureEncoder:
    """Serves cached features; ``train=True`` draws each example's view (augmentation) exactly as the
    source encoder ``draw_views`` would, from the same generator."""

    def __init__(self, features: list[torch.Tensor], source):
        self.features = features
        self.source = source

    def __call__(self, ids, train: bool, generator=None) -> dict:
        idx = torch.as_tensor(list(ids))
        x = self.features[0][idx].clone()
        if train and len(self.features) > 1:
            views = torch.as_tensor(self.source.draw_views(len(idx), generator))
            for v in range(1, len(self.features)):
                x[views == v] = self.features[v][idx[views == v]]
        return {"features": x}


class _Stop(Exception):
    pass


def head_features(model: nn.Module, head: str, encode, indices, view: int, batch_size: int,
                  precision: str = "fp32") -> torch.Tensor:
    """The input of module ``head`` for every example of ``indices`` (in order) in augmentation view
    ``view``, with the model in eval mode; the rest of the forward pass is skipped. A head applied to
    every position of a sequence (Llama-style classifiers, which then pool the logits of the last
    non-padding token) gets that token's features: the head is linear per position, so its logits
    are the model's."""
    module = model.get_submodule(head)
    captured: dict = {}

    def hook(_mod, args):
        captured["x"] = args[0]
        raise _Stop

    device = next(model.parameters()).device
    order = by_length(encode, indices)
    handle = module.register_forward_pre_hook(hook)
    model.eval()
    out = {}
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            for i in range(0, len(order), batch_size):
                ids = order[i:i + batch_size]
                batch = {k: v.to(device) for k, v in encode.view(ids, [view] * len(ids)).items()}
                try:
                    model(**batch)
                except _Stop:
                    pass
                x = captured.pop("x").float()
                if x.dim() == 3:
                    pad = model.net.config.pad_token_id
                    tokens = batch["input_ids"]
                    last = (torch.arange(tokens.shape[1], device=device) * (tokens != pad).int()).argmax(-1)
                    x = x[torch.arange(len(x), device=device), last]
                for j, k in enumerate(ids):
                    out[int(k)] = x[j].cpu()
    finally:
        handle.remove()
    return torch.stack([out[int(k)] for k in indices])


def encoder_digest(encode) -> str:
    """sha256 of the tensors an encoder serves (its inputs, as the model sees them)."""
    h = hashlib.sha256()
    for name in ("images", "input_ids", "attention_mask", "mean", "std"):
        t = getattr(encode, name, None)
        if t is not None:
            h.update(name.encode())
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_features(model: nn.Module, head: str, encode, views: int, batch_size: int, precision: str,
                    key: str | None, cache_dir: Path | None) -> tuple[list[torch.Tensor], bool]:
    """Every example's features in every view, from ``cache_dir/<key>-<inputs>.safetensors`` when a
    run before this one computed them (a frozen backbone gives the same features to every seed),
    else computed and stored there. ``key`` names what else decides the features (model, precision,
    versions); None: no disk cache."""
    from safetensors.torch import load_file, save_file

    path = None
    if key is not None and cache_dir is not None:
        digest = hashlib.sha256(f"{key}|{encoder_digest(encode)}|{views}|{precision}".encode()).hexdigest()[:20]
        path = Path(cache_dir) / f"{digest}.safetensors"
        if path.exists():
            stored = load_file(str(path))
            return [stored[f"view{v}"] for v in range(views)], True
    n = len(encode.images if hasattr(encode, "images") else encode.input_ids)
    feats = [head_features(model, head, encode, range(n), v, batch_size, precision) for v in range(views)]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        save_file({f"view{v}": f.contiguous() for v, f in enumerate(feats)}, str(tmp))
        os.replace(tmp, path)  # atomic: a concurrent run reads a whole file or none
    return feats, False


def fit_predict_head(model: nn.Module, head: str, dropout: float | None, encode: Callable, labels: torch.Tensor,
                     splits: pd.Series, cfg: TrainConfig, progress: bool = True, cache_key: str | None = None,
                     cache_dir: Path | None = None) -> tuple[pd.DataFrame, dict]:
    """Head-only training on cached features: one backbone pass per example and augmentation view
    (shared by every run of the same frozen backbone and inputs through ``cache_dir``), then
    ``fit_predict`` on the head alone."""
    import dataclasses

    t0 = time.time()
    if torch.cuda.is_available():
        model = model.to("cuda")
    feats, from_cache = cached_features(model, head, encode, getattr(encode, "views", 1), cfg.eval_batch_size,
                                        cfg.precision, cache_key, cache_dir)
    feature_seconds = round(time.time() - t0, 2)
    head_model = HeadOnFeatures(model.get_submodule(head).cpu(), dropout)
    hcfg = dataclasses.replace(cfg, compile=False, gradient_checkpointing=False, precision="fp32")
    out, history = fit_predict(head_model, False, FeatureEncoder(feats, encode), labels, splits, hcfg, progress)
    history["train_config"] = asdict(cfg)
    history["precision"] = cfg.precision
    history["cached_features"] = {"views": len(feats), "dim": int(feats[0].shape[1]), "seconds": feature_seconds,
                                  "from_disk_cache": from_cache}
    return out, history


def outputs_table(logits: torch.Tensor, loss: torch.Tensor, labels: torch.Tensor) -> pd.DataFrame:
    """Per-example columns of the run-record contract from logits."""
    logp = torch.log_softmax(logits.double(), dim=1)
    probs = logp.exp()
    pred = probs.argmax(1)
    y = labels.long()
    # logit-scaled confidence of the true class: log p_y - log(1 - p_y), computed stably
    other = logp.clone()
    other[torch.arange(len(y)), y] = -torch.inf
    conf = logp[torch.arange(len(y)), y] - torch.logsumexp(other, dim=1)
    df = pd.DataFrame({"label": y.numpy(), "pred": pred.numpy(),
                       "prob": (probs[:, 1] if probs.shape[1] == 2 else probs.max(1).values).numpy(),
                       "loss": loss.double().numpy(), "confidence_logit": conf.numpy()})
    for k in range(probs.shape[1]):
        df[f"prob_{k}"] = probs[:, k].numpy()
    # float32 in the record (half the size); metrics are computed from these very values
    return df.astype({c: "float32" for c in df.columns if df[c].dtype == "float64"})


# ---------------------------------------------------------------- causal language models
def lm_collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """Right-pad (input ids, labels) pairs; padding is masked out of the loss (label -100) and of
    attention. (The original study left pad positions in the labels.)"""
    n = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, (ids, lab) in enumerate(examples):
        input_ids[i, :len(ids)] = torch.as_tensor(ids)
        labels[i, :len(lab)] = torch.as_tensor(lab)
        mask[i, :len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def lm_loss_sum(model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the positions whose label is not -100, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    target = batch["labels"][:, 1:]
    loss = nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                       target.reshape(-1), ignore_index=-100, reduction="sum")
    return loss, int((target != -100).sum())


def fit_lm(model: nn.Module, train: list, val: list, pad_id: int, cfg: TrainConfig,
           progress: bool = True) -> dict:
    """Fine-tune a causal LM on (input ids, labels) examples; keep the epoch with the lowest
    validation loss per target token (``select='best_val'``) or the last. Returns the history;
    the model is left with the selected weights (unwrapped, on the accelerator's device)."""
    accelerator = make_accelerator(cfg.precision)
    torch.manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(train, batch_size=cfg.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(cfg.seed),
                                         collate_fn=lambda b: lm_collate(b, pad_id), **_loader_kwargs(cfg))
    if cfg.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # checkpointing with frozen embeddings (LoRA) needs input grads
    model = speedups(model, cfg)
    val_loader = torch.utils.data.DataLoader(val, batch_size=cfg.eval_batch_size, shuffle=False,
                                             collate_fn=lambda b: lm_collate(b, pad_id))
    opt, sched, steps = _optimizer(model, cfg, len(loader))
    model, opt, loader, val_loader, sched = accelerator.prepare(model, opt, loader, val_loader, sched)
    history = {"epoch": [], "train_loss": [], "val_loss": [], "seconds": []}
    best, best_state, best_epoch = float("inf"), None, 0
    bar = tqdm(total=steps, desc="train", leave=False, disable=not progress, file=sys.stderr)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.time()
        model.train()
        losses = []
        for batch in loader:
            with accelerator.autocast():
                total, count = lm_loss_sum(model, batch)
            _step(accelerator, total / max(count, 1), opt, sched, losses, bar, epoch, cfg.lr)
        model.eval()
        tot, cnt = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for batch in val_loader:
                with accelerator.autocast():
                    s, c = lm_loss_sum(model, batch)
                st = accelerator.reduce(torch.stack([s.double(), torch.tensor(float(c), device=s.device,
                                                                              dtype=torch.float64)]), "sum")
                tot += st[0].cpu()
                cnt += st[1].cpu()
        val_loss = float(tot / cnt) if cnt > 0 else float("nan")
        history["epoch"].append(epoch)
        history["train_loss"].append(float(np.mean(losses)))
        history["val_loss"].append(val_loss)
        history["seconds"].append(round(time.time() - t0, 2))
        if cfg.select == "last" or not val or val_loss < best:
            best, best_epoch = val_loss, epoch
            best_state = (_trainable_state(accelerator.unwrap_model(model))
                          if cfg.select == "best_val" and epoch < cfg.epochs else None)
    bar.close()
    model = accelerator.unwrap_model(model)
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    history.update({"world_size": accelerator.num_processes, "selected_epoch": best_epoch,
                    "selected_val_loss": best, "train_config": asdict(cfg),
                    "precision": cfg.precision})
    return history
