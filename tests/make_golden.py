"""Write the golden smoke records that ``test_reproduce.py`` re-runs at HEAD: one run per experiment,
kind and method of the smoke profile, computed in fp32 (the same arithmetic on every CPU), so that a
change of the code that changes a run's predictions under an unchanged run id fails a test.

    .venv/bin/python tests/make_golden.py      # rewrites tests/golden/ (a run store); commit it with the
                                               # change that deliberately changed the predictions
"""

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from lorafair import chapters, profiles, spec, sweep  # noqa: E402
from lorafair.runs import RunStore  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
#: the speed settings of every golden run: fp32, whatever the CPU
OPTIONS = {"precision": "fp32"}


def sample() -> list:
    """One smoke configuration per (experiment, kind, method, MIA role), first in grid order."""
    out, seen = [], set()
    for chapter in ("vision_classification", "llm_classification", "membership_inference", "generation_fairness",
                    "performance"):
        P = profiles.resolve(chapter, "smoke")
        for c in chapters.runs(chapter, P):
            role = (c.get("split_design") or {}).get("kind") if chapter == "membership_inference" else None
            key = (c["experiment"], spec.kind_of(c), c.get("method"), role, c.get("plant") is not None)
            if chapter == "vision_classification" and (c.get("split_design") or {}).get("kind") != "by_unit":
                continue  # controls have their own tests
            if key not in seen and c["experiment"] == chapter:
                seen.add(key)
                out.append(c)
    return out


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)  # as the tests run (tests/conftest.py): the same order of every sum
    if GOLDEN.exists():
        shutil.rmtree(GOLDEN)
    store = RunStore(GOLDEN)
    for c in sample():
        rec = sweep.run_one(store, c, train_options=OPTIONS, progress=False)
        print(rec.path.relative_to(ROOT), c.get("model") or c.get("workload"), c.get("method"), flush=True)
