"""Execute the jupytext notebooks headlessly with papermill and build the Jupyter Book.

papermill cannot read a jupytext ``.py`` file, so the driver converts it in memory
(``jupytext.read``) and hands the notebook object to ``papermill.execute_notebook``. The parameters
cell and papermill's injected-parameters cell are tagged ``hide-input`` for the book. Any cell error
raises a one-line LorafairError and leaves the partial notebook for inspection.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .assets import REPO_ROOT
from .errors import LorafairError, choose
from . import launch, plots
from .profiles import PROFILE_NAMES, parameter_names, resolve_from
from .runs import RunStore, die_with_parent

NOTEBOOKS = ("vision_classification", "llm_classification", "membership_inference", "generation_fairness",
             "findings", "records", "performance")
SOURCE_DIR = REPO_ROOT / "notebooks"
BOOK_DIR = REPO_ROOT / "book"


def source(name: str) -> Path:
    choose("notebook", name, NOTEBOOKS)
    return SOURCE_DIR / f"{name}.py"


def execute(name: str, parameters: dict | None = None, out_dir: str | os.PathLike | None = None,
            log: bool = False) -> Path:
    """Run one notebook; returns the executed ``.ipynb``. Unknown parameters are rejected."""
    import jupytext
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    parameters = dict(parameters or {})
    valid = parameter_names(name)
    for k in parameters:
        if k not in valid:
            raise LorafairError(f"unknown parameter {k!r} for notebook {name}; valid: {', '.join(valid)}")
    if "profile" in parameters:
        choose("profile", parameters["profile"], PROFILE_NAMES)
    check_force(parameters.get("force", False))
    if "results_dir" in parameters:
        check_results_dir(parameters["results_dir"])
    out = Path(out_dir or BOOK_DIR) / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(source(name))
    interrupted: list = []
    try:
        with _interrupt_kernel_on_ctrl_c() as interrupted:
            papermill.execute_notebook(nb, str(out), parameters=parameters, kernel_name="python3",
                                       language="python", cwd=str(REPO_ROOT), progress_bar=False,
                                       log_output=log, shutdown_kernel="immediate")
    except Exception as e:
        if interrupted:  # the kernel stopped (interrupted or killed) because of Ctrl-C
            raise KeyboardInterrupt from None
        if not isinstance(e, PapermillExecutionError):
            raise
        raise LorafairError(f"notebook {name} failed in cell {e.exec_count}: {e.ename}: "
                            f"{str(e.evalue).splitlines()[0] if e.evalue else ''} (partial output: {out})") from None
    executed = nbformat.read(out, as_version=4)
    scrub_paths(executed)
    for cell in executed.cells:
        tags = cell.metadata.setdefault("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and "hide-input" not in tags:
            tags.append("hide-input")
    nbformat.write(executed, out)
    errors = notebook_errors(out)
    if errors:
        raise LorafairError(f"notebook {name} holds error outputs: {errors[0]}")
    return out


KILL_AFTER_S = 5.0


def check_force(force) -> None:
    """The ``force`` parameter is true or false (``-p force maybe`` must not recompute a chapter)."""
    if not isinstance(force, bool):
        raise LorafairError(f"parameter force is {force!r}: true (recompute runs that have a record) or false")


def check_results_dir(d) -> None:
    """The ``results_dir`` parameter is a folder's path (a string)."""
    if d is not None and (not isinstance(d, str) or not d.strip() or "\x00" in d):
        raise LorafairError(f"parameter results_dir is {d!r}: a folder's path (a string)")


class Text(str):
    """A string glued for prose (``{glue}`` in a page): it displays without quotes."""

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))


