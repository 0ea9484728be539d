"""The registries and seams every experiment shares (models, methods, datasets, metrics, chapters,
the sweep runner), tested over the registries themselves: a new model, method or dataset is tested
here with no new test code."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from lorafair import chapters, data, findings, inference, methods, metrics, models, plots, profiles, splits, sweep
from lorafair.errors import LorafairError
from lorafair.runs import RunStore, run_id

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib" / "lorafair"
RANDOM_MODELS = [n for n, s in models.MODELS.items() if s.source == "random"]
CLASSIFICATION_METHODS = list(methods.METHODS)


def _inputs(spec, n=3):
    if spec.kind == "image":
        return {"pixel_values": torch.randn(n, 3, spec.image_size, spec.image_size)}
    ids = torch.randint(5, 100, (n, 12))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


#: trainable parameters an adapter adds to one linear layer, from its shape alone (not from peft)
ADAPTER_FORMULAS = {
    "lora": lambda i, o, r: r * (i + o),
    "dora": lambda i, o, r: r * (i + o) + o,   # plus the magnitude vector
    "ia3": lambda i, o, r: o,                  # one scale per output
}


def _adapter_params(model: nn.Module, spec, method: methods.Method, rank: int) -> int | None:
    """The formula's count, or None for a method the test has no formula for."""
    if method.name not in ADAPTER_FORMULAS:
        return None
    return sum(ADAPTER_FORMULAS[method.name](model.get_submodule(n).in_features, model.get_submodule(n).out_features,
                                             rank) for n in spec.lora_targets(model))


def _unsupported(spec, m, model) -> bool:
    """Whether peft cannot build ``m`` for this model (the registry says why; tested to refuse)."""
    net = getattr(model, "net", model)
    return spec.kind not in m.kinds or (m.linear_only and spec.target_layer != "linear") or \
        (m.prompt_learning and spec.kind == "text" and net.config.model_type not in models.ENCODER_TYPES)


@pytest.mark.parametrize("method", CLASSIFICATION_METHODS)
@pytest.mark.parametrize("name", RANDOM_MODELS)
def test_every_model_adapts_with_every_method(name, method):
    model, spec = models.build(name, 3, seed=0)
    if _unsupported(spec, methods.for_classification(method), model):
        with pytest.raises(LorafairError, match=f"method '{method}' (does not run on|needs an encoder)"):
            models.adapt(model, spec, method)
        return
    head = sum(p.numel() for p in model.get_submodule(spec.head).parameters())
    total = sum(p.numel() for p in model.parameters())
    m = methods.for_classification(method)
    expected = {"head": head, "all": total}.get(m.trains)
    if m.trains == "adapter":
        added = _adapter_params(model, spec, m, spec.default_rank)
        expected = None if added is None else head + added
    adapted, info = models.adapt(model, spec, method)
    assert info["method"] == m.name
    if expected is not None:
        assert info["trainable_params"] == expected
    else:  # an adapter without a formula here: more than the head, less than everything
        assert head < info["trainable_params"] < total
    if m.trains == "adapter":  # the record keeps the peft config as peft serialises it
        assert info["peft_config"]["peft_type"]
        assert info["peft_config"].get("target_modules") or m.prompt_learning
    logits = adapted(**_inputs(spec))
    assert logits.shape == (3, 3)
    logits.sum().backward()
    for n, p in adapted.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n


GENERATION_METHODS = [n for n in methods.names(("nothing", "adapter", "all")) if methods.get(n).objective == "erm"]


@pytest.mark.parametrize("method", GENERATION_METHODS)
@pytest.mark.parametrize("name", [n for n in models.causal_lm_names() if models.MODELS[n].source == "random"])
def test_every_causal_lm_adapts_with_every_generation_method(name, method):
    lm, tok = models.build_causal_lm(name, seed=0)
    total = sum(p.numel() for p in lm.parameters())
    m = methods.get(method)
    expected = {"nothing": 0, "all": total}.get(m.trains)
    if m.trains == "adapter":
        expected = _adapter_params(lm, models.get_spec(name), m, 4)
    lm, info = models.adapt(lm, models.get_spec(name), method, rank=4, alpha=8, causal_lm=True)
    if expected is not None:
        assert info["trainable_params"] == expected
    else:
        assert 0 < info["trainable_params"] < total
    if m.trains != "nothing":
        ids = torch.randint(5, 100, (2, 10))
        lm(input_ids=ids, labels=ids).loss.backward()
        assert all((p.grad is not None) == p.requires_grad for p in lm.parameters())


