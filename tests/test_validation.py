"""Bad inputs, as a careful and a hostile user would type them: each is refused before anything
trains, with exit status 2 and one line that names the parameter (or flag) and the bad value, and no
traceback."""

import pytest

from lorafair.cli import main

V = "vision_classification"
L = "llm_classification"
CASES = [
    # lorafair run: ranges, choices and combinations (0 is a value, not "unset")
    (["run", "vision", "--profile", "smoke", "--epochs", "-2"], "--epochs must be at least 1, got -2"),
    (["run", "vision", "--profile", "smoke", "--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["run", "vision", "--profile", "smoke", "--lr", "0"], "--lr must be positive, got 0"),
    (["run", "vision", "--profile", "smoke", "--lr", "-0.1"], "--lr must be positive, got -0.1"),
    (["run", "vision", "--profile", "smoke", "--alpha", "-1"], "--alpha must be positive, got -1"),
    (["run", "vision", "--profile", "smoke", "--alpha", "0"], "--alpha must be positive, got 0"),
    (["run", "vision", "--profile", "smoke", "--placement", "sideways"], "unknown --placement 'sideways'"),
    (["run", "vision", "--profile", "smoke", "--layer-fraction", "0"], "--layer-fraction must be in (0, 1], got 0"),
    (["run", "vision", "--profile", "smoke", "--layer-fraction", "1.5"], "--layer-fraction must be in (0, 1], got 1.5"),
    (["run", "vision", "--profile", "smoke", "--method", "head", "--rank", "7"], "--rank applies to rank-taking methods"),
    (["run", "vision", "--profile", "smoke", "--method", "full", "--alpha", "8"], "--alpha applies to rank-taking"),
    (["run", "vision", "--profile", "smoke", "--rank", "0"], "--rank must be positive (rank 0 is --method head)"),
    (["run", "vision", "--profile", "smoke", "--rank", "-3"], "--rank must be positive"),
    (["run", "vision", "--profile", "smoke", "--num-workers", "-1"], "--num-workers must be 0 or more, got -1"),
    (["run", "vision", "--profile", "smoke", "--method", "full", "--layer-fraction", "0.5"],
     "--layer-fraction and --placement apply to adapter methods"),
    (["run", "vision", "--profile", "smoke", "--method", "qlora"], "unknown method 'qlora'"),
    (["run", "vision", "--profile", "nope"], "unknown profile 'nope'"),
    (["run", "audio"], "unknown experiment 'audio'"),
    (["run", "vision", "--profile", "smoke", "--model", "resnet9000"], "resnet9000"),
    (["run", "generation", "--profile", "smoke", "--rank", "-3"], "--rank must be positive"),
    (["run", "generation", "--profile", "smoke", "--model", "vit_tiny_random"], "unknown model for generation 'vit_tiny_random'"),
    (["run", "generation", "--profile", "smoke", "--part", "poetry"], "unknown part 'poetry'"),
    (["run", "generation", "--profile", "smoke", "--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["run", "vision", "--profile", "smoke", "--method", "vera", "--model", "vit_tiny_random", "--lr", "1e-3",
      "--epochs", "1", "--rank", "4"], "--rank applies to rank-taking methods"),
    # notebook parameters (-p), resolved and checked as a chapter starts (lorafair plan resolves the same way)
    (["plan", V, "--profile", "smoke", "-p", "seeds", "[13"], "parameter seeds of vision_classification is '[13': not valid YAML"),
    (["plan", V, "--profile", "smoke", "-p", "seeds", "abc"], "parameter seeds of vision_classification is ['abc']"),
    (["plan", V, "--profile", "smoke", "-p", "seeds", "[]"], "parameter seeds"),
    (["plan", V, "--profile", "smoke", "-p", "seeds", "[1.5]"], "a non-empty list of integers"),
    (["plan", V, "--profile", "smoke", "-p", "methods", "[nosuch]"], "unknown method in parameter methods"),
    (["plan", V, "--profile", "smoke", "-p", "placements", "[sideways]"], "unknown placement in parameter placements"),
    (["plan", V, "--profile", "smoke", "-p", "lrs", "fast"], "parameter lrs of vision_classification is 'fast'"),
    (["plan", V, "--profile", "smoke", "-p", "lrs", "{head: 1e-2, lora: -1, full: 1e-3}"], "parameter lrs"),
    (["plan", V, "--profile", "smoke", "-p", "epochs", "0"], "parameter epochs of vision_classification is 0"),
    (["plan", V, "--profile", "smoke", "-p", "epochs", "-2"], "parameter epochs"),
    (["plan", V, "--profile", "smoke", "-p", "batch_size", "0"], "parameter batch_size of vision_classification is 0"),
    (["plan", V, "--profile", "smoke", "-p", "n_boot", "-5"], "parameter n_boot of vision_classification is -5"),
    (["plan", V, "--profile", "smoke", "-p", "workers", "0"], "parameter workers"),
    (["plan", V, "--profile", "smoke", "-p", "ranks", "[0]"], "rank 0 is the method head"),
    (["plan", V, "--profile", "smoke", "-p", "ranks", "[-1, 4]"], "parameter ranks"),
    (["plan", V, "--profile", "smoke", "-p", "ranks", "eight"], "parameter ranks"),
    (["plan", V, "--profile", "smoke", "-p", "split_fractions", "[0.5, 0.5]"], "parameter split_fractions"),
    (["plan", V, "--profile", "smoke", "-p", "split_fractions", "[0.6, 0.3, 0.3]"], "summing to 1"),
    (["plan", V, "--profile", "smoke", "-p", "train_options", "{turbo: true}"], "unknown key in parameter train_options"),
    (["plan", V, "--profile", "smoke", "-p", "train_options", "fast"], "parameter train_options"),
    (["plan", V, "--profile", "smoke", "-p", "models", "[]"], "parameter models"),
    (["plan", V, "--profile", "smoke", "-p", "nosuch", "1"], "unknown parameter 'nosuch'"),
    (["plan", L, "--profile", "smoke", "-p", "max_length", "0"], "parameter max_length of llm_classification is 0"),
    (["plan", L, "--profile", "smoke", "-p", "seeds", "[true]"], "parameter seeds"),
    (["plan", "membership_inference", "--profile", "smoke", "-p", "n_shadows", "0"], "parameter n_shadows"),
    (["plan", "generation_fairness", "--profile", "smoke", "-p", "max_new_tokens", "0"], "parameter max_new_tokens"),
    (["plan", "generation_fairness", "--profile", "smoke", "-p", "train_sets", "pro"], "parameter train_sets"),
    (["plan", "generation_fairness", "--profile", "smoke", "-p", "probe_lrs", "{lora: 0, full: 1e-3}"], "parameter probe_lrs"),
    (["plan", "nosuch"], "unknown notebook 'nosuch'"),
    (["plan", V, "--profile", "nope"], "unknown profile 'nope'"),
    # the cluster path and the run store
    (["sweep", V, "--launch", "pbs", "--emit", "x.jsonl"], "unknown launcher 'pbs'"),
    (["sweep", V, "--tasks-per-job", "0"], "--tasks-per-job must be at least 1"),
    (["sweep", V, "--profile", "smoke", "-p", "seeds", "[13"], "parameter seeds of vision_classification is '[13'"),
    (["exec", "/nonexistent.jsonl"], "no such file of configurations"),
    (["runs", "verify", "--results-dir", "/nonexistent-store"], "no run store at /nonexistent-store"),
    (["book", "--no-compute", "--recompute"], "--no-compute and --recompute contradict each other"),
    (["book", "--no-build", "--out", "book"], "would overwrite the book's sources"),
    (["params", "nosuch"], "unknown notebook 'nosuch'"),
    (["run", "vision", "--profile", "smoke", "--results-dir", "/proc/lorafair-store"], "--results-dir /proc/lorafair-store is not writable"),
    (["exec", "/dev/null", "--results-dir", "/proc/lorafair-store"], "--results-dir /proc/lorafair-store is not writable"),
    # lorafair bench: numbers and the output file, checked before anything is measured
    (["bench", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["bench", "--steps", "0"], "--steps must be at least 1, got 0"),
    (["bench", "--warmup", "-1"], "--warmup must be at least 0, got -1"),
    (["bench", "--seq-len", "0"], "--seq-len must be at least 1, got 0"),
    (["bench", "--cpu", "--threads", "0"], "--threads must be at least 1, got 0"),
    (["bench", "--cpu", "--budget", "0"], "--budget must be positive"),
    (["bench", "--out", "/nonexistent-dir/x.json"], "--out /nonexistent-dir/x.json: no folder /nonexistent-dir"),
    (["bench", "--workloads", "nosuch:lora"], "unknown architecture 'nosuch'"),
    (["bench", "--estimate", "--compile"], "--estimate models an eager step"),
    (["sweep", V, "--workers", "0"], "--workers must be at least 1, got 0"),
    (["notebook", "nosuch"], "unknown notebook 'nosuch'"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_a_bad_input_is_one_line_naming_it(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lorafair: error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err


def test_the_table_covers_at_least_sixty_inputs():
    assert len(CASES) >= 60


@pytest.mark.parametrize("argv, message", [
    (["run", "vision", "--profile", "smoke", "--results-dir", "{file}"], "--results-dir {file} is a file, not a folder"),
    (["book", "--no-build", "--results-dir", "{file}"], "--results-dir {file} is a file, not a folder"),
    (["runs", "verify", "--results-dir", "{file}"], "--results-dir {file} is a file, not a folder"),
    (["bench", "--out", "{dir}"], "--out {dir} is a folder; give a file name"),
    (["book", "--out", "{file}"], "--out {file} is a file, not a folder"),
    (["notebook", "findings", "--out", "{file}"], "--out {file} is a file, not a folder"),
])
def test_a_file_where_a_folder_belongs_and_back(argv, message, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    fill = {"file": str(f), "dir": str(tmp_path)}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(**fill) in err and "Traceback" not in err


def test_an_estimate_that_does_not_fit_the_gpu_says_so(capsys):
    assert main(["bench", "--estimate", "--workloads", "vit_base:lora", "--batch-size", "1000000", "--scale", "paper"]) == 0
    out = capsys.readouterr().out
    assert "vit_base:lora does not fit: about" in out and "try a smaller --batch-size" in out


def test_a_cpu_allocation_failure_is_a_row_not_a_traceback(capsys):
    assert main(["bench", "--workloads", "vit_base:lora", "--batch-size", "1000000000", "--steps", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "vit_base:lora" in out and "out of memory" in out
