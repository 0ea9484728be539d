"""Every way the study splits a dataset, in one place (used by every experiment).

- ``standard``: a stratified train / val / test split per seed (``assign_splits``): strata are the
  label and the first sensitive attribute's groups (for boolean group columns, whether the example
  is in any group); pairs (``pair_id``) stay together, and a pair is stratified by the group only
  (its two sentences have different labels).
- ``mia_target``: the membership-inference data design of a seed: ``train`` (25%, the target's
  members), ``val`` (10%, checkpoint selection, not attacked), ``test`` (25%, its non-members) and
  ``pool`` (40%, the shadow models' data).
- ``mia_shadow``: a shadow model of a seed trains on a random half of that seed's pool; every
  other example is evaluated (``test``), so shadows never see an attacked example.
- ``by_unit``: a standard split in which whole units (e.g. all renderings of one person drawing, in
  every skin tone) stay on one side, so test examples show units the model never saw; optional
  ``caps`` keep at most so many examples of a split (seeded choice; the rest are ``unused``), so
  that more units can reach training without more training examples, and the test split grows.
  Optional ``min_test_group``: the test split is then topped up, group by group of the first
  attribute, with the dataset's *reserve* examples (column ``reserve``: extra renderings kept for
  evaluation) of its own test units, until every group has that many test examples (all of its
  reserve where that is fewer). Reserve examples never reach training or validation, in any design.
- ``downsample``: a positive control on top of another design: a group keeps only a small
  fraction of its training examples.
- ``relabel``: a positive control that keeps its base design's split and relabels a fraction of
  one group's training examples (``training_labels``): a planted label bias.
- ``sized``: a standard split into pools (``pools``: train / val / test fractions), then a seeded
  choice of ``sizes`` examples from each pool (the rest ``unused``), and the test split topped up
  from its pool until every group of every sensitive attribute has at least ``min_test_group`` test
  examples (all of its pool where that is fewer): training keeps the data's own imbalance, while the
  test set is sized for the small groups a claim is about (``sized_split``).
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
DESIGNS = ("standard", "by_unit", "sized", "downsample", "relabel", "mia_target", "mia_shadow")


def assign_splits(table: pd.DataFrame, seed: int, fractions=(0.6, 0.2, 0.2),
                  stratify: list[str] | None = None, unit: str | None = None,
                  unit_stratify: list[str] | None = None) -> pd.Series:
    """Deterministic train/val/test assignment from ``seed``, stratified by ``stratify`` columns.

    Within each stratum the examples (sorted by id) are permuted with ``numpy.default_rng(seed)`` and
    cut at the cumulative fractions, so every stratum with at least 3 examples appears in every
    split. The result depends only on the ids, the strata and the seed. With ``unit`` (e.g.
    ``pair_id``) whole units are assigned, so the members of a unit never straddle splits; the
    strata are then taken from each unit's first row: ``unit_stratify`` where given, else the
    ``stratify`` columns without the label (the two sentences of a pair have different labels)."""
    if abs(sum(fractions) - 1) > 1e-9 or len(fractions) != 3 or min(fractions) <= 0:
        raise LorafairError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    if unit is not None:
        units = (table.sort_values("example_id").drop_duplicates(unit)
                 .assign(example_id=lambda u: u[unit].astype(str)).set_index(unit, drop=False))
        strata = unit_stratify if unit_stratify is not None else [c for c in (stratify or []) if c != "label"]
        unit_split = assign_splits(units, seed, fractions, strata)
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


def unit_strata(table: pd.DataFrame, unit: str, strata: list[str]) -> list[str]:
    """The ``strata`` that are constant within every unit: a unit split can only stratify by those.
    Where a group varies within a unit (the vision task's person drawing appears in every skin tone),
    the split balances that group by chance only; the label must be constant (checked)."""
    mixed = [c for c in strata if (table.groupby(unit)[c].nunique() > 1).any()]
    if "label" in mixed:
        raise LorafairError(f"the label varies within a {unit} unit: a unit split needs one label per unit")
    return [c for c in strata if c not in mixed]


def _unit_table(table: pd.DataFrame, unit: str, strata: list[str]) -> pd.DataFrame:
    """One row per unit (its id as ``example_id``), with the unit's strata (checked constant)."""
    mixed = [c for c in strata if (table.groupby(unit)[c].nunique() > 1).any()]
    if mixed:
        raise LorafairError(f"{', '.join(mixed)} vary within a {unit} unit: a unit split cannot stratify by them")
    return (table.sort_values("example_id").drop_duplicates(unit)
            .assign(example_id=lambda u: u[unit].astype(str)).set_index(unit, drop=False))


def _cut(table: pd.DataFrame, seed: int, fractions, names, strata: list[str], unit: str | None) -> pd.Series:
    """``stratified_cut`` of examples, or of whole units mapped back to their examples."""
    if unit is None:
        return stratified_cut(table, seed, fractions, names, strata)
    strata = unit_strata(table, unit, strata)
    units = _unit_table(table, unit, strata)
    return table[unit].map(stratified_cut(units, seed, fractions, names, strata)).astype(object)


def mia_target_split(ds, seed: int, unit: str | None = None) -> pd.Series:
    """The membership-inference design of a seed; with ``unit``, whole units (e.g. person drawings) are
    members, non-members or pool, so a non-member never shares a unit with a member."""
    return _cut(ds.table, seed, MIA_FRACTIONS, MIA_SPLITS, _mia_strata(ds), unit)


def mia_shadow_split(ds, seed: int, shadow_seed: int, unit: str | None = None) -> pd.Series:
    """A shadow trains on a random half of the pool; everything else is evaluated ("test")."""
    base = mia_target_split(ds, seed, unit)
    pool = base[base == "pool"]
    half = _cut(ds.table.loc[pool.index], shadow_seed, (0.5, 0.5), ("train", "test"), _mia_strata(ds), unit)
    out = pd.Series("test", index=ds.table.index, dtype=object)
    out.loc[half.index] = half
    return out


def unit_split(ds, seed: int, fractions, unit: str) -> pd.Series:
    """Whole units (e.g. every rendering of one person drawing) on one side, stratified by label and
    the first attribute's group where that group is constant within a unit (``unit_strata``; the
    label must be). Where some (label, group) stratum has fewer than 3 units, the units are stratified
    by label only, so that every label still reaches train, validation and test."""
    t = ds.table
    if unit not in t:
        raise LorafairError(f"split unit {unit!r} is not a column of {ds.name}; columns: {', '.join(t.columns)}")
    strata = unit_strata(t, unit, ["label"] + ([f"group_{ds.attributes[0]}"] if ds.attributes else []))
    units = _unit_table(t, unit, strata)
    if units.groupby(strata).size().min() < 3:
        strata = ["label"]
    return assign_splits(t, seed, fractions, strata, unit=unit, unit_stratify=strata)


def topped_unit_split(ds, seed: int, fractions, unit: str, caps: dict | None = None,
                      min_test_group: int | None = None) -> pd.Series:
    """The ``by_unit`` design (module docstring): ``unit_split`` of the dataset's own examples, capped,
    then the test split topped up from the reserve renderings of its test units. Reserve examples are
    set aside before the split is capped, so the train and validation examples are the same as
    without a reserve."""
    base = unit_split(ds, seed, fractions, unit)
    reserve = ds.table["reserve"].to_numpy(dtype=bool) if "reserve" in ds.table else np.zeros(len(base), bool)
    out = cap_units(base.where(~reserve, "unused"), caps, seed)
    if min_test_group is None:
        return out
    if not isinstance(min_test_group, int) or isinstance(min_test_group, bool) or min_test_group < 1:
        raise LorafairError(f"min_test_group must be a positive whole number of test examples, got {min_test_group!r}")
    if not reserve.any():
        raise LorafairError(f"min_test_group needs reserve test examples, and {ds.name} has none (test_reserve=0)")
    rng = np.random.default_rng([seed, 1])
    col = ds.table[f"group_{ds.attributes[0]}"].astype(str)
    for g in sorted(col.unique()):
        short = min_test_group - int(((out == "test") & (col == g)).sum())
        spare = np.flatnonzero(reserve & (base == "test").to_numpy() & (col == g).to_numpy())
        if short > 0 and len(spare):
            out.iloc[spare[rng.permutation(len(spare))[:short]]] = "test"
    return out


def sized_split(ds, seed: int, sizes: dict, min_test_group: int, pools) -> pd.Series:
    """The ``sized`` design (module docstring): pools from ``standard_split`` with fractions ``pools``,
    ``sizes[s]`` examples chosen from each pool ``s`` (seeded; a split without a size keeps its
    pool), then the test split topped up group by group to ``min_test_group`` examples of every
    group of every attribute."""
    check_caps(sizes)
    base = standard_split(ds, seed, tuple(pools))
    out = cap_units(base, sizes, seed)
    rng = np.random.default_rng([seed, 1])
    for a in ds.attributes:
        col = ds.table[f"group_{a}"].astype(str)
        for g in sorted(col.unique()):
            short = min_test_group - int(((out == "test") & (col == g)).sum())
            spare = np.flatnonzero(((base == "test") & (out == "unused") & (col == g)).to_numpy())
            if short > 0 and len(spare):
                out.iloc[spare[rng.permutation(len(spare))[:short]]] = "test"
    return out


def downsample(ds, split: pd.Series, attribute: str, group: str, keep: float, seed: int) -> pd.Series:
    """A positive control: only a fraction ``keep`` of the group's training examples stay in
    training (seeded choice, at least one); the others become ``unused`` (neither trained on nor
    evaluated). Validation and test are untouched, so the control and the run it controls are
    compared on the same test examples."""
    col = f"group_{attribute}"
    if col not in ds.table:
        raise LorafairError(f"{ds.name} has no attribute {attribute!r}; attributes: {', '.join(ds.attributes)}")
    values = sorted(ds.table[col].astype(str).unique())
    choose(f"{attribute} group", str(group), values)
    if not 0 < keep < 1:
        raise LorafairError(f"downsample keep must be in (0, 1), got {keep}")
    out = split.copy()
    idx = np.flatnonzero(((split == "train") & (ds.table[col].astype(str) == str(group))).to_numpy())
    idx = idx[np.argsort(ds.table["example_id"].to_numpy()[idx], kind="stable")]
    n_keep = max(1, int(round(keep * len(idx))))
    drop = idx[np.random.default_rng(seed).permutation(len(idx))[n_keep:]]
    out.iloc[drop] = "unused"
    return out


def relabel(ds, split: pd.Series, attribute: str, group: str, fraction: float, to_label: int, seed: int) -> np.ndarray:
    """A positive control of known direction: the labels a model trains on, with a seeded ``fraction``
    of the group's *training* examples whose label is not ``to_label`` relabelled ``to_label`` (a
    planted, group-specific label bias). Validation and test keep their true labels, so the control
    is read on the same test examples as the run it controls, and must lower the group's accuracy."""
    col = f"group_{attribute}"
    if col not in ds.table:
        raise LorafairError(f"{ds.name} has no attribute {attribute!r}; attributes: {', '.join(ds.attributes)}")
    choose(f"{attribute} group", str(group), sorted(ds.table[col].astype(str).unique()))
    choose("to_label", int(to_label), list(range(ds.num_labels)))
    if not 0 < fraction <= 1:
        raise LorafairError(f"relabel fraction must be in (0, 1], got {fraction}")
    labels = ds.table["label"].to_numpy(dtype=np.int64).copy()
    idx = np.flatnonzero(((split == "train") & (ds.table[col].astype(str) == str(group))
                          & (ds.table["label"] != int(to_label))).to_numpy())
    idx = idx[np.argsort(ds.table["example_id"].to_numpy()[idx], kind="stable")]
    pick = idx[np.random.default_rng(seed).permutation(len(idx))[:int(round(fraction * len(idx)))]]
    labels[pick] = int(to_label)
    return labels


def training_labels(ds, split: pd.Series, seed: int, design: dict | None) -> np.ndarray | None:
    """The labels training sees when ``design`` plants a label bias (``relabel``), else None (the
    dataset's own labels)."""
    if not design or design.get("kind") != "relabel":
        return None
    return relabel(ds, split, design["attribute"], design["group"], design["fraction"], design["to_label"], seed)


def split_for(ds, seed: int, fractions=(0.6, 0.2, 0.2), design: dict | None = None) -> pd.Series:
    """The split a configuration asks for. ``design`` None is the standard split of ``seed``;
    ``{"kind": "by_unit", "unit": col}`` keeps units together; ``{"kind": "downsample", "attribute":
    a, "group": g, "keep": f, "base": design-or-None}`` thins a group's training examples and
    ``{"kind": "relabel", "attribute": a, "group": g, "fraction": f, "to_label": k, "base": ...}``
    keeps the base split and plants a label bias (``training_labels``): positive controls; ``{"kind": "mia_target", "seed": s}`` or ``{"kind": "mia_shadow", "seed": s,
    "shadow_seed": t}`` is a membership-inference split."""
    if "reserve" in ds.table and ds.table["reserve"].any() and (root_design(design) or {}).get("kind") != "by_unit":
        raise LorafairError(f"{ds.name} carries reserve test renderings (test_reserve), which only the by_unit "
                            f"design can use; this design is {(root_design(design) or {}).get('kind', 'standard')!r}")
    if not design or design.get("kind") == "standard":
        return standard_split(ds, seed, fractions)
    choose("split design", design.get("kind"), DESIGNS)
    kind = design["kind"]
    if kind == "sized":
        return sized_split(ds, seed, dict(design["sizes"]), int(design["min_test_group"]), design["pools"])
    if kind == "by_unit":
        return topped_unit_split(ds, seed, fractions, design["unit"], check_caps(design.get("caps")),
                                 design.get("min_test_group"))
    if kind == "downsample":
        base = split_for(ds, seed, fractions, design.get("base"))
        return downsample(ds, base, design["attribute"], design["group"], design["keep"], seed)
    if kind == "relabel":  # the split of its base design; the labels change (training_labels)
        return split_for(ds, seed, fractions, design.get("base"))
    if kind == "mia_target":
        return mia_target_split(ds, design["seed"], design.get("unit"))
    return mia_shadow_split(ds, design["seed"], design["shadow_seed"], design.get("unit"))


def root_design(design: dict | None) -> dict | None:
    """The design a control (``downsample``, ``relabel``) is planted on; the design itself otherwise."""
    while design and design.get("kind") in ("downsample", "relabel"):
        design = design.get("base")
    return design


def stores_used_only(design: dict | None) -> bool:
    """Whether a run of this design encodes and stores only the examples its split uses (``sized``:
    the pools it leaves ``unused`` are most of a large dataset; ``by_unit`` with a test top-up: the
    reserve it leaves unused)."""
    root = root_design(design) or {}
    return root.get("kind") == "sized" or (root.get("kind") == "by_unit" and bool(root.get("min_test_group")))


def unit_column(ds, design: dict | None) -> str | None:
    """The column whose values a split keeps together (stored with every prediction), or None when
    single examples are split."""
    design = root_design(design)
    if design and design.get("unit"):
        return design["unit"]
    return "pair_id" if "pair_id" in ds.table and not (design and design.get("kind", "").startswith("mia")) else None


def check_caps(caps: dict | None) -> dict | None:
    """Caps on the number of examples per split (``{"train": 1200}``): positive integers for train,
    val or test; the error names the bad one."""
    for name, cap in (caps or {}).items():
        choose("capped split", name, ("train", "val", "test"))
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise LorafairError(f"the cap on split {name!r} must be a positive integer, got {cap!r}")
    return caps


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