def test_group_objectives_have_no_meaning_for_a_causal_lm():
    lm, _ = models.build_causal_lm("llama_tiny_random")
    with pytest.raises(LorafairError, match="method 'fairlora' weighs the groups of a classification dataset"):
        models.adapt(lm, models.get_spec("llama_tiny_random"), "fairlora", causal_lm=True)


@pytest.mark.parametrize("method", methods.names(("adapter",)))
@pytest.mark.parametrize("name", RANDOM_MODELS)
def test_every_adapter_trains_a_step_and_predicts_the_same_merged(name, method):
    """Built, one optimiser step, then the predictions of the adapted model equal those of the copy
    whose adapter is merged into the weights (``train.merged_for_inference``; a soft prompt cannot
    merge and passes through unchanged)."""
    import copy

    from lorafair.train import merged_for_inference

    torch.manual_seed(0)
    model, spec = models.build(name, 3, seed=0)
    m = methods.get(method)
    if _unsupported(spec, m, model):
        pytest.skip(f"{method} does not run on {name} (tested to refuse above)")
    adapted, info = models.adapt(model, spec, method)
    x = _inputs(spec, 4)
    params = [p for p in adapted.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-2)
    adapted.train()
    nn.functional.cross_entropy(adapted(**x), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, params)), "the step changed nothing"
    adapted.eval()
    with torch.no_grad():
        a = adapted(**x)
        merged = merged_for_inference(copy.deepcopy(adapted))
        b = merged(**x)
    from peft import PeftModel

    assert not isinstance(merged, PeftModel)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_a_method_peft_cannot_build_is_refused_before_any_run():
    from lorafair import experiments as ex

    with pytest.raises(LorafairError, match="method 'vera' does not run on mobilenet_v2: peft's VeRA adapts linear "
                                            "layers only"):
        ex.classification_config("vision_classification", "offline", "openmoji_people", {}, "mobilenet_v2", "vera",
                                 13, 1, 1e-3, 32)
    with pytest.raises(LorafairError, match="method 'prompt' does not run on mobilenet_v2: a soft prompt"):
        ex.classification_config("vision_classification", "offline", "openmoji_people", {}, "mobilenet_v2", "prompt",
                                 13, 1, 1e-3, 32)


@pytest.mark.parametrize("objective", ["group_variance", "group_balanced"])
def test_group_objectives_from_their_definition(objective):
    from lorafair import train

    losses = torch.tensor([1.0, 3.0, 2.0, 6.0])
    groups = torch.tensor([0, 0, 1, 2])
    if objective == "group_variance":  # group means 2, 2, 6: mean 10/3, population variance 32/9
        got = train.group_objective(objective, losses, groups, penalty=0.5)
        assert float(got) == pytest.approx(3.0 + 0.5 * 32 / 9)
    else:  # train split: group 0 x2, group 1 x1, group 2 x1 -> weights 4/(3*2), 4/3, 4/3
        w = train.balanced_weights(groups, [0, 1, 2, 3])
        assert w.tolist() == pytest.approx([2 / 3, 2 / 3, 4 / 3, 4 / 3])
        got = train.group_objective(objective, losses, groups, w)
        assert float(got) == pytest.approx((2 / 3 * 4 + 4 / 3 * 8) / 4)
    assert float(train.group_objective("erm", losses, groups)) == 3.0


def test_head_only_has_no_meaning_for_a_causal_lm():
    lm, _ = models.build_causal_lm("llama_tiny_random")
    with pytest.raises(Exception, match="trains a classification head; a causal LM has none"):
        models.adapt(lm, models.get_spec("llama_tiny_random"), "head", causal_lm=True)


