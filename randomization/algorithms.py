"""Allocation algorithms as pure functions: no Django, no database.

Every random draw is derived from a secret seed by HMAC-SHA256 over a label
and the draw's coordinates (stratum, block, position, …). The sequence is
therefore endless, reproducible from the seed for audit, and unpredictable
without it. The database layer (randomization.services) and the scheme
simulator (randomization.simulation) both call these functions, so what is
simulated is exactly what runs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

AI_ASSISTED = "ai_assisted"
SPECIALIST_ONLY = "specialist_only"
ARMS: tuple[str, str] = (AI_ASSISTED, SPECIALIST_ONLY)


def commitment(seed: bytes) -> str:
    """The public commitment to a seed: recorded at recruitment start, checked
    against the seed revealed after unblinding."""
    return hashlib.sha256(seed).hexdigest()


def uniform(seed: bytes, *coordinates: object) -> float:
    """A uniform draw in [0, 1) fixed by the seed and the coordinates."""
    message = "\x1f".join(str(c) for c in coordinates).encode("utf-8")
    digest = hmac.new(seed, message, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Ratio:
    """Allocation ratio AI-assisted : specialist-only, e.g. 1:1 or 2:1."""

    ai_assisted: int = 1
    specialist_only: int = 1

    def __post_init__(self) -> None:
        if self.ai_assisted < 1 or self.specialist_only < 1:
            raise ValueError("Both parts of the allocation ratio must be positive integers.")

    @property
    def total(self) -> int:
        return self.ai_assisted + self.specialist_only

    def weight(self, arm: str) -> int:
        return self.ai_assisted if arm == AI_ASSISTED else self.specialist_only

    def arm_for(self, draw: float) -> str:
        """The arm a uniform draw selects, in proportion to the ratio."""
        return AI_ASSISTED if draw < self.ai_assisted / self.total else SPECIALIST_ONLY


def validate_block_sizes(sizes: Sequence[int], ratio: Ratio) -> list[int]:
    cleaned = sorted(set(sizes))
    if not cleaned:
        raise ValueError("At least one block size is needed.")
    for size in cleaned:
        if size <= 0 or size % ratio.total:
            raise ValueError(
                f"Block size {size} is not a positive multiple of {ratio.total}, "
                f"the sum of the ratio {ratio.ai_assisted}:{ratio.specialist_only}."
            )
    return cleaned


# --- Stratified permuted blocks ----------------------------------------------------


def block(seed: bytes, stratum: str, index: int, ratio: Ratio, sizes: Sequence[int]) -> list[str]:
    """Block `index` (0-based) of a stratum: a size drawn from `sizes`, holding
    each arm in the ratio, in an order shuffled by Fisher–Yates."""
    size = sizes[int(uniform(seed, "block-size", stratum, index) * len(sizes))]
    per_unit = size // ratio.total
    arms = [AI_ASSISTED] * (per_unit * ratio.ai_assisted) + [SPECIALIST_ONLY] * (per_unit * ratio.specialist_only)
    for i in range(len(arms) - 1, 0, -1):
        j = int(uniform(seed, "block-shuffle", stratum, index, i) * (i + 1))
        arms[i], arms[j] = arms[j], arms[i]
    return arms


def block_sequence(seed: bytes, stratum: str, ratio: Ratio, sizes: Sequence[int]) -> Iterator[str]:
    """The endless allocation sequence of one stratum."""
    index = 0
    while True:
        yield from block(seed, stratum, index, ratio, sizes)
        index += 1


@dataclass
class BlockCursor:
    """Where a stratum stands in its sequence: kept in the database so that
    the next arm costs one block computation, not a replay."""

    next_position: int = 1  # 1-based position of the next allocation
    block_index: int = 0
    block_start: int = 1  # position of the current block's first allocation


def next_block_arm(seed: bytes, stratum: str, ratio: Ratio, sizes: Sequence[int], cursor: BlockCursor) -> str:
    """The arm at `cursor.next_position`; advances the cursor."""
    arms = block(seed, stratum, cursor.block_index, ratio, sizes)
    if cursor.next_position >= cursor.block_start + len(arms):
        cursor.block_start += len(arms)
        cursor.block_index += 1
        arms = block(seed, stratum, cursor.block_index, ratio, sizes)
    arm = arms[cursor.next_position - cursor.block_start]
    cursor.next_position += 1
    return arm


# --- Simple randomization ------------------------------------------------------------


def simple_arm(seed: bytes, stratum: str, position: int, ratio: Ratio) -> str:
    return ratio.arm_for(uniform(seed, "simple", stratum, position))


# --- Pocock–Simon minimization ---------------------------------------------------------

RANGE = "range"
VARIANCE = "variance"


@dataclass
class MarginalCounts:
    """Allocations so far per factor level and arm: counts[factor][level][arm]."""

    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def get(self, factor: str, level: str, arm: str) -> int:
        return self.counts.get(factor, {}).get(level, {}).get(arm, 0)

    def add(self, levels: Mapping[str, str], arm: str) -> None:
        for factor, level in levels.items():
            arms = self.counts.setdefault(factor, {}).setdefault(level, {})
            arms[arm] = arms.get(arm, 0) + 1


@dataclass(frozen=True)
class MinimizationChoice:
    arm: str
    scores: dict[str, float]
    preferred: str | None  # None when the scores tie
    draw: float


def _imbalance(adjusted: list[float], measure: str) -> float:
    if measure == RANGE:
        return max(adjusted) - min(adjusted)
    mean = sum(adjusted) / len(adjusted)
    return sum((x - mean) ** 2 for x in adjusted) / (len(adjusted) - 1)


def minimization_arm(
    *,
    counts: MarginalCounts,
    levels: Mapping[str, str],
    weights: Mapping[str, float],
    ratio: Ratio,
    measure: str,
    probability: float,
    draw: float,
) -> MinimizationChoice:
    """Pocock & Simon (1975): for each candidate arm, the weighted sum over
    the participant's factor levels of the imbalance that would follow
    (counts divided by the ratio's weights, so 2:1 counts as balanced). The
    arm with the smaller total is chosen with `probability`; a tie is broken
    at random in proportion to the ratio."""
    scores = {}
    for candidate in ARMS:
        total = 0.0
        for factor, level in levels.items():
            adjusted = [
                (counts.get(factor, level, arm) + (1 if arm == candidate else 0)) / ratio.weight(arm) for arm in ARMS
            ]
            total += weights.get(factor, 1.0) * _imbalance(adjusted, measure)
        scores[candidate] = total
    if abs(scores[AI_ASSISTED] - scores[SPECIALIST_ONLY]) < 1e-12:
        return MinimizationChoice(ratio.arm_for(draw), scores, None, draw)
    preferred = min(ARMS, key=lambda arm: scores[arm])
    other = SPECIALIST_ONLY if preferred == AI_ASSISTED else AI_ASSISTED
    return MinimizationChoice(preferred if draw < probability else other, scores, preferred, draw)


# --- Strata and masking ----------------------------------------------------------------


def stratum_key(levels: Mapping[str, str], factors: Sequence[str]) -> str:
    """A stable, readable stratum name, e.g. 'site=C01|indication=thyroid'."""
    return "|".join(f"{factor}={levels[factor]}" for factor in factors) or "all"


def masked_labels(seed: bytes) -> dict[str, str]:
    """The arm → 'A'/'B' mapping a blinded statistician sees, fixed by the
    seed so that it is stable yet unpredictable."""
    if uniform(seed, "mask") < 0.5:
        return {AI_ASSISTED: "A", SPECIALIST_ONLY: "B"}
    return {AI_ASSISTED: "B", SPECIALIST_ONLY: "A"}
