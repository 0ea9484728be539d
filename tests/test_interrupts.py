"""Ctrl-C and SIGKILL of ``lorafair notebook`` while a notebook's two sweep workers are training:
one line and exit 130 within seconds, no kernel traceback, no process left, and no temporary
directory or claim left once the next run has gone through the store.

The notebook is a small stand-in for a chapter (the same driver, kernel, run store and worker pool;
each "run" sleeps instead of training), so that the test costs seconds, not a chapter's smoke run."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lorafair.runs import RunStore, pid_alive

LIB = str(Path(__file__).resolve().parents[1] / "lib")

TASKS = '''
import os, time
import pandas as pd
from lorafair.runs import RunStore

def train(root, i, pids):
    def compute():
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(300)  # a run that is still training when the signal comes
        return pd.DataFrame({"x": [i]}), {"accuracy": 1.0}
    RunStore(root).get_or_run("exp", {"i": i}, compute)
'''

NOTEBOOK = '''# %%
import os, sys
sys.path.insert(0, {tasks_dir!r})
import signal
from lorafair.runs import die_with_parent, map_in_workers
die_with_parent(signal.SIGKILL)  # what every chapter's setup does
with open({pids!r}, "a") as f:
    f.write(f"{{os.getpid()}}\\n")  # the kernel
from tasks import train
map_in_workers(train, [({root!r}, i, {pids!r}) for i in range(4)], 2, lambda: None)
'''

DRIVER = '''
import sys
sys.path.insert(0, {lib!r})
from lorafair import notebook
notebook.source = lambda name: __import__("pathlib").Path({nb!r})
sys.argv = ["lorafair", "notebook", "vision_classification", "--out", {out!r}]
from lorafair.cli import main
sys.exit(main())
'''


def _start(tmp_path):
    (tmp_path / "tasks.py").write_text(TASKS)
    pids, root = tmp_path / "pids", tmp_path / "store"
    nb = tmp_path / "stand_in.py"
    nb.write_text(NOTEBOOK.format(tasks_dir=str(tmp_path), pids=str(pids), root=str(root)))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(lib=LIB, nb=str(nb), out=str(tmp_path / "out")))
    err = open(tmp_path / "stderr", "w")  # a file, not a pipe: a pipe would stay open while any child lives
    proc = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.DEVNULL, stderr=err,
                            env={**os.environ, "PYTHONPATH": LIB}, start_new_session=True)
    err.close()
    deadline = time.time() + 90
    while time.time() < deadline and (not pids.exists() or len(pids.read_text().split()) < 3):
        assert proc.poll() is None, (tmp_path / "stderr").read_text()
        time.sleep(0.2)
    found = [int(p) for p in pids.read_text().split()]
    assert len(found) == 3 and all(pid_alive(p) for p in found), "the kernel and two workers should be running"
    tmp = list((root / "exp").glob(".tmp-*"))
    assert len(tmp) == 2, "each worker holds a temporary directory while it trains"
    return proc, found, root


def _gone(pids, within_s):
    deadline = time.time() + within_s
    while time.time() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if pid_alive(p)]


def _leftovers(root):
    return sorted(p.name for p in (root / "exp").iterdir() if p.name.startswith("."))


def _next_run(root):
    """The next run through the store: a dead owner's temporary directories and claims go."""
    import pandas as pd

    RunStore(root).get_or_run("exp", {"i": 0}, lambda: (pd.DataFrame({"x": [0]}), {"accuracy": 1.0}))


def test_ctrl_c_stops_a_two_worker_notebook_in_seconds_with_one_line(tmp_path):
    proc, pids, root = _start(tmp_path)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    took = time.time() - t0
    err = (tmp_path / "stderr").read_text()
    assert proc.returncode == 130, err
    assert took < 10, f"took {took:.1f} s to stop"
    assert err.strip().splitlines()[-1] == "lorafair: interrupted; completed runs are kept, re-run to resume"
    assert "Traceback" not in err and "ZMQError" not in err, err
    assert _gone(pids, 5) == [], "kernel or workers outlived the interrupt"
    assert _leftovers(root) == [], "the workers' clean-ups remove their temporary directories and claims"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigkill_of_the_notebook_leaves_no_process_and_the_next_run_no_temporaries(tmp_path):
    proc, pids, root = _start(tmp_path)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver's session: the kernel and workers are in their own
    proc.wait(timeout=30)
    assert _gone(pids, 15) == [], "kernel or workers outlived a killed notebook"
    # whatever a killed process could not clean up after itself ...
    _next_run(root)
    assert _leftovers(root) == []  # ... the next run does