def test_dora_and_ia3_run_through_a_chapter_from_their_registry_entries(smoke_kwargs, tmp_path):
    """DoRA and IA3 are one registry entry each: with learning rates in the profile they run
    through the chapter grid, the sweep runner, the record and the plots with no other change."""
    P = profiles.resolve("vision_classification", "smoke", results_dir=str(tmp_path))
    P.update(dataset_kwargs={**smoke_kwargs, "test_reserve": 1}, models=["vit_tiny_random"], methods=["head", "lora", "full", "dora", "ia3"],
             lrs={"head": 1e-2, "lora": 1e-3, "full": 1e-3, "dora": 1e-3, "ia3": 1e-2})
    grid = chapters.configs("vision_classification", P)["main"]
    assert [c["method"] for c in grid] == P["methods"] and len({run_id(c) for c in grid}) == 5
    assert grid[3]["rank"] == grid[1]["rank"] and "rank" not in grid[4]
    recs = sweep.run(RunStore(tmp_path), grid, progress=False)
    peft_types = [r.meta["adaptation"].get("peft_config", {}).get("peft_type") for r in recs]
    assert peft_types == [None, "LORA", None, "LORA", "IA3"]
    assert recs[3].meta["adaptation"]["peft_config"]["use_dora"] is True
    from lorafair import experiments as ex

    preds = ex.predictions(recs)
    fig = plots.group_accuracy(plots.pooled_group_accuracy(preds, "skin_tone", ["model", "method"]), "skin_tone",
                               "smoke")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [methods.label(m) for m in P["methods"]]
    plots.plt.close(fig)


def test_a_new_method_is_one_register_call(smoke_kwargs, tmp_path):
    """A method defined only here (rank-stabilised LoRA) trains a classifier and a causal LM."""
    def rslora(settings, targets, modules_to_save, task_type, dropout=0.0):
        return methods._lora(settings, targets, modules_to_save, task_type, dropout, use_rslora=True)

    methods.register(methods.Method("rslora_test", "rsLoRA", "adapter", "#000000", "x", "-",
                                    settings=("rank", "alpha"), peft_config=rslora))
    try:
        from lorafair import experiments as ex

        cfg = ex.classification_config("vision_classification", "smoke", "openmoji_people", smoke_kwargs,
                                       "vit_tiny_random", "rslora_test", 13, 1, 1e-3, 16, n_boot=10)
        rec = sweep.run_one(RunStore(tmp_path), cfg)
        assert rec.meta["adaptation"]["peft_config"]["use_rslora"] is True
        assert plots.METHOD_LABEL["rslora_test"] == "rsLoRA"
        lm, _ = models.build_causal_lm("llama_tiny_random")
        _, info = models.adapt(lm, models.get_spec("llama_tiny_random"), "rslora_test", rank=2, alpha=4,
                               causal_lm=True)
        assert info["peft_config"]["use_rslora"] is True
    finally:
        del methods.METHODS["rslora_test"]


def _utk(d: Path) -> dict:
    for i, n in enumerate(["25_0_0_1.jpg.chip.jpg", "31_1_1_2.jpg.chip.jpg", "8_1_2_3.jpg.chip.jpg"]):
        Image.new("RGB", (40, 40), (i * 60, 90, 90)).save(d / n)
    return {"utkface_dir": str(d)}


def _mhs(d: Path) -> dict:
    rng = np.random.default_rng(0)
    rows = [{"comment_id": c, "annotator_id": a, "text": f"comment {c}", "hate_speech_score": float(rng.normal()),
             "target_religion": True, **{f"target_religion_{g}": bool(rng.random() < 0.3)
                                         for g in data.MHS_AXES["religion"]}}
            for c in range(12) for a in range(2)]
    pd.DataFrame(rows).to_parquet(d / "mhs.parquet")
    return {"source": str(d / "mhs.parquet")}


