"""The training curriculum of Garg et al. 2022 (section 4; SPEC section 3).

Active input dimensions and prompt points grow stepwise: ``start + inc * (step // interval)``,
capped at ``end``. Setting ``start == end`` switches a schedule off.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    start: int
    end: int
    inc: int
    interval: int

    def __post_init__(self) -> None:
        if not 1 <= self.start <= self.end:
            raise ValueError(f"curriculum needs 1 <= start <= end, got {self.start}, {self.end}")
        if self.inc < 0 or self.interval < 1:
            raise ValueError(f"curriculum needs inc >= 0 and interval >= 1, got {self}")

    def at(self, step: int) -> int:
        """The value in force at ``step`` (0-based)."""
        return min(self.end, self.start + self.inc * (step // self.interval))

    def steps_to_end(self) -> int:
        """The first step at which the schedule reaches ``end``."""
        if self.start == self.end:
            return 0
        if self.inc == 0:
            raise ValueError(f"curriculum never reaches end={self.end} with inc=0")
        return -(-(self.end - self.start) // self.inc) * self.interval


@dataclass(frozen=True)
class Curriculum:
    """What a training run's prompts grow through: active input dimensions and points."""

    dims: Schedule
    points: Schedule

    @classmethod
    def fixed(cls, n_dims: int, n_points: int) -> Curriculum:
        """Full size from the first step (a conversion's fine-tuning)."""
        return cls(Schedule(n_dims, n_dims, 0, 1), Schedule(n_points, n_points, 0, 1))
