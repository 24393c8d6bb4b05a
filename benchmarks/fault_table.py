"""What the fault campaigns (``fault_campaign.py``, ``fault_server.py``) count and the table they print: one row
per campaign, every input sorted into one outcome column."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

__all__ = ["Row", "total", "print_table", "COUNTS"]

COUNTS = ("tried", "clean", "tracebacks", "hangs", "wrong", "lost")


@dataclass
class Row:
    """One campaign's outcomes; ``examples`` keeps the first ``keep`` things worth reading about."""

    campaign: str
    tried: int = 0
    clean: int = 0
    tracebacks: int = 0
    hangs: int = 0
    wrong: int = 0
    lost: int = 0
    note: str = ""
    examples: list[str] = field(default_factory=list)
    keep: int = 5

    def example(self, text: str) -> None:
        if len(self.examples) < self.keep:
            self.examples.append(text)

    def bad(self, column: str, example: str) -> None:
        """Count one outcome of ``column`` (tracebacks, hangs, wrong, lost) and keep it as an example."""
        setattr(self, column, getattr(self, column) + 1)
        self.example(f"{column}: {example[:300]}")

    @property
    def failures(self) -> int:
        """Inputs in the columns that must stay 0."""
        return self.tracebacks + self.hangs + self.wrong + self.lost


def total(rows: Iterable[Row], campaign: str = "total") -> Row:
    """A row adding up the counts of ``rows``."""
    out = Row(campaign)
    for r in rows:
        for k in COUNTS:
            setattr(out, k, getattr(out, k) + getattr(r, k))
    return out


def print_table(rows: Iterable[Row]) -> None:
    """The Markdown table of ``rows`` (what benchmarks/RESULTS.md quotes)."""
    print("| campaign | inputs tried | clean errors | tracebacks | hangs | silent wrong results | objects lost |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r.campaign} | {r.tried} | {r.clean} | {r.tracebacks} | {r.hangs} | {r.wrong} | {r.lost} |")