#: one small case per registered dataset (fixtures for the paper datasets that need downloads)
DATASET_CASES = {
    "openmoji_people": lambda d: {"task": "gender", "n": 20, "data_seed": 0, "render": {"size": 32},
                                  "cache_dir": str(d)},
    "utkface": _utk,
    "identity_attack": lambda d: {"n": 30, "data_seed": 0},
    "stereoset": lambda d: {"n_pairs": 8, "data_seed": 0},
    "crows_pairs": lambda d: {"n_pairs": 8, "data_seed": 0},
    "measuring_hate_speech": _mhs,
    "adult": lambda d: {"n": 60, "data_seed": 0},
    "file": lambda d: _user_file(d),
}


def _user_file(d):
    """A user's CSV (lorafair.userdata): text, label and group columns."""
    rows = [{"text": f"comment {i} about {g}", "label": ["no", "yes"][i % 2], "group": g}
            for i in range(24) for g in ["a", "b"][i % 2:i % 2 + 1]]
    pd.DataFrame(rows).to_csv(d / "mine.csv", index=False)
    return {"path": str(d / "mine.csv")}


def test_every_registered_dataset_has_a_contract_case():
    assert set(DATASET_CASES) == set(data.DATASETS)


@pytest.mark.parametrize("name", list(data.DATASETS))
def test_every_dataset_loader_meets_the_table_contract(name, tmp_path):
    ds = data.load(name, **DATASET_CASES[name](tmp_path))
    t = ds.table
    assert {"example_id", "input", "label"} <= set(t.columns) and len(t) > 0
    assert t["example_id"].is_unique and t["example_id"].map(type).eq(str).all()
    assert set(t["label"]) <= set(range(ds.num_labels)) and ds.kind in ("image", "text")
    assert ds.attributes and all(f"group_{a}" in t for a in ds.attributes)
    split = splits.split_for(ds, 13)
    assert set(split) <= set(data.SPLITS) and split.notna().all() and len(split) == len(t)


def test_every_compared_metric_declares_its_direction():
    for key in ("accuracy", "worst_group_accuracy", "lira_auc", "loss_auc", "flip_rate", "stereotype_excess"):
        m = metrics.get_metric(key)
        assert isinstance(m.higher_is_better, bool) and m.per_example and m.aggregation
    for key in inference.MARGINS:  # every metric with an equivalence margin is a registered metric
        metrics.get_metric(key)
    cases = pd.DataFrame([{"experiment": "x", "comparison": "LoRA - full", "metric_key": k, "seeds": 3,
                           "difference": 0.1, "p": 0.001, "p_tost": 0.9} for k in ("accuracy", "lira_auc")])
    assert findings.decide(cases)["verdict"].tolist() == ["LoRA better", "LoRA worse"]  # higher AUC leaks more
    with pytest.raises(KeyError, match="unknown metric 'recall'; valid choices: accuracy"):
        findings.decide(cases.assign(metric_key="recall"))


def test_stratified_bootstrap_keeps_each_stratum_size():
    boots = metrics.stratified_bootstrap(lambda i: [len(i), (i < 5).sum()], [np.arange(5), np.arange(5, 12)], 20,
                                         np.random.default_rng(0))
    sizes = set(map(tuple, boots.astype(int)))
    assert sizes == {(12, 5)}  # 5 draws from the first stratum, 7 from the second, every time
    lo, hi = metrics.percentile_interval(boots[:, 0])
    assert lo == hi == 12
    assert np.isnan(metrics.percentile_interval([])[0])


def test_offline_chapter_grids_are_exactly_the_committed_records():
    """Run ids stay as they are: the grids the library builds for the offline profile name exactly
    the committed records (the chapters' learning-rate pilots included; earlier pilot directories are
    not in any grid), so no notebook is needed to list them."""
    built: dict = {}
    for chapter in chapters.CHAPTERS:
        for c in chapters.runs(chapter, profiles.resolve(chapter, "offline")):
            built.setdefault(c["experiment"], set()).add(run_id(c))
    committed = {p.name: {r.name for r in p.iterdir() if (r / "DONE").exists()}
                 for p in (ROOT / "results").iterdir()
                 if p.is_dir() and (not p.name.startswith("pilot_") or p.name in built)}  # earlier pilots: kept as they are
    assert built == committed
    assert {"pilot_lr_vision", "pilot_lr_llm"} <= set(built)  # the learning-rate pilots are part of the grids


