"""The run store: one directory per run, named by a hash of its resolved configuration.

Contract (book/methods.md, "Run records"): ``<root>/<experiment>/<run_id>/`` holds ``config.json``,
``predictions.parquet``, ``metrics.json`` and, written last, ``DONE``. A directory without ``DONE`` is
incomplete: it is never read and is recomputed. A run is built in a temporary sibling directory and
moved into place with one ``rename``, so an interrupted run never leaves a record that looks complete.

Several processes (SLURM array tasks, the workers of one node, two users' shells) may share a store.
A run is computed by the process that holds its *claim*: ``.claim-<run_id>`` beside the record,
created with ``O_EXCL`` and holding the owner's host, pid and start time, its modification time
refreshed every ``CLAIM_HEARTBEAT_S`` while the run computes. Another process asking for the same
run waits for the record (or skips it, ``wait=False``), saying once what it waits for and since
when. A claim is taken over only when its owner is gone: its heartbeat is older than
``CLAIM_STALE_S`` (on any host: a pid of this host may have been reused by another process), or, on
the same host, its pid no longer exists. A completed record is never removed by a process that did not ask to recompute
it (``force``); a forced recomputation moves the old record aside and removes it only after the new
one is in place. Temporary directories of owners that are gone are removed.

Records are bound to their ids: a record is served only if its stored configuration hashes to its
folder's name and every file matches the size and sha256 its DONE manifest names (checked on load,
cached by modification time and size, so re-rendering stays fast). Every path the store writes lies
inside its root: experiment names are plain folder names, checked before anything is created.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd

from . import assets
from .errors import LorafairError
from .precision import cpu_info

#: Packages whose versions are recorded with every run.
RECORDED_PACKAGES = (
    "torch", "torchvision", "transformers", "peft", "accelerate", "timm", "fairlearn",
    "torchmetrics", "scikit-learn", "scipy", "numpy", "pandas",
)


#: seconds between two refreshes of a claim's modification time while its run computes
CLAIM_HEARTBEAT_S = 30.0
#: a claim whose heartbeat is older than this is taken over (its owner is gone); the environment
#: variable LORAFAIR_CLAIM_STALE_S overrides it (``claim_stale_s``)
CLAIM_STALE_S = 600.0
#: how often a process waiting for another's run looks again
CLAIM_POLL_S = 2.0


def claim_stale_s() -> float:
    """``LORAFAIR_CLAIM_STALE_S`` (seconds, more than two heartbeats) or ``CLAIM_STALE_S``."""
    v = os.environ.get("LORAFAIR_CLAIM_STALE_S")
    if v is None:
        return CLAIM_STALE_S
    try:
        s = float(v)
    except ValueError:
        s = float("nan")
    if not (s == s and s != float("inf") and s > 2 * CLAIM_HEARTBEAT_S):
        raise LorafairError(f"LORAFAIR_CLAIM_STALE_S must be a number of seconds above {2 * CLAIM_HEARTBEAT_S:g} "
                            f"(two heartbeats), got {v!r}")
    return s


def _host() -> str:
    return platform.node() or "unknown-host"


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists (signal 0: no signal is sent). Only a
    positive integer names one process (0 and negative numbers name groups of processes)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except (OSError, ValueError):
        return False
    return True


class Claim:
    """The exclusive right to compute one run (``.claim-<run_id>`` in the experiment's directory)."""

    def __init__(self, path: Path):
        self.path = path
        self._stop = None
        self._thread = None
        #: other paths the heartbeat keeps fresh (the run's temporary folder: it is not another host's leftover)
        self.keep_fresh: list[Path] = []

    def owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def age(self) -> float:
        """Seconds since the claim's last heartbeat (infinite if it is gone)."""
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return float("inf")

    def is_stale(self) -> bool:
        """Its owner is gone: no heartbeat for ``claim_stale_s()`` (on any host: the pid of a claim
        of this host may since belong to another process), or a dead pid on this host. An
        unreadable claim (being written) is stale only once it is old."""
        age = self.age()
        if abs(age) > claim_stale_s():  # no heartbeat for so long, or one stamped far in the future
            return True
        o = self.owner()
        if isinstance(o, dict) and o.get("host") == _host():
            return not pid_alive(o.get("pid", -1))
        return False

    def describe(self) -> str:
        """Who holds the claim and how fresh its heartbeat is, for a waiting process's message."""
        o = self.owner()
        o = o if isinstance(o, dict) else {}
        return (f"held by pid {o.get('pid', '?')} on {o.get('host', '?')} since {o.get('started_utc', '?')}, "
                f"heartbeat {self.age():.0f} s ago; taken over after {claim_stale_s():.0f} s without one")

    def acquire(self) -> bool:
        """Create the claim; False if another live process holds it. A stale claim is removed and
        taken (by exactly one of the processes that find it stale: the removal is a rename)."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    seen = os.lstat(self.path)
                except FileNotFoundError:
                    continue
                if not self.is_stale():
                    return False
                grave = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
                try:
                    os.rename(self.path, grave)  # only one taker succeeds
                    now = os.lstat(grave)
                    if (now.st_ino, now.st_mtime_ns) != (seen.st_ino, seen.st_mtime_ns):
                        # another process took the stale claim over first and made this fresh one: put it back
                        try:
                            os.link(grave, self.path)
                        except OSError:
                            pass
                        grave.unlink(missing_ok=True)
                        return False
                    if grave.is_dir() and not grave.is_symlink():  # a folder where the claim file belongs
                        shutil.rmtree(grave, ignore_errors=True)
                    else:
                        grave.unlink(missing_ok=True)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": _host(), "pid": os.getpid(), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                             time.gmtime())}, f)
            self._start_heartbeat()
            return True
        return False

    def _start_heartbeat(self) -> None:
        import threading

        self._stop = threading.Event()

        def beat():
            while not self._stop.wait(CLAIM_HEARTBEAT_S):
                for p in (self.path, *self.keep_fresh):  # the claim, and the run's temporary folder
                    try:
                        os.utime(p)
                    except FileNotFoundError:
                        pass
                    except OSError:  # a passing error (a network file system): beat again next time
                        pass
        self._thread = threading.Thread(target=beat, daemon=True)
        self._thread.start()

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
        o = self.owner()
        if o and o.get("host") == _host() and o.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)


def clean_stale_temporaries(directory: Path) -> int:
    """Remove the ``.tmp-*`` directories of this host whose owner process is gone, and those of
    another host untouched for ``CLAIM_STALE_S``; returns how many."""
    removed = 0
    if not directory.exists():
        return 0
    for p in directory.glob(".tmp-*"):
        parts = p.name.split("-")  # .tmp-<run_id>-<host>-<pid>-<rand>; host names may hold dashes
        try:
            pid = int(parts[-2])
            host = "-".join(parts[2:-2])
        except (ValueError, IndexError):
            pid, host = -1, ""
        try:
            old = time.time() - p.stat().st_mtime > claim_stale_s()
        except FileNotFoundError:
            continue
        run = p.name.split("-")[1] if p.name.count("-") >= 2 else ""
        claim = Claim(directory / f".claim-{run}")
        if host != _host() and claim.path.exists() and not claim.is_stale():
            continue  # its run is still being computed on another host (its claim has a heartbeat)
        gone = (host == _host() and not pid_alive(pid)) or (old and host != _host())
        if gone:
            shutil.rmtree(p, ignore_errors=True)
            removed += 1
    return removed


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def run_id(config: dict) -> str:
    """Short stable hash of the experimental configuration (not of versions or timings)."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:12]


def code_revision() -> str | None:
    """The library's git revision, with ``-dirty`` when its code has uncommitted changes (the record
    then does not name the code that made it exactly); None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=here).stdout.strip() or None
        if rev:
            dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], capture_output=True, text=True,
                                   timeout=5, cwd=here).stdout.strip()
            rev += "-dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        rev = None
    return rev


def environment() -> dict:
    versions = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    rev = code_revision()
    import torch

    # the precision a training run used is added by the run itself (lorafair.precision)
    device = f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"
    env = {"python": platform.python_version(), "packages": versions, "git_revision": rev, "device": device,
           "cpu": cpu_info(), "threads": torch.get_num_threads()}
    if assets.RESOLVED:  # the Hub repositories (and the commits) this process loaded
        env["hub_revisions"] = dict(sorted(assets.RESOLVED.items()))
    return env


@dataclass
class RunRecord:
    path: Path
    config: dict
    metrics: dict
    meta: dict

    @property
    def run_id(self) -> str:
        return self.path.name

    def predictions(self) -> pd.DataFrame:
        try:
            return pd.read_parquet(self.path / "predictions.parquet")
        except Exception as e:  # any parquet error: a damaged file
            raise damaged(self.path, f"predictions.parquet does not parse: {type(e).__name__}") from None


#: an experiment's folder name: letters, digits, ``_``, ``-`` and ``.``, not starting with a dot
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def safe_name(kind: str, name) -> str:
    """``name`` if it is a plain folder name (no separator, no ``..``, not absolute), else an error."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise LorafairError(f"{kind} {name!r} is not a plain folder name (letters, digits, _ - .); a run is stored "
                            "only inside its run store")
    return name


class RunStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, experiment: str, config: dict) -> Path:
        """``<root>/<experiment>/<run_id>``, refused unless it lies inside the store."""
        p = self.root / safe_name("experiment", experiment) / run_id(config)
        root = self.root.resolve()
        if root not in p.resolve().parents:  # a symlinked experiment folder leading out of the store
            raise LorafairError(f"run folder {p} resolves to {p.resolve()}, outside the run store {root}")
        return p

    def is_done(self, experiment: str, config: dict) -> bool:
        return (self.path(experiment, config) / "DONE").exists()

    def load(self, experiment: str, config: dict) -> RunRecord:
        return load_record(self.path(experiment, config))

    def claim(self, experiment: str, config: dict) -> Claim:
        final = self.path(experiment, config)
        return Claim(final.parent / f".claim-{final.name}")

    def state(self, experiment: str, config: dict) -> str:
        """``done``, ``running`` (a live claim), ``incomplete`` (a directory without DONE, or a claim
        whose owner is gone) or ``pending``."""
        final = self.path(experiment, config)
        if (final / "DONE").exists():
            return "done"
        c = self.claim(experiment, config)
        if c.path.exists():
            return "incomplete" if c.is_stale() else "running"
        return "incomplete" if final.exists() else "pending"

    def get_or_run(
        self,
        experiment: str,
        config: dict,
        compute: Callable[[], tuple[pd.DataFrame, dict] | tuple[pd.DataFrame, dict, dict]],
        force: bool = False,
        wait: bool = True,
    ) -> RunRecord | None:
        """Return the completed record for ``config``; compute and store it if there is none.

        ``compute()`` returns ``(predictions, metrics)`` or ``(predictions, metrics, extra_meta)``.
        If another live process holds the run's claim, wait for its record (``wait=False``: return
        None at once); if that process dies, take the claim over and compute.
        """
        final = self.path(experiment, config)
        if (final / "DONE").exists() and not force:
            return load_record(final)
        claim_stale_s()  # a bad LORAFAIR_CLAIM_STALE_S is named before anything computes
        if not is_main_process():
            # under `accelerate launch` every rank trains (the collectives need them all); rank 0 writes
            compute()
            _barrier()
            return load_record(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        claim = self.claim(experiment, config)
        told = False
        while not claim.acquire():
            if (final / "DONE").exists() and not force:
                return load_record(final)
            if not wait:
                return None
            if not told:
                print(f"[lorafair] waiting for run {experiment}/{final.name}, computed by another process: "
                      f"{claim.describe()}", file=sys.stderr, flush=True)
                told = True
            time.sleep(CLAIM_POLL_S)
            if (final / "DONE").exists():
                return load_record(final)
        try:
            if (final / "DONE").exists() and not force:  # finished by another process meanwhile
                return load_record(final)
            clean_stale_temporaries(final.parent)
            tmp = final.parent / f".tmp-{final.name}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            claim.keep_fresh.append(tmp)
            try:
                start = time.time()
                try:
                    out = compute()
                except LorafairError as e:  # e.g. a non-finite loss: named with its run, nothing stored
                    raise LorafairError(f"run {experiment}/{final.name} stopped, nothing was stored: {e}") from None
                predictions, metrics = out[0], out[1]
                extra = dict(out[2]) if len(out) > 2 else {}
                env = {**environment(), **extra.pop("environment", {})}  # e.g. the precision the run used
                meta = {"experiment": experiment, "run_id": final.name, "config": config,
                        **scrub_paths({"environment": env, "wall_seconds": round(time.time() - start, 2),
                                       "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra})}
                try:
                    predictions.to_parquet(tmp / "predictions.parquet", index=False)
                    _write_json(tmp / "metrics.json", metrics)
                    _write_json(tmp / "config.json", meta)
                    write_done(tmp, meta["finished_utc"])
                    _publish(tmp, final, replace_done=force)
                except OSError as e:  # a full disk, a store that became read-only: nothing half-written stays
                    raise LorafairError(f"could not write the record of run {experiment}/{final.name} to "
                                        f"{final.parent}: {e.strerror or e}; nothing was stored") from None
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        finally:
            claim.release()
        _barrier()
        return load_record(final)

    def records(self, experiment: str) -> list[RunRecord]:
        """Every completed record of an experiment (incomplete directories are skipped)."""
        base = self.root / experiment
        if not base.exists():
            return []
        return [load_record(p) for p in sorted(base.iterdir())
                if p.is_dir() and not p.name.startswith(".") and (p / "DONE").exists()]


def is_main_process() -> bool:
    """Rank 0 of a distributed launch, or a plain process. Before the process group exists (the run
    store is consulted before training creates the Accelerator) the launcher's RANK variable decides,
    so that under ``torchrun`` / ``accelerate launch`` only rank 0 ever writes a record."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    rank = os.environ.get("RANK", "0")
    if not re.fullmatch(r"[0-9]+", rank.strip()):
        raise LorafairError(f"RANK must be a process rank (0, 1, ...; torchrun and accelerate launch set it), got {rank!r}")
    world = os.environ.get("WORLD_SIZE", "1")
    if int(rank) > 0 and not (re.fullmatch(r"[0-9]+", world.strip()) and int(rank) < int(world)):
        raise LorafairError(f"RANK is {rank} but WORLD_SIZE is {world!r}: outside a distributed launch (torchrun, "
                            "accelerate launch) unset RANK")
    return int(rank) == 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _publish(tmp: Path, final: Path, replace_done: bool) -> None:
    """Move a finished run into place. An incomplete leftover is replaced; a completed record is
    kept unless ``replace_done``, and then it is moved aside first and removed only after the new
    record is in place (a reader never finds neither)."""
    if final.exists() and (final / "DONE").exists() and not replace_done:
        return  # another process's completed record stays; ours is discarded
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


RECORD_FILES = ("config.json", "metrics.json", "predictions.parquet")


def write_done(directory: Path, finished_utc: str) -> None:
    """DONE: the finishing time and the manifest of the record's files ({file: [size, sha256]})."""
    (directory / "DONE").write_text(finished_utc + "\n" + json.dumps(manifest(directory), sort_keys=True) + "\n")


def _unpath(text: str) -> str:
    """An absolute path as a path that names no machine: from the package folder
    (``site-packages/...``) on, relative to the repository, or from the data cache (``data/cache/...``)
    on, else its last part."""
    p = Path(text)
    parts = p.parts
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor):])
    try:
        return str(p.relative_to(assets.REPO_ROOT))
    except ValueError:
        pass
    for i in range(len(parts) - 1):
        if parts[i] == "data" and parts[i + 1] == "cache":
            return "/".join(parts[i:])
    return p.name


def scrub_paths(obj):
    """``obj`` with every string that is an absolute path of this machine (``/...``) written without
    the machine's folders (``_unpath``): committed records must not name the builder's paths. Applied
    to everything a record states except its configuration, which is hashed into its id as given."""
    if isinstance(obj, dict):
        return {k: scrub_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_paths(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("/") and len(obj) > 1 and "\n" not in obj and " " not in obj:
        return _unpath(obj)
    return obj


def manifest(directory: Path) -> dict:
    """{file: [size, sha256]} of a record's files, written into DONE (its second line)."""
    return {n: [(directory / n).stat().st_size, assets.file_sha256(directory / n)] for n in RECORD_FILES}


#: sha256 of record files already checked in this process: {path: ((inode, mtime_ns, size), sha256)}
_CHECKED: dict = {}


def _sha256_cached(f: Path) -> str:
    st = f.stat()
    key = str(f)
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    hit = _CHECKED.get(key)
    if hit and hit[0] == stamp:
        return hit[1]
    h = assets.file_sha256(f)
    _CHECKED[key] = (stamp, h)
    return h


NO_MANIFEST = "its DONE file has no manifest (sizes and sha256 of its files; lorafair runs verify --adopt adds one)"


def _manifest_of(lines: list[str]) -> dict | str:
    """The DONE file's manifest, or what is wrong with it."""
    if len(lines) < 2:
        return NO_MANIFEST
    try:
        want = json.loads(lines[1])
    except (ValueError, RecursionError):
        return "its DONE manifest does not parse"
    if not isinstance(want, dict) or set(want) != set(RECORD_FILES) or not all(
            isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and isinstance(v[1], str)
            for v in want.values()):
        return "its DONE manifest is malformed (want {file: [size, sha256]} for " + ", ".join(RECORD_FILES) + ")"
    return want


def record_problem(path: Path, full: bool = False) -> str | None:
    """What is wrong with a completed record, or None: no manifest in DONE or a malformed one, a file
    missing, a size or sha256 other than the manifest's, a configuration that does not hash to the
    folder's name (``full``: also a file that does not parse). Never raises."""
    path = Path(path)
    try:
        lines = (path / "DONE").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return "no readable DONE file (incomplete)"
    want = _manifest_of(lines)
    if isinstance(want, str):
        return want
    for n in RECORD_FILES:
        f = path / n
        try:
            if not f.is_file():
                return f"{n} is missing"
            size = f.stat().st_size
            if size != want[n][0]:
                return f"{n} has {size} bytes, {want[n][0]} were written"
            if (assets.file_sha256(f) if full else _sha256_cached(f)) != want[n][1]:
                return f"{n} has another sha256 than was written (it was changed after the run)"
        except OSError as e:
            return f"{n} cannot be read ({e.strerror or e})"
    try:
        meta = json.loads((path / "config.json").read_text())
        rid = run_id(meta["config"])
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, RecursionError, OSError):
        return "config.json does not parse or holds no configuration"
    if rid != path.name:
        return f"its configuration hashes to {rid}, not to its folder's name (a record moved or edited)"
    if not full:
        return None
    try:
        json.loads((path / "metrics.json").read_text())
    except (ValueError, UnicodeDecodeError, RecursionError, OSError):
        return "metrics.json is not valid JSON"
    try:
        import pyarrow.parquet as pq

        pq.ParquetFile(path / "predictions.parquet").metadata
    except Exception:  # any parquet error: the file is damaged
        return "predictions.parquet does not parse"
    return None


def damaged(path: Path, problem: str) -> LorafairError:
    if problem == NO_MANIFEST:  # a record written before manifests existed: adopt it, do not delete it
        return LorafairError(f"run record {path} was written before records carried checksums; `lorafair runs verify "
                             f"--adopt --results-dir {path.parent.parent}` checks its id and adds them")
    return LorafairError(f"run record {path} is damaged ({problem}); `lorafair runs verify --repair "
                         f"--results-dir {path.parent.parent}` removes it so that it is recomputed")


def load_record(path: Path) -> RunRecord:
    path = Path(path)
    if not (path / "DONE").exists():
        raise FileNotFoundError(f"run {path} is incomplete (no DONE file); re-run it")
    problem = record_problem(path)  # the manifest's sizes and sha256 (cached) and the id
    if problem:
        raise damaged(path, problem)
    try:
        meta = json.loads((path / "config.json").read_text())
        metrics = json.loads((path / "metrics.json").read_text())
        config = meta["config"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, RecursionError) as e:
        raise damaged(path, f"its JSON does not parse: {type(e).__name__}") from None
    return RunRecord(path=path, config=config, metrics=metrics, meta=meta)


def adopt_store(root: str | os.PathLike) -> list[Path]:
    """Write the manifest of every record of ``root`` that has none (records written before
    manifests existed) whose files parse and whose configuration hashes to its folder's name (the
    full ``record_problem`` check once the manifest is written; a record that fails it keeps its old
    DONE file); returns the adopted records."""
    out = []
    for done in sorted(Path(root).glob("*/*/DONE")):
        path = done.parent
        if path.name.startswith(".") or record_problem(path) != NO_MANIFEST:
            continue
        before = done.read_text()
        write_done(path, (before.splitlines() or ["adopted"])[0])
        if record_problem(path, full=True):  # it does not parse or match its id: verify reports it
            done.write_text(before)
            continue
        out.append(path)
    return out


def verify_store(root: str | os.PathLike, repair: bool = False) -> list[tuple[Path, str]]:
    """Every damaged record under ``root`` (full check: manifest, sizes, sha256, the id, parsing) as
    (path, problem); never stops at one. ``repair`` removes them so that the next build recomputes
    them, and nothing outside the store: a record folder that is a link to a folder of the same name
    in the store has that folder removed (moved aside, then deleted) and then the link; a link to
    anything else (another record, a folder outside the store) is removed and its target kept; a
    removal that fails (a read-only store) is reported in the problem."""
    out = []
    inside = Path(root).resolve()
    for done in sorted(Path(root).glob("*/*/DONE")):
        path = done.parent
        if path.name.startswith("."):
            continue
        problem = record_problem(path, full=True)
        if not problem:
            continue
        if repair:
            target = path.resolve()
            if path.is_symlink() and (target.name != path.name or inside not in target.parents):
                # a link to another folder: the link goes, the folder it names (a healthy record of
                # another id, a folder outside the store) is left as it is
                try:
                    path.unlink()
                    problem += f"; the link was removed, its target {target} left as it is"
                except OSError as e:
                    problem += f"; not removed: {e.strerror or e}"
            elif inside not in target.parents or not re.fullmatch(r"[0-9a-f]{12}", target.name):
                # an experiment folder linked out of the store, or a folder not named like a record
                problem += f"; not removed: it resolves to {target}, outside the store or not a record's folder"
            else:
                try:
                    grave = target.with_name(f".damaged-{target.name}-{uuid.uuid4().hex[:8]}")
                    os.rename(target, grave)
                    if path.is_symlink():
                        path.unlink()
                    shutil.rmtree(grave, ignore_errors=True)
                except OSError as e:
                    problem += f"; not removed: {e.strerror or e}"
        out.append((path, problem))
    return out


def _write_json(path: Path, obj) -> None:
    path.write_text(strict_json(obj, indent=1, sort_keys=True) + "\n")


def finite(obj):
    """``obj`` with every NaN or infinite float (numpy's too) replaced by None, so that it can be
    written as standard JSON: a missing value reads as ``null``, never as ``NaN``."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def strict_json(obj, **kw) -> str:
    """Standard JSON (RFC 8259: no NaN, no Infinity); non-finite numbers are written as null."""
    return json.dumps(finite(obj), allow_nan=False, default=_json_default, **kw)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _one_thread(counter=None, devices: tuple[str, ...] = ()) -> None:
    """A worker's start: one torch thread, and on a multi-GPU machine its own GPU (the workers take
    the visible devices in turn, pinned by ``CUDA_VISIBLE_DEVICES`` before torch starts CUDA)."""
    import signal

    die_with_parent()
    # Ctrl-C reaches the parent, which stops the workers; SIGTERM (from it, or from the kernel when
    # the parent dies) unwinds a run through its clean-ups: no temporary directory or claim is left
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_term)
    if devices and counter is not None:
        with counter.get_lock():
            i = counter.value
            counter.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[i % len(devices)]
    import torch

    torch.set_num_threads(1)


_TERMINATING: list = []


def _exit_on_term(signum, frame):
    _TERMINATING.append(signum)
    raise SystemExit(128 + signum)


def _guarded(fn: Callable, *args):
    """A worker's task, unless the worker has been told to stop (a task the pool had already queued
    for it must not start after SIGTERM)."""
    if _TERMINATING:
        os._exit(128 + _TERMINATING[0])
    try:
        return fn(*args)
    except SystemExit:
        if _TERMINATING:  # told to stop: the run's clean-ups have run while unwinding; end the worker now
            os._exit(128 + _TERMINATING[0])  # instead of handing the exit back to a pool whose parent may be gone
        raise


def die_with_parent(sig: int | None = None) -> None:
    """Ask Linux to send this process ``sig`` (default SIGTERM, which a worker's handler turns into
    its clean-ups) when its parent dies (``PR_SET_PDEATHSIG``), so that worker processes and notebook
    kernels never outlive a killed sweep (a SIGKILL included); elsewhere a no-op."""
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM if sig is None else sig))  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass


def worker_devices() -> tuple[str, ...]:
    """The GPU ids the workers of ``map_in_workers`` are spread over (none on a CPU)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return tuple(d.strip() for d in env.split(",") if d.strip())
    import torch

    return tuple(str(i) for i in range(torch.cuda.device_count())) if torch.cuda.is_available() else ()


def map_in_workers(fn: Callable, arg_tuples: list[tuple], workers: int, on_done: Callable[[], None]) -> None:
    """``fn(*args)`` for every tuple in ``workers`` spawned 1-thread processes (each on its own GPU
    where there are several, ``worker_devices``); ``on_done()`` after each. Independent runs store
    themselves as they finish; a worker's error is re-raised here."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = mp.get_context("spawn")
    devices = worker_devices()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_one_thread,
                               initargs=(ctx.Value("i", 0), devices if len(devices) > 1 else ()))
    try:
        for f in as_completed([pool.submit(_guarded, fn, *a) for a in arg_tuples]):
            f.result()
            on_done()
    except BaseException:  # an error or an interrupt: stop now, do not train the queued runs to the end
        stop_workers(pool)
        raise
    pool.shutdown()


def stop_workers(pool, grace_s: float = 3.0) -> None:
    """End a process pool at once: queued runs cancelled, each worker interrupted (it removes its
    temporary directory and claim), and killed if it has not ended within ``grace_s``."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()  # SIGTERM: the worker's handler exits through its clean-ups (_one_thread)
    deadline = time.time() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.time()))
        if p.is_alive():
            p.kill()
            p.join(1)
