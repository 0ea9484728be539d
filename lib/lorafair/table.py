"""The table contract every dataset loader returns (``lorafair.data``, ``lorafair.userdata``): one
row per example with ``example_id``, ``input`` (a text, or an image's path), ``label`` (0..k-1) and
one ``group_<attribute>`` column per sensitive attribute."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Dataset:
    name: str
    table: pd.DataFrame
    label_names: list[str]
    kind: str                                   # "image" or "text"
    attributes: list[str]
    skipped: dict = field(default_factory=dict)
    description: str = ""

    @property
    def num_labels(self) -> int:
        return len(self.label_names)