@contextmanager
def _interrupt_kernel_on_ctrl_c():
    """While a notebook executes: Ctrl-C (SIGINT) or SIGTERM interrupts the kernel, which runs in a
    session of its own and does not see the terminal's Ctrl-C. The running cell unwinds through its
    clean-ups (a run's temporary directory, its claim, the sweep's workers) and the execution ends
    with the cell's error, which ``execute`` turns into KeyboardInterrupt. A kernel still alive
    ``KILL_AFTER_S`` later, or a second Ctrl-C, is killed with its process group. Yields a list
    that is non-empty once interrupted."""
    import signal
    import threading

    import psutil

    fired: list = []
    if threading.current_thread() is not threading.main_thread():
        yield fired
        return

    def kernels():
        out = []
        for p in psutil.Process().children():
            try:
                if "ipykernel" in " ".join(p.cmdline()):
                    out.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):  # ended while we looked
                pass
        return out

    def kill():
        for k in kernels():
            try:
                os.killpg(k.pid, signal.SIGKILL)  # the kernel leads its process group (its workers too)
            except (ProcessLookupError, PermissionError):
                pass

    def handler(signum, frame):
        if fired:
            kill()
            return
        fired.append(signum)
        for k in kernels():
            try:
                k.send_signal(signal.SIGINT)
            except psutil.NoSuchProcess:
                pass
        timers.append(threading.Timer(KILL_AFTER_S, kill))
        timers[0].daemon = True
        timers[0].start()

    timers: list = []
    before = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield fired
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        for t in timers:
            t.cancel()
        if fired:
            kill()


def scrub_paths(nb) -> None:
    """No absolute path of the machine that executed a notebook stays in it (the book publishes the
    executed notebooks): papermill's input and output paths become repository-relative, and the
    repository root and the home directory in any output text become ``.`` and ``~``."""
    pm = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if pm.get(key):
            pm[key] = os.path.relpath(pm[key], REPO_ROOT) if os.path.isabs(str(pm[key])) else pm[key]
    roots = [(str(REPO_ROOT), "."), (os.path.expanduser("~"), "~")]

    def clean(text: str) -> str:
        for a, b in roots:
            if a and a not in ("/", "."):
                text = text.replace(a, b)
        return text
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if "text" in o:
                o["text"] = clean(o["text"] if isinstance(o["text"], str) else "".join(o["text"]))
            for mime, v in (o.get("data") or {}).items():
                if mime.startswith("text/") or mime.endswith("json"):
                    if isinstance(v, str):
                        o["data"][mime] = clean(v)
            if "traceback" in o:
                o["traceback"] = [clean(t) for t in o["traceback"]]


def notebook_errors(path: str | os.PathLike) -> list[str]:
    """Error outputs or a papermill exception recorded in an executed notebook."""
    nb = json.loads(Path(path).read_text())
    found = []
    if nb.get("metadata", {}).get("papermill", {}).get("exception"):
        found.append("papermill recorded an exception")
    for i, cell in enumerate(nb.get("cells", [])):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                found.append(f"cell {i}: {o.get('ename')}: {o.get('evalue')}")
    return found


def missing_runs(profile: str, names, results_dir: str | None = None) -> dict[str, list[str]]:
    """{chapter: run ids without a record} of the chapters among ``names`` that run anything."""
    out = {}
    for name in names:
        if name not in launch.RUN_CHAPTERS:
            continue
        rows = launch.listing(name, profile, results_dir=results_dir)
        todo = [f"{r['experiment']}/{r['run_id']}" for r in rows if r["state"] != "done"]
        if todo:
            out[name] = todo
    return out


BOOK_SOURCES = ("_config.yml", "_toc.yml", "book")


#: the file that marks ``OUT/source`` as made by ``lorafair book --out`` (only such a folder is replaced)
STAGED_MARK = ".lorafair-staged"


