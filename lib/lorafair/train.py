"""One training entry point for every classification experiment, on ``accelerate``.

``fit_predict`` trains the trainable parameters of a model with AdamW (weight decay 0.001, cosine
schedule with 1% warm-up, as the original study), evaluates validation accuracy after every epoch,
keeps the epoch with the best validation accuracy (ties: the earlier epoch), and returns per-example
outputs on every split. On a GPU it trains in bf16 autocast with fused AdamW; on a CPU in fp32.
Under ``accelerate launch`` batches are sharded over processes and outputs gathered.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

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
    bf16: bool = True               # used on GPUs only
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


def make_accelerator(bf16: bool = True):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    return Accelerator(cpu=not cuda, mixed_precision="bf16" if (cuda and bf16) else "no")


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


def _step(accelerator, loss: torch.Tensor, opt, sched, losses: list, bar, epoch: int) -> None:
    """Backward, optimizer and schedule step, loss bookkeeping and the progress bar."""
    accelerator.backward(loss)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    losses.append(loss.item())
    bar.update(1)
    bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-10:]):.3f}")


def merged_for_inference(model: nn.Module) -> nn.Module:
    """LoRA weights merged into the base layers for the final predictions: the same function, and
    unmerged LoRA inference is 1.3-1.8x slower on a CPU (cpu-costs.md). Other models pass through."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    return model.eval()


def _trainable_state(model: nn.Module) -> dict:
    keep = {n for n, p in model.named_parameters() if p.requires_grad}
    keep |= {n for n, _ in model.named_buffers()}
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if k in keep}


def predict(model: nn.Module, encode: Callable, indices, labels: torch.Tensor, accelerator,
            batch_size: int, desc: str = "eval", progress: bool = False) -> dict:
    """Logits for ``indices`` (in order), with per-example loss."""
    loader = torch.utils.data.DataLoader(IndexDataset(indices), batch_size=batch_size, shuffle=False,
                                         collate_fn=lambda ids: (ids, encode(ids, train=False, generator=None)))
    loader = accelerator.prepare(loader)
    model.eval()
    out_ids, out_logits = [], []
    with torch.no_grad():
        for ids, batch in tqdm(loader, desc=desc, leave=False, disable=not progress, file=sys.stderr):
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


def fit_predict(model: nn.Module, freeze_norm_stats: bool, encode: Callable, labels: torch.Tensor,
                splits: pd.Series, cfg: TrainConfig, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Train on ``splits == 'train'``, select on ``'val'``, return outputs for every example.

    ``encode(ids, train, generator) -> dict`` builds a model-input batch (``train=True`` applies the
    training augmentation, drawn from ``generator``). Returns (outputs, history)."""

    accelerator = make_accelerator(cfg.bf16)
    torch.manual_seed(cfg.seed)
    train_idx = np.flatnonzero((splits == "train").to_numpy())
    val_idx = np.flatnonzero((splits == "val").to_numpy())
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    loader = torch.utils.data.DataLoader(
        IndexDataset(train_idx), batch_size=cfg.batch_size, shuffle=True, generator=loader_gen,
        collate_fn=lambda ids: (encode(ids, train=True, generator=aug_gen),
                                labels[torch.as_tensor(ids)]), **_loader_kwargs(cfg))
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
        for batch, y in loader:
            with accelerator.autocast():
                logits = model(**batch)
            _step(accelerator, nn.functional.cross_entropy(logits.float(), y), opt, sched, losses, bar, epoch)
        if len(val_idx):
            out = predict(model, encode, val_idx, labels, accelerator, cfg.eval_batch_size)
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
    all_idx = np.arange(len(labels))
    out = predict(model, encode, all_idx, labels, accelerator, cfg.eval_batch_size, "predict", progress)
    return outputs_table(out["logits"], out["loss"], labels), history


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
    return df


# ---------------------------------------------------------------- causal language models
def lm_collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """Right-pad (input ids, labels) pairs; padding is masked out of the loss (label -100) and of
    attention. (The original study left pad positions in the labels; paper-study.md A.3.)"""
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
    accelerator = make_accelerator(cfg.bf16)
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
            _step(accelerator, total / max(count, 1), opt, sched, losses, bar, epoch)
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
                    "selected_val_loss": best, "train_config": asdict(cfg)})
    return history