def _imports(path: Path) -> tuple[set, set]:
    """(module-level, function-level) lorafair modules imported by a source file."""
    tree = ast.parse(path.read_text())
    pkg = path.relative_to(LIB.parent).with_suffix("").parts
    pkg = pkg[:-1] if pkg[-1] != "__init__" else pkg[:-1]

    def targets(node):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(pkg[: len(pkg) - node.level + 1])
            mod = base + (node.module.split(".") if node.module else [])
            if node.module:
                return {".".join(mod)}
            return {".".join(base + [a.name]) for a in node.names}
        if isinstance(node, ast.Import):
            return {a.name for a in node.names if a.name.startswith("lorafair")}
        return set()

    top = set().union(*[targets(n) for n in tree.body]) if tree.body else set()
    inner = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for m in ast.walk(n):
                inner |= targets(m)
    return top, inner


def _modules() -> dict:
    out = {}
    for p in sorted(LIB.rglob("*.py")):
        name = ".".join(p.relative_to(LIB.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = p
    return out


def test_no_import_cycles_and_no_hidden_local_imports():
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        top, inner = _imports(path)
        if name != "lorafair.cli":  # the CLI imports per command, for a fast start; nothing imports it
            assert not inner, f"{name} imports {sorted(inner)} inside a function"
        graph[name] = {m for m in top | inner if m in mods and m != name}
    state: dict = {}

    def visit(n, stack):
        state[n] = "open"
        for m in graph[n]:
            assert state.get(m) != "open", "import cycle: " + " -> ".join(stack + [n, m])
            if m not in state:
                visit(m, stack + [n])
        state[n] = "done"
    for n in graph:
        if n not in state:
            visit(n, [])


def test_every_module_imports_on_its_own_in_any_order():
    names = [n for n in _modules() if n != "lorafair.__main__"]
    # each module from a state with no lorafair module loaded, so no import depends on an earlier one;
    # with an acyclic graph of module-level imports (above), any order then works
    code = ("import importlib, sys\n"
            "for n in sys.argv[1:]:\n"
            "    for k in [k for k in sys.modules if k.startswith('lorafair')]:\n"
            "        del sys.modules[k]\n"
            "    importlib.import_module(n)\n")
    r = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=240,
                       env={**os.environ, "PYTHONPATH": str(LIB.parent)})
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_method_setting_besides_rank_is_hashed_defaulted_and_validated(smoke_kwargs):
    """LoKr's decomposition factor: declared once in the entry, it enters the configuration (with
    its default), reaches peft, and an unknown setting names the valid ones."""
    def lokr(settings, targets, modules_to_save, task_type, dropout=0.0):
        from peft import LoKrConfig

        return LoKrConfig(r=settings["rank"], alpha=settings["alpha"], decompose_factor=settings["decompose_factor"],
                          target_modules=list(targets), modules_to_save=modules_to_save)

    methods.register(methods.Method("lokr_test", "LoKr", "adapter", "#111111", "P", "-",
                                    settings=("rank", "alpha", "decompose_factor"), defaults={"decompose_factor": -1},
                                    peft_config=lokr))
    try:
        from lorafair import experiments as ex

        def cfg(**kw):
            return ex.classification_config("vision_classification", "smoke", "openmoji_people", smoke_kwargs,
                                            "vit_tiny_random", "lokr_test", 13, 1, 1e-3, 16, **kw)
        assert cfg()["decompose_factor"] == -1 and cfg(settings={"decompose_factor": 2})["decompose_factor"] == 2
        assert run_id(cfg()) != run_id(cfg(settings={"decompose_factor": 2}))
        with pytest.raises(Exception, match="method 'lokr_test' has no setting 'factor'; its settings: rank, alpha"):
            cfg(settings={"factor": 2})
        m, spec = models.build("vit_tiny_random", 2)
        _, info = models.adapt(m, spec, "lokr_test", settings={"decompose_factor": 2})
        assert info["peft_config"]["decompose_factor"] == 2 and info["decompose_factor"] == 2
    finally:
        del methods.METHODS["lokr_test"]
