"""The two data axes as data: which intermediate data a trial sees (source, quality tier, size), and its seed.

A *data cell* is (source, quality, size). Source `none` with size 0 is the baseline every curve starts from
(no intermediate phase). Sizes nest: size n is the first n examples of one seeded permutation of the tier's pool
(`trainables.subsets.select_examples`), so the points of one curve differ only by the data added.
"""
from __future__ import annotations

from dataclasses import dataclass

SOURCES = ("none", "english", "multilingual")


@dataclass(frozen=True, order=True)
class DataCell:
    source: str          # none | english | multilingual
    task: str            # intermediate task or mixture name in the registry; "" for source none
    quality: str         # quality tier of that task; "none" for source none
    size: int            # number of intermediate examples; 0 for source none

    @property
    def cell_id(self) -> str:
        """A stable, readable id: used as the Optuna categorical value and in trial names."""
        if self.source == "none":
            return "none"
        return f"{self.source}:{self.task}:{self.quality}:{self.size}"

    @classmethod
    def from_id(cls, cell_id: str) -> "DataCell":
        if cell_id == "none":
            return BASELINE
        source, task, quality, size = cell_id.split(":")
        return cls(source, task, quality, int(size))


BASELINE = DataCell("none", "", "none", 0)


def data_cells(english_tasks, english_qualities, english_sizes,
               multilingual_task: str, multilingual_qualities, multilingual_sizes) -> list[DataCell]:
    """Every cell of a sweep: the baseline, the English ladder per task and tier, the multilingual cells."""
    cells = [BASELINE]
    cells += [DataCell("english", task, q, n)
              for task in english_tasks for q in english_qualities for n in english_sizes if n > 0]
    cells += [DataCell("multilingual", multilingual_task, q, n)
              for q in multilingual_qualities for n in multilingual_sizes if n > 0]
    return cells
