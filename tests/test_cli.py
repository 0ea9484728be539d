import subprocess
import sys

import pytest

from lorafair import cli


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lorafair.cli", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args,message", [
    (["run", "vision", "--model", "resnet50"], "unknown model 'resnet50'; valid choices: mobilenet_v2"),
    (["run", "vision", "--method", "qlora"], "unknown method 'qlora'; valid choices: base, head, lora, full, dora, ia3"),
    (["run", "vision", "--method", "dora"], "no setting for method 'dora' in this profile (it sets head, lora, full)"),
    (["run", "vision", "--profile", "huge"], "unknown profile 'huge'; valid choices: smoke, offline, paper"),
    (["run", "nlp"], "unknown experiment 'nlp'; valid choices: vision, llm"),
    (["run", "llm", "--model", "gpt2"], "unknown model 'gpt2'"),
    (["notebook", "vision_classification", "-p", "epochz", "3"], "unknown parameter 'epochz'"),
    (["notebook", "audio"], "unknown notebook 'audio'; valid choices: vision_classification, llm_classification"),
    (["params", "audio"], "unknown notebook 'audio'"),
    (["bench", "--workloads", "resnet:full"], "unknown architecture 'resnet'; valid choices: vit_base"),
    (["bench", "--workloads", "vit_base:full", "--precision", "bf16"], "'bf16' (bf16 weights) is for GPUs"),
])
def test_user_errors_are_one_line_without_traceback(capsys, args, message):
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_paper_profile_without_utkface_says_where_to_get_it(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "vision", "--profile", "paper", "--model", "vit_base"]) == 2
    assert "susanqq.github.io/UTKFace" in capsys.readouterr().err


def test_params_lists_every_parameter_with_profile_values():
    out = run_cli("params", "vision_classification")
    assert out.returncode == 0
    for k in ("models:", "seeds:", "ranks:", "lrs:", "profile:", "force:"):
        assert k in out.stdout
    assert "offline=[\"mobilenet_v2\", \"efficientnet_lite0\"]" in out.stdout


def test_cli_process_error_exit_code():
    out = run_cli("run", "vision", "--model", "nope")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_bench_prints_a_table_and_writes_json(tmp_path, capsys):
    import json

    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--workloads", "vit_base:lora", "llama_7b:full", "--steps", "1", "--warmup", "1",
                     "--batch-size", "2", "--seq-len", "16", "--precision", "fp32", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "measured matmul peak" in text and "vit_base:lora" in text and "mfu" in text
    d = json.loads(out.read_text())
    assert [r["workload"] for r in d["rows"]] == ["vit_base:lora", "llama_7b:full"]
    assert d["environment"]["device"] == "cpu" and d["environment"]["packages"]["torch"]


def test_cli_run_uses_the_chapter_split_and_reads_the_committed_record(capsys):
    """`lorafair run vision` builds the same configuration as the chapter (glyph-unit split), so a
    committed run is read back, not recomputed."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    before = sorted(p.name for p in (root / "results" / "vision_classification").iterdir())
    assert cli.main(["run", "vision", "--model", "mobilenet_v2", "--method", "head", "--seed", "42",
                     "--results-dir", str(root / "results")]) == 0
    out = capsys.readouterr().out
    assert "results/vision_classification/" in out and "test accuracy" in out
    assert sorted(p.name for p in (root / "results" / "vision_classification").iterdir()) == before  # read, not run


def test_book_out_builds_from_a_copy_of_the_sources(tmp_path):
    """lorafair book --out DIR executes and builds in DIR/source, never in the checkout."""
    from lorafair import notebook

    src = notebook.stage_sources(tmp_path)
    assert src == tmp_path / "source"
    assert (src / "_config.yml").read_text() == (notebook.REPO_ROOT / "_config.yml").read_text()
    assert (src / "_toc.yml").exists() and (src / "book" / "methods.md").exists()
    assert (src / "book" / "_static" / "lorafair.css").exists() and (src / "book" / "_ext" / "lorafair_book.py").exists()
    assert not list((src / "book").glob("*.ipynb"))  # executed notebooks are written there, not copied
    (src / "book" / "stale.txt").write_text("x")
    notebook.stage_sources(tmp_path)  # a second build starts from a fresh copy
    assert not (src / "book" / "stale.txt").exists()