def stage_sources(out: Path) -> Path:
    """A copy of the book's sources (configuration, table of contents, the text chapters) in
    ``out/source``, where the notebooks are executed and the book is built: nothing in the checkout
    changes. An earlier copy is replaced only if it bears this tool's mark (``STAGED_MARK``); a
    ``source`` folder of the user's is never removed. Returns the copy's root."""
    import shutil

    src = out / "source"
    if src.is_symlink() or (src.exists() and not (src / STAGED_MARK).is_file()):
        raise LorafairError(f"{src} exists and was not made by lorafair book --out; it is left as it is: give "
                            "another --out folder, or remove it yourself")
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    (src / STAGED_MARK).write_text("made by lorafair book --out; replaced by the next build into this folder\n")
    for name in BOOK_SOURCES:
        a = REPO_ROOT / name
        if a.is_dir():
            shutil.copytree(a, src / name, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
        else:
            shutil.copy2(a, src / name)
    return src


def build_book(profile: str = "offline", recompute: bool = False, only: list[str] | None = None,
               build: bool = True, compute: bool = True, results_dir: str | None = None,
               out_dir: str | None = None) -> dict:
    """Execute every notebook on ``profile`` into book/, then ``jupyter-book build`` (warnings fail).
    ``compute=False`` renders from the run store alone: it first names every run still missing (and
    the command that lists them) and fails, and the notebooks' kernels may not train
    (``LORAFAIR_NO_COMPUTE``). ``results_dir``: another run store than the profile's. ``out_dir``:
    execute and build in a copy of the sources there (the HTML in ``out_dir/_build/html``) instead
    of in the checkout."""
    choose("profile", profile, PROFILE_NAMES)
    for name in only or ():  # everything is checked before anything is created or replaced
        choose("notebook", name, NOTEBOOKS)
    if results_dir is not None:
        check_results_dir(results_dir)
    root = REPO_ROOT
    if out_dir:
        out_dir = Path(out_dir).resolve()
        if out_dir == REPO_ROOT or REPO_ROOT in out_dir.parents and out_dir.parts[len(REPO_ROOT.parts)] in BOOK_SOURCES:
            raise LorafairError(f"--out {out_dir} would overwrite the book's sources; give a folder outside them")
    if not compute:  # checked before the sources are staged: a refusal replaces nothing
        missing = missing_runs(profile, only or NOTEBOOKS, results_dir)
        if missing:
            first = next(iter(missing))
            raise LorafairError("runs without a record: " + "; ".join(f"{k} {len(v)} (e.g. {v[0]})" for k, v in
                                                                     missing.items())
                                + f". List and launch them with `lorafair sweep {first} --profile {profile} --emit "
                                  "pending.jsonl`")
        os.environ["LORAFAIR_NO_COMPUTE"] = "1"
    if out_dir:
        root = stage_sources(out_dir)
    timings = {}
    for name in only or NOTEBOOKS:
        t0 = time.time()
        print(f"[lorafair] executing {name} (profile {profile}{', recompute' if recompute else ''})",
              flush=True)
        params = {"profile": profile, "force": recompute}
        if results_dir:
            params["results_dir"] = str(results_dir)
        execute(name, params, root / "book", log=False)
        timings[name] = round(time.time() - t0, 1)
        print(f"[lorafair] {name}: {timings[name]} s", flush=True)
    if build:
        t0 = time.time()
        html_root = Path(out_dir) if out_dir else REPO_ROOT
        cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root), "-W", "-n",
               "--keep-going", *(["--path-output", str(out_dir)] if out_dir else [])]
        print("[lorafair] " + " ".join(cmd[1:]), flush=True)
        res = subprocess.run(cmd, cwd=root)
        if res.returncode != 0:
            raise LorafairError(f"jupyter-book build failed (exit {res.returncode}); see the log above")
        timings["jupyter-book"] = round(time.time() - t0, 1)
        print(f"[lorafair] book: {html_root / '_build' / 'html' / 'index.html'}", flush=True)
    return timings


def _one_line_errors() -> None:
    """In a notebook's kernel, a LorafairError (a bad parameter, a run that stopped) shows as one line
    naming it instead of a traceback; the cell still fails, so papermill stops there."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def one_line(self, etype, value, tb, tb_offset=None):
        stb = [f"lorafair: error: {value}"]
        self._showtraceback(etype, value, stb)  # the kernel reports it as the cell's error (papermill reads it)
        return stb
    shell.set_custom_exc((LorafairError,), one_line)


def setup_chapter(name: str, namespace: dict):
    """What every chapter does first: quiet library warnings, the kernel's torch threads
    (``LORAFAIR_THREADS``, default 2; the tests set 1), the plot style, the parameters resolved from
    the profile (``namespace`` = the notebook's globals) and its run store."""
    import os
    import signal
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=UserWarning)
    _one_line_errors()
    check_force(namespace.get("force", False))
    # a kernel never outlives the process that executes its notebook (SIGKILL included); its sweep
    # workers then get their own SIGTERM and clean up
    die_with_parent(signal.SIGKILL)
    threads = os.environ.get("LORAFAIR_THREADS", "2")
    if not re.fullmatch(r"[0-9]+", threads.strip()) or int(threads) < 1:
        raise LorafairError(f"LORAFAIR_THREADS must be a positive integer, got {threads!r}")
    torch.set_num_threads(int(threads))
    plots.setup()
    params = resolve_from(name, namespace)
    return params, RunStore(params["results_dir"])
