"""Every way the study splits a dataset, in one place (used by every experiment).

- ``standard``: a stratified train / val / test split per seed (``assign_splits``): strata are the
  label and the first sensitive attribute's groups (for boolean group columns, whether the example
  is in any group); pairs (``pair_id``) stay together.
- ``mia_target``: the membership-inference data design of a seed: ``train`` (25%, the target's
  members), ``val`` (10%, checkpoint selection, not attacked), ``test`` (25%, its non-members) and
  ``pool`` (40%, the shadow models' data).
- ``mia_shadow``: a shadow model of a seed trains on a random half of that seed's pool; every
  other example is evaluated (``test``), so shadows never see an attacked example.
- ``group_split``: whole units (e.g. the sentences sharing one source in the pronoun task) are
  assigned, with an optional cap on the number of units per split.

A configuration selects its split with ``split_design`` (absent: standard). The two stratified
cutters differ in how they round a stratum's share (``assign_splits`` keeps every stratum of at
least three examples in all three splits; ``stratified_cut`` rounds cumulative fractions, for any
number of parts); both are kept exactly as they are because every committed record's split was drawn
with them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import LorafairError, choose

MIA_SPLITS = ("train", "val", "test", "pool")
MIA_FRACTIONS = (0.25, 0.10, 0.25, 0.40)
DESIGNS = ("standard", "mia_target", "mia_shadow")


def assign_splits(table: pd.DataFrame, seed: int, fractions=(0.6, 0.2, 0.2),
                  stratify: list[str] | None = None, unit: str | None = None) -> pd.Series:
    """Deterministic train/val/test assignment from ``seed``, stratified by ``stratify`` columns.

    Within each stratum the examples (sorted by id) are permuted with ``numpy.default_rng(seed)`` and
    cut at the cumulative fractions, so every stratum with at least 3 examples appears in every
    split. The result depends only on the ids, the strata and the seed. With ``unit`` (e.g.
    ``pair_id``) whole units are assigned, so the members of a unit never straddle splits; the
    strata are then taken from each unit's first row."""
    if abs(sum(fractions) - 1) > 1e-9 or len(fractions) != 3 or min(fractions) <= 0:
        raise LorafairError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    if unit is not None:
        units = (table.sort_values("example_id").drop_duplicates(unit)
                 .assign(example_id=lambda u: u[unit].astype(str)).set_index(unit, drop=False))
        unit_split = assign_splits(units, seed, fractions, [c for c in (stratify or []) if c != "label"])
        return table[unit].map(unit_split).rename("split")
    stratify = stratify or []
    order = table.sort_values("example_id").index
    split = pd.Series(index=table.index, dtype=object)
    keys = table.loc[order, stratify].astype(str).agg("|".join, axis=1) if stratify else \
        pd.Series("all", index=order)
    rng = np.random.default_rng(seed)
    for _, idx in keys.groupby(keys, sort=True).groups.items():
        idx = np.array(idx)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_train = int(round(fractions[0] * n))
        n_val = int(round(fractions[1] * n))
        if n >= 3:
            n_train = min(max(n_train, 1), n - 2)
            n_val = min(max(n_val, 1), n - n_train - 1)
        split.loc[idx[:n_train]] = "train"
        split.loc[idx[n_train:n_train + n_val]] = "val"
        split.loc[idx[n_train + n_val:]] = "test"
    return split


def stratified_cut(table: pd.DataFrame, seed: int, fractions, names, stratify: list[str]) -> pd.Series:
    """Assign each example to one of ``names`` with the given fractions, stratified, from ``seed``."""
    out = pd.Series(index=table.index, dtype=object)
    order = table.sort_values("example_id").index
    keys = table.loc[order, stratify].astype(str).agg("|".join, axis=1)
    rng = np.random.default_rng(seed)
    bounds = np.cumsum(fractions)
    for _, idx in keys.groupby(keys, sort=True).groups.items():
        idx = np.array(idx)[rng.permutation(len(idx))]
        cuts = np.round(bounds * len(idx)).astype(int)
        start = 0
        for name, stop in zip(names, cuts):
            out.loc[idx[start:stop]] = name
            start = stop
    return out


def standard_split(ds, seed: int, fractions=(0.6, 0.2, 0.2)) -> pd.Series:
    """The standard split of a dataset for a seed (see the module docstring)."""
    t = ds.table
    strat = ["label"]
    if ds.attributes:
        col = f"group_{ds.attributes[0]}"
        if t[col].dtype == bool:
            t = t.assign(_any=t[[f"group_{a}" for a in ds.attributes]].any(axis=1))
            col = "_any"
        strat.append(col)
    return assign_splits(t, seed, fractions, strat, unit="pair_id" if "pair_id" in t else None)


def _mia_strata(ds) -> list[str]:
    return ["label"] + ([f"group_{ds.attributes[0]}"] if ds.attributes and
                        ds.table[f"group_{ds.attributes[0]}"].dtype != bool else [])


def mia_target_split(ds, seed: int) -> pd.Series:
    return stratified_cut(ds.table, seed, MIA_FRACTIONS, MIA_SPLITS, _mia_strata(ds))


def mia_shadow_split(ds, seed: int, shadow_seed: int) -> pd.Series:
    """A shadow trains on a random half of the pool; everything else is evaluated ("test")."""
    base = mia_target_split(ds, seed)
    pool = base[base == "pool"]
    half = stratified_cut(ds.table.loc[pool.index], shadow_seed, (0.5, 0.5), ("train", "test"), _mia_strata(ds))
    out = pd.Series("test", index=ds.table.index, dtype=object)
    out.loc[half.index] = half
    return out


def split_for(ds, seed: int, fractions=(0.6, 0.2, 0.2), design: dict | None = None) -> pd.Series:
    """The split a configuration asks for: ``design`` None is the standard split of ``seed``;
    ``{"kind": "mia_target", "seed": s}`` or ``{"kind": "mia_shadow", "seed": s, "shadow_seed": t}``
    a membership-inference split."""
    if not design:
        return standard_split(ds, seed, fractions)
    choose("split design", design.get("kind"), DESIGNS[1:])
    if design["kind"] == "mia_target":
        return mia_target_split(ds, design["seed"])
    return mia_shadow_split(ds, design["seed"], design["shadow_seed"])


def cap_units(split: pd.Series, caps: dict | None, seed: int) -> pd.Series:
    """Keep at most ``caps[split]`` units per split (seeded choice); the others get split 'unused'."""
    if not caps:
        return split
    split = split.copy()
    rng = np.random.default_rng(seed)
    for name, cap in caps.items():
        idx = np.flatnonzero((split == name).to_numpy())
        if cap is not None and len(idx) > cap:
            drop = idx[rng.permutation(len(idx))[cap:]]
            split.iloc[drop] = "unused"
    return split


def group_split(units: pd.DataFrame, seed: int, fractions, stratify: list[str], caps: dict | None = None) -> pd.Series:
    """Train / val / test for whole units (one row per unit, ids in ``example_id``), optionally capped."""
    return cap_units(assign_splits(units, seed, fractions, stratify), caps, seed)
