"""A user's own dataset from a file (dataset ``file``): CSV, parquet or JSON lines with a text column
(or an image-path column, paths relative to the file), a label column and one or more group
columns. It becomes the same table contract as the built-in datasets (``lorafair.data.Dataset``):
``example_id`` from a stable hash of the row's content, ``input``, ``label`` (0..k-1, the labels
sorted), ``group_<column>`` per group column. Every check runs when the file is read, before anything
trains, and fails with one line naming the file, the column and the fix. The file's sha256 is part
of the run configuration, so a changed file is a different run (and an old configuration refuses a
changed file)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from .assets import file_sha256
from .errors import LorafairError
from .table import Dataset

FORMATS = {".csv": "CSV", ".parquet": "parquet", ".jsonl": "JSON lines", ".json": "JSON lines"}


def read_table(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise LorafairError(f"--data {path}: no such file")
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise LorafairError(f"--data {path}: a {suffix or 'suffix-less'} file; give a .csv, .parquet or .jsonl file")
    try:
        if suffix == ".csv":
            return pd.read_csv(p, keep_default_na=False, na_values=[""])
        if suffix == ".parquet":
            return pd.read_parquet(p)
        return pd.read_json(p, lines=True)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise LorafairError(f"--data {path}: cannot be read as {FORMATS[suffix]} ({str(e).splitlines()[0]})") from None


def _want_column(path, t: pd.DataFrame, col: str, flag: str) -> None:
    if col not in t.columns:
        raise LorafairError(f"--data {path}: no column {col!r} (its columns: {', '.join(map(str, t.columns))}); "
                            f"name the right one with {flag}")


def row_ids(t: pd.DataFrame, columns: list[str]) -> list[str]:
    """A stable id per row: the sha1 of the row's values in ``columns`` (as JSON), so the same row
    gets the same id in any order of the file."""
    return ["u" + hashlib.sha1(json.dumps([str(v) for v in row], ensure_ascii=False).encode()).hexdigest()[:15]
            for row in t[columns].itertuples(index=False, name=None)]


def load_file(path: str, sha256: str | None = None, text_col: str = "text", label_col: str = "label",
              group_cols: list | None = None, image_col: str | None = None, **_):
    """The user's file as a ``Dataset`` (module docstring). ``sha256``: the file's hash when the run
    was configured; a file whose hash differs is refused. Refused, each in one line: a missing file or
    column, an unreadable file, fewer than two labels, labels that are neither integers nor strings,
    empty texts, image paths that do not exist or leave the file's folder, and rows that repeat
    another row's input (they could fall on both sides of a split)."""
    group_cols = list(group_cols or ["group"])
    found = file_sha256(path) if sha256 is not None and Path(path).is_file() else sha256
    if found != sha256:
        raise LorafairError(f"--data {path}: the file changed since this run was configured (sha256 {sha256[:12]}... "
                            f"expected, {found[:12]}... found); a changed file is a new dataset: "
                            "configure the run again with --data")
    t = read_table(path)
    x_col, x_flag = (image_col, "--image-col") if image_col else (text_col, "--text-col")
    _want_column(path, t, x_col, x_flag)
    _want_column(path, t, label_col, "--label-col")
    for g in group_cols:
        _want_column(path, t, g, "--group-col")
    if not len(t):
        raise LorafairError(f"--data {path}: the file has no rows")
    labels = t[label_col]
    if labels.isna().any():
        raise LorafairError(f"--data {path}: column {label_col!r} is empty in {int(labels.isna().sum())} rows "
                            f"(the first is row {int(labels.isna().to_numpy().argmax()) + 1}); give every row a label")
    if pd.api.types.is_float_dtype(labels) and not (labels == labels.round()).all():
        raise LorafairError(f"--data {path}: column {label_col!r} holds numbers that are not whole (e.g. "
                            f"{labels[labels != labels.round()].iloc[0]}); labels are integers or strings")
    if not (pd.api.types.is_integer_dtype(labels) or pd.api.types.is_float_dtype(labels)
            or labels.map(lambda v: isinstance(v, str)).all()):
        raise LorafairError(f"--data {path}: column {label_col!r} mixes kinds of values; labels are integers or strings")
    names = sorted(labels.unique(), key=lambda v: (str(type(v)), v))
    if len(names) < 2:
        raise LorafairError(f"--data {path}: column {label_col!r} has one label ({names[0]!r}); a classifier needs "
                            "at least two")
    x = t[x_col]
    empty = x.isna() | (x.astype(str).str.strip() == "")
    if empty.any():
        raise LorafairError(f"--data {path}: column {x_col!r} is empty in {int(empty.sum())} rows (the first is row "
                            f"{int(empty.to_numpy().argmax()) + 1}); remove them or fill them in")
    kind = "image" if image_col else "text"
    inputs = x.astype(str)
    if image_col:
        root = Path(path).resolve().parent
        resolved = []
        for i, rel in enumerate(inputs):
            p = (root / rel).resolve()
            if root not in p.parents:
                raise LorafairError(f"--data {path}: row {i + 1}, column {image_col!r}: {rel!r} leaves the file's folder; "
                                    "image paths are relative to the file and inside its folder")
            if not p.is_file():
                raise LorafairError(f"--data {path}: row {i + 1}, column {image_col!r}: no image {rel!r} next to the file")
            resolved.append(str(p))
        inputs = pd.Series(resolved, index=x.index)
    repeated = inputs.duplicated()
    if repeated.any():
        raise LorafairError(f"--data {path}: {int(repeated.sum())} rows repeat an earlier row's {x_col!r} (the first is "
                            f"row {int(repeated.to_numpy().argmax()) + 1}); remove the repeats, which could land in both "
                            "training and test")
    code = {v: i for i, v in enumerate(names)}
    table = pd.DataFrame({"example_id": row_ids(t, [x_col, label_col, *group_cols]), "input": inputs.to_numpy(),
                          "label": labels.map(code).astype(int).to_numpy()})
    for g in group_cols:
        table[f"group_{g}"] = t[g].astype(str).to_numpy()
    return Dataset("file", table, [str(v) for v in names], kind, group_cols, {},
                   f"{Path(path).name}: {len(table)} rows, labels {', '.join(map(str, names))}, groups "
                   f"{', '.join(group_cols)}")


def small_groups(ds, test_share: float, min_n: int) -> dict[str, dict[str, int]]:
    """Per group column, the groups whose expected test count (their rows times ``test_share``) is
    below ``min_n``: they are shown with their counts as *too small* to carry a claim."""
    out = {}
    for g in ds.attributes:
        counts = ds.table[f"group_{g}"].value_counts()
        small = {str(k): int(v) for k, v in counts.items() if v * test_share < min_n}
        if small:
            out[g] = small
    return out
