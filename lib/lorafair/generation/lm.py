"""Causal-LM encoding and decoding shared by the generation experiments: supervised examples with
the loss on the target only, packed corpus blocks, greedy decoding, and answer log-likelihoods."""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from ..errors import LorafairError


def encode_translation(tok, prompt: str, target: str, max_length: int) -> tuple[list[int], list[int]]:
    """Input ids and labels of ``prompt + ' ' + target + EOS``; the loss covers only the target and
    EOS (labels -100 on the prompt). Too long: the error names the lengths (no silent truncation of
    the reference)."""
    p = tok(prompt, add_special_tokens=True)["input_ids"]
    t = tok(" " + target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    if len(p) + len(t) > max_length:
        raise LorafairError(f"example of {len(p) + len(t)} tokens exceeds max_length={max_length}: {prompt[:60]!r}")
    return p + t, [-100] * len(p) + t


def _left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, n - len(s):] = torch.as_tensor(s)
        mask[i, n - len(s):] = 1
    return ids, mask


def _forward_left_padded(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits of left-padded sequences, with positions counted from each sequence's first token (so
    padding does not shift them)."""
    device = next(model.parameters()).device
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device)).logits


@torch.no_grad()
def generate(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int = 32,
             progress: bool = False, stop: tuple[str, ...] = ()) -> list[str]:
    """Greedy decoding (``num_beams=1``, no sampling) of every prompt, left-padded, in batches of
    prompts of similar length (results in prompt order). A sequence stops at any string of ``stop``
    (the scorer reads nothing after the first line break or cue), so decoding does no unused work."""
    model.eval()
    device = next(model.parameters()).device
    encoded = [tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda k: len(encoded[k]))
    out: dict[int, str] = {}
    extra = {"stop_strings": list(stop), "tokenizer": tok} if stop else {}
    for i in tqdm(range(0, len(prompts), batch_size), desc="generate", leave=False, disable=not progress,
                  file=sys.stderr):
        chunk = order[i:i + batch_size]
        ids, mask = _left_pad([encoded[k] for k in chunk], tok.pad_token_id)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id, **extra)
        out.update(zip(chunk, tok.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)))
    return [out[k] for k in range(len(prompts))]


def pack_corpus(tok, texts: list[str], block: int) -> list[tuple[list[int], list[int]]]:
    """EOS after each text, all tokens concatenated and cut into ``block``-token chunks (the remainder
    is dropped); labels = inputs (the original study's language-model fine-tuning)."""
    ids: list[int] = []
    for t in texts:
        ids += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(ids) // block
    return [(ids[i * block:(i + 1) * block], ids[i * block:(i + 1) * block]) for i in range(n)]


def shorten(tok, text: str, max_tokens: int) -> str:
    """The text cut to ``max_tokens`` tokens *before* it is put into a prompt, so that the answer
    tokens at the end are never truncated (the original cut whole strings at 256 tokens)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tok.decode(ids[:max_tokens]).strip() + " ..."


@torch.no_grad()
def answer_loglik(model, tok, prompts: list[str], answers: list[list[str]], batch_size: int = 32,
                  progress: bool = False) -> list[list[float]]:
    """log P(answer tokens | prompt) for each prompt and each of its candidate answers.

    The answer is tokenised as ``' ' + answer`` after the prompt's own tokens, so every candidate is
    scored on exactly its tokens (summed log-probabilities; no whole-string mean). The tokens all
    candidates of a prompt share (a leading space before a digit, the first bytes of an emoji) are
    appended to the prompt, so one forward pass scores every candidate whose remaining part is one
    token; a candidate with more tokens after that gets one more pass."""
    model.eval()
    p_ids = [tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    a_ids = [[tok(" " + a, add_special_tokens=False)["input_ids"] for a in opts] for opts in answers]
    scores = [[0.0] * len(a) for a in answers]
    for i in tqdm(range(0, len(prompts), batch_size), desc="probe", leave=False, disable=not progress,
                  file=sys.stderr):
        chunk = list(range(i, min(i + batch_size, len(prompts))))
        shared = [_common_prefix(a_ids[k]) for k in chunk]
        ids, mask = _left_pad([p_ids[k] + c for k, c in zip(chunk, shared)], tok.pad_token_id)
        logp = torch.log_softmax(_forward_left_padded(model, ids, mask).float(), -1)
        n = ids.shape[1]
        long = []
        for j, (k, c) in enumerate(zip(chunk, shared)):
            prefix = sum(float(logp[j, n - len(c) - 1 + t, c[t]]) for t in range(len(c)))
            for a_i, a in enumerate(a_ids[k]):
                scores[k][a_i] = prefix + float(logp[j, n - 1, a[len(c)]])
                if len(a) > len(c) + 1:
                    long.append((k, a_i))
        if long:  # tokens after the first distinguishing one: score them on the full sequence
            seqs = [p_ids[k] + a_ids[k][a_i] for k, a_i in long]
            ids2, mask2 = _left_pad(seqs, tok.pad_token_id)
            lp2 = torch.log_softmax(_forward_left_padded(model, ids2, mask2).float(), -1)
            n2 = ids2.shape[1]
            for j, (k, a_i) in enumerate(long):
                a = a_ids[k][a_i]
                start = len(_common_prefix(a_ids[k])) + 1
                for t in range(start, len(a)):
                    scores[k][a_i] += float(lp2[j, n2 - len(a) + t - 1, a[t]])
    return scores


def _common_prefix(seqs: list[list[int]]) -> list[int]:
    """Tokens every candidate starts with, stopping one short of the shortest candidate."""
    out = []
    for t in zip(*seqs):
        if len(set(t)) != 1:
            break
        out.append(t[0])
    return out[:min(len(s) for s in seqs) - 1]
