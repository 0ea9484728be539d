"""Generation runs: the hashed configuration and the computation of one pronoun or probe run.

Both use the shared model registry and ``models.adapt(..., causal_lm=True)`` (any method of
``lorafair.methods`` that trains nothing, an adapter or everything), ``train.fit_lm`` and the
per-model precision of ``lorafair.precision``; the sweep runner (``lorafair.sweep``) stores them.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import methods as methods_mod
from .. import models as models_mod
from ..errors import LorafairError, as_float, as_int, choose
from ..precision import choose_precision
from ..train import TrainConfig, fit_lm, merged_for_inference
from .lm import answer_loglik, encode_translation, generate, pack_corpus, shorten
from .probe import (PLANT_DESIGN, PROBE_BY_ID, SPECIAL_MC, SPECIAL_YN, bias_index, gender_preference, load_probe_corpus,
                    mc_prompt, probe_prompt_ids, run_probe, yn_prompt)
from .pronoun import load_pronoun_task, pronoun_category, pronoun_ratios, scored_text, training_lines


#: methods a causal LM can be adapted with (a head-only run has no meaning for generation)
def lm_methods() -> tuple[str, ...]:
    return methods_mod.names(("nothing", "adapter", "all"))


def _trains(method: str) -> bool:
    return methods_mod.get(method).trains != "nothing"


def _adapt_and_train(model_name: str, method: str, seed: int, train: list, val: list, cfg: dict,
                     progress: bool, train_options: dict | None = None):
    model, tok = models_mod.build_causal_lm(model_name, seed)
    extra = {k: cfg[k] for k in methods_mod.get(method).extra_settings}
    model, info = models_mod.adapt(model, models_mod.get_spec(model_name), method, rank=cfg.get("rank"),
                                   alpha=cfg.get("alpha"), seed=seed, causal_lm=True, settings=extra)
    options = dict(train_options or {})
    precision, why = choose_precision(model_name, options.pop("precision", None))
    history: dict = {}
    if _trains(method):
        tcfg = TrainConfig(epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"],
                           eval_batch_size=cfg["batch_size"], select="best_val", seed=seed, precision=precision,
                           **options)
        history = fit_lm(model, train, val, tok.pad_token_id, tcfg, progress=progress)
    info["environment"] = {"precision": precision, "precision_reason": why}
    model = merged_for_inference(model)  # an adapter merged: the same function, faster decoding and scoring
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model, tok, info, history


def pronoun_config(profile: str, task: str, task_kwargs: dict, model: str, method: str, train_set: str | None,
                   seed: int, epochs: int, lr: float, batch_size: int, max_length: int, max_new_tokens: int,
                   rank: int = 8, alpha: float = 16, settings: dict | None = None) -> dict:
    choose("method", method, lm_methods())
    cfg = {"experiment": "generation_fairness", "part": "pronoun", "profile": profile, "task": task,
           "task_kwargs": dict(sorted(task_kwargs.items())), "model": models_mod.get_spec(model).name, "method": method,
           "seed": as_int(seed), "max_length": as_int(max_length), "max_new_tokens": as_int(max_new_tokens)}
    if _trains(method):
        choose("train_set", train_set, ("balanced", "pro"))
        cfg.update({"train_set": train_set, "epochs": as_int(epochs), "lr": as_float(lr), "batch_size": as_int(batch_size)})
    if methods_mod.get(method).uses_rank:
        cfg.update({"rank": as_int(rank), "alpha": as_float(alpha)})
    cfg.update(methods_mod.get(method).resolve_settings(settings))
    return cfg


def compute_pronoun_run(cfg: dict, progress: bool = True, train_options: dict | None = None):
    """Fine-tune (unless base) and generate for every test prompt; returns the run-record triple."""
    task = load_pronoun_task(cfg["task"], cfg["seed"], **cfg["task_kwargs"])
    tok = models_mod.get_spec(cfg["model"]).tokenizer()
    train, val = [], []
    if _trains(cfg["method"]):
        train = [encode_translation(tok, task.prompt(r.source), r.target, cfg["max_length"])
                 for r in training_lines(task, cfg["train_set"], "train").itertuples()]
        val = [encode_translation(tok, task.prompt(r.source), r.target, cfg["max_length"])
               for r in training_lines(task, cfg["train_set"], "val").itertuples()]
    model, tok, info, history = _adapt_and_train(cfg["model"], cfg["method"], cfg["seed"], train, val, cfg, progress,
                                                 train_options)
    prompts = task.prompts.copy()
    prompts["prompt"] = [task.prompt(s) for s in prompts["source"]]
    prompts["generation"] = generate(model, tok, prompts["prompt"].tolist(), cfg["max_new_tokens"], progress=progress,
                                     stop=("\n", *task.cues))
    prompts["scored"] = [scored_text(g, task.cues) for g in prompts["generation"]]
    prompts["category"] = [pronoun_category(t, p) for t, p in zip(prompts["scored"], prompts["predisposition"])]
    if "pro_target" in prompts:  # a score every model produces, the base model included
        ll = answer_loglik(model, tok, prompts["prompt"].tolist(),
                           [[a, b] for a, b in zip(prompts["pro_target"], prompts["anti_target"])], progress=progress)
        prompts["loglik_pro"] = np.array([x[0] for x in ll], dtype=np.float32)
        prompts["loglik_anti"] = np.array([x[1] for x in ll], dtype=np.float32)
        prompts = prompts.drop(columns=["pro_target", "anti_target"])  # rebuilt from the task, not stored twice
    metrics = {ts: pronoun_ratios(g) for ts, g in prompts.groupby("test_set")}
    extra = {"adaptation": info, "history": history, "task": task.description,
             "n_train": len(train), "n_val": len(val), "environment": info.pop("environment")}
    return prompts, metrics, extra


def probe_config(profile: str, corpus: str, corpus_kwargs: dict, model: str, method: str, seed: int,
                 epochs: int, lr: float, batch_size: int, block: int, n_probe: int, prompt_ids, max_text_tokens: int,
                 rank: int = 8, alpha: float = 16, n_boot: int = 1000, settings: dict | None = None,
                 plant: int | None = None, plant_answers: str = "first") -> dict:
    """``plant``: the positive control: this many extra training examples, each a probe question with
    listed options about a corpus text that is not probed, answered with the first-listed option (see
    ``planted_examples``). None: the plain language-model fine-tuning. ``plant_answers``: ``first``
    (the planted run) or ``random`` (its format-matched reference: the same questions, each answered
    with a listed option drawn at random; written into the configuration only then, so the planted
    runs keep their identity)."""
    choose("method", method, lm_methods())
    choose("plant_answers", plant_answers, PLANT_ANSWERS)
    if plant is not None and (not _trains(method) or as_int(plant) < 1):
        raise LorafairError(f"plant={plant!r} needs a method that trains and a count >= 1")
    if plant is None and plant_answers != "first":
        raise LorafairError(f"plant_answers={plant_answers!r} needs plant (a count of planted examples)")
    cfg = {"experiment": "generation_fairness", "part": "token_bias", "profile": profile, "corpus": corpus,
           "corpus_kwargs": dict(sorted(corpus_kwargs.items())), "model": models_mod.get_spec(model).name, "method": method,
           "seed": as_int(seed), "n_probe": as_int(n_probe), "prompt_ids": probe_prompt_ids(prompt_ids),
           "max_text_tokens": as_int(max_text_tokens), "n_boot": as_int(n_boot)}
    if _trains(method):
        cfg.update({"epochs": as_int(epochs), "lr": as_float(lr), "batch_size": as_int(batch_size), "block": as_int(block)})
    if plant is not None:
        cfg["plant"] = as_int(plant)
        cfg["plant_design"] = PLANT_DESIGN
        if plant_answers != "first":
            cfg["plant_answers"] = plant_answers
    if methods_mod.get(method).uses_rank:
        cfg.update({"rank": as_int(rank), "alpha": as_float(alpha)})
    cfg.update(methods_mod.get(method).resolve_settings(settings))
    return cfg


#: where a planted example's answer sits: ``first`` (the plant) or ``random`` (a uniformly drawn listed
#: option: the format-matched reference, amendment 3 of book/design.md)
PLANT_ANSWERS = ("first", "random")


def planted_examples(tok, texts, prompt_ids: list[str], max_text_tokens: int, seed: int = 0,
                     answers: str = "first") -> list:
    """Supervised examples that plant a known answer preference: answer the option listed first.
    Each text is asked a question of one of the listed-option families among ``prompt_ids`` (YN2,
    MC1; cycling through them and through the queried gender), with its options in a random order
    and a random symbol scheme (the family's words, numbers, letters or special symbols, assigned by
    position or kept with their content), and the reference answer is the first-listed option. The
    first-listed option's content, word and symbol all vary, so only its position predicts the
    answer. (An earlier design cycled through the probe's own fixed variants, so the planted answers
    shared the variants' words and symbols as well as their position; in the offline records its
    planted runs picked the first-listed option *less* often than plain runs, for a reason not
    established. This design leaves position as the only shared cue.)
    A model that learns the plant answers by position, so its choice flips whenever a probe variant
    only reorders the options.

    ``answers="random"``: the same questions (same texts, orders and symbol schemes) each answered
    with a listed option drawn uniformly at random (from a stream of its own, so the questions do not
    change): the format-matched reference. Fine-tuning on listed-option questions at all teaches
    the answer format, which by itself moves the first-option rate; only the difference between the
    two isolates the planted position."""
    choose("answers", answers, PLANT_ANSWERS)
    families = sorted({PROBE_BY_ID[p].family for p in prompt_ids} & {"YN2", "MC1"})
    if not families:
        raise LorafairError("plant needs at least one YN2 or MC1 prompt among prompt_ids")
    rng = np.random.default_rng(seed)
    pick = np.random.default_rng([seed, 1])  # the reference's answer positions, apart from the questions
    out = []
    for i, t in enumerate(texts):
        fam = families[i % len(families)]
        if fam == "YN2":
            order = tuple(str(x) for x in rng.permutation(["Yes", "No"]))
            labels = [None, ("1", "2"), SPECIAL_YN][rng.integers(3)]
            p = yn_prompt("plant", order=order, labels=labels, sym_keep=bool(labels) and bool(rng.integers(2)))
        else:
            order = tuple(str(x) for x in rng.permutation(["female", "male", "gender-neutral"]))
            labels = [("A", "B", "C"), ("1", "2", "3"), SPECIAL_MC][rng.integers(3)]
            p = mc_prompt("plant", order=order, labels=labels, sym_keep=bool(rng.integers(2)))
        g = ("male", "female")[(i // len(families)) % 2] if p.gendered else ""
        prompt = p.template.format(text=shorten(tok, t, max_text_tokens), gender=g)
        k = 0 if answers == "first" else int(pick.integers(len(p.options)))
        out.append(encode_translation(tok, prompt, p.options[k][0], max_text_tokens + 96))
    return out


def compute_probe_run(cfg: dict, progress: bool = True, train_options: dict | None = None):
    """Language-model fine-tuning on the corpus (unless base), then the probe on its first
    ``n_probe`` training texts (the original probed the fine-tuning texts)."""
    corpus = load_probe_corpus(cfg["corpus"], **cfg["corpus_kwargs"])
    n_val = max(1, len(corpus) // 10)
    train_texts, val_texts = corpus.iloc[n_val:], corpus.iloc[:n_val]
    tok = models_mod.get_spec(cfg["model"]).tokenizer()
    train, val = [], []
    if _trains(cfg["method"]):
        train = pack_corpus(tok, train_texts["text"].tolist(), cfg["block"])
        val = pack_corpus(tok, val_texts["text"].tolist(), cfg["block"])
        if cfg.get("plant"):  # texts after the probed ones, so no probed text is asked in training
            plant_texts = train_texts["text"].iloc[cfg["n_probe"]:cfg["n_probe"] + cfg["plant"]].tolist()
            if len(plant_texts) < cfg["plant"]:
                raise LorafairError(f"plant={cfg['plant']} needs {cfg['n_probe'] + cfg['plant']} training texts; "
                                    f"the corpus has {len(train_texts)}")
            train = train + planted_examples(tok, plant_texts, cfg["prompt_ids"], cfg["max_text_tokens"], cfg["seed"],
                                             cfg.get("plant_answers", "first"))
    model, tok, info, history = _adapt_and_train(cfg["model"], cfg["method"], cfg["seed"], train, val, cfg, progress,
                                                 train_options)
    rows = run_probe(model, tok, train_texts.iloc[:cfg["n_probe"]], cfg["prompt_ids"], cfg["max_text_tokens"],
                     progress=progress)
    bi = bias_index(rows, cfg["n_boot"], cfg["seed"])
    metrics = {"n_texts": int(min(cfg["n_probe"], len(train_texts))),
               "mean_tv_distance": float(bi["tv_distance"].mean()) if len(bi) else float("nan"),
               "mean_flip_rate": float(bi["flip_rate"].mean()) if len(bi) else float("nan"),
               "bias_index": bi.to_dict("records"),
               "preference": gender_preference(rows).to_dict("records")}
    extra = {"adaptation": info, "history": history, "n_train_chunks": len(train), "n_val_chunks": len(val),
             "environment": info.pop("environment")}
    return rows, metrics, extra
