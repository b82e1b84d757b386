"""The scheme simulator: how balanced and how predictable each scheme is.

Pure Python (no Django): it calls the allocation functions of
randomization.algorithms, so what is simulated is exactly what runs. A trial
designer compares schemes on simulated participants whose factor levels are
drawn from a Scenario, over many repeats with fresh seeds.

Imbalance is measured on ratio-adjusted counts, |AI/r_AI − specialist/r_S|,
which is |AI − specialist| for 1:1 and 0 when a 2:1 ratio is met exactly.
With permuted blocks it never exceeds the largest block size divided by the
ratio's sum (the largest block size / 2 for 1:1) within a stratum.

Predictability is the proportion of correct guesses by an investigator who
always guesses the arm that has had fewer (ratio-adjusted) allocations so
far in the participant's stratum, guessing at random on ties (in proportion
to the ratio) — the selection bias a scheme leaves open.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from randomization import algorithms

PERMUTED_BLOCKS = "permuted_blocks"
MINIMIZATION = "minimization"
SIMPLE = "simple"
METHODS: tuple[str, str, str] = (PERMUTED_BLOCKS, MINIMIZATION, SIMPLE)

# --- What is simulated --------------------------------------------------------------


@dataclass(frozen=True)
class Factor:
    """A prognostic factor and how often each of its levels occurs."""

    name: str
    levels: tuple[str, ...]
    probabilities: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.levels) != len(self.probabilities) or not self.levels:
            raise ValueError(f"Factor {self.name!r} needs one probability per level.")
        if any(p < 0 for p in self.probabilities) or not math.isclose(sum(self.probabilities), 1.0, abs_tol=1e-9):
            raise ValueError(f"The level probabilities of {self.name!r} must be non-negative and add up to 1.")

    def draw(self, uniform: float) -> str:
        """The level a uniform draw in [0, 1) falls on."""
        cumulative = 0.0
        for level, probability in zip(self.levels, self.probabilities, strict=True):
            cumulative += probability
            if uniform < cumulative:
                return level
        return self.levels[-1]


@dataclass(frozen=True)
class Scenario:
    """The participants' factors. The default resembles the trial: three
    sites of unequal size, two indications, one three-level covariate."""

    factors: tuple[Factor, ...] = (
        Factor("site", ("C01", "C02", "C03"), (0.5, 0.3, 0.2)),
        Factor("indication", ("cervical", "thyroid"), (0.6, 0.4)),
        Factor("covariate", ("low", "middle", "high"), (0.4, 0.35, 0.25)),
    )

    @property
    def names(self) -> list[str]:
        return [factor.name for factor in self.factors]

    def participant(self, rng: random.Random) -> dict[str, str]:
        return {factor.name: factor.draw(rng.random()) for factor in self.factors}

    def levels(self) -> list[str]:
        """Every 'factor=level', in the scenario's order."""
        return [f"{factor.name}={level}" for factor in self.factors for level in factor.levels]

    def strata(self) -> list[str]:
        combinations = itertools.product(*(factor.levels for factor in self.factors))
        return [algorithms.stratum_key(dict(zip(self.names, combo, strict=True)), self.names) for combo in combinations]


@dataclass(frozen=True)
class SchemeSpec:
    """One scheme to simulate. `factors` (default: all of the scenario's) are
    the strata of blocks and simple randomization, and the factors that
    minimization balances."""

    method: str
    ratio: algorithms.Ratio = field(default_factory=algorithms.Ratio)
    block_sizes: tuple[int, ...] = (2, 4, 6)
    factors: tuple[str, ...] | None = None
    weights: tuple[tuple[str, float], ...] = ()
    measure: str = algorithms.RANGE
    probability: float = 0.8

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}; choose one of {', '.join(METHODS)}.")
        if self.method == PERMUTED_BLOCKS:
            algorithms.validate_block_sizes(self.block_sizes, self.ratio)
        if self.factors is not None and len(set(self.factors)) != len(self.factors):
            raise ValueError("A factor is listed twice.")
        if self.measure not in (algorithms.RANGE, algorithms.VARIANCE):
            raise ValueError("The imbalance measure must be 'range' or 'variance'.")
        if not 0.5 <= self.probability <= 1.0:
            raise ValueError("The minimization probability must lie between 0.5 and 1.")

    @property
    def label(self) -> str:
        ratio = f"{self.ratio.ai_assisted}:{self.ratio.specialist_only}"
        if self.method == PERMUTED_BLOCKS:
            return f"permuted_blocks {ratio} sizes {','.join(str(s) for s in sorted(set(self.block_sizes)))}"
        if self.method == MINIMIZATION:
            return f"minimization {ratio} p={self.probability:g} {self.measure}"
        return f"simple {ratio}"

    def block_bound(self) -> float:
        """The largest within-stratum imbalance permuted blocks allow."""
        return max(self.block_sizes) / self.ratio.total


# --- One simulated trial ----------------------------------------------------------------


METRICS: tuple[str, ...] = (
    "overall_final",
    "overall_max",
    "stratum_final",
    "stratum_max",
    "level_final",
    "level_max",
    "predictability",
)
METRIC_LABELS = {
    "overall_final": "final imbalance, overall",
    "overall_max": "max imbalance, overall",
    "stratum_final": "final imbalance, worst stratum",
    "stratum_max": "max imbalance, worst stratum",
    "level_final": "final imbalance, worst factor level",
    "level_max": "max imbalance, worst factor level",
    "predictability": "predictability (correct guesses)",
}


@dataclass(frozen=True)
class RepeatResult:
    """One simulated trial. Imbalances are ratio-adjusted; `level_imbalance`
    holds the final imbalance of every 'factor=level'."""

    overall_final: float
    overall_max: float
    stratum_final: float
    stratum_max: float
    level_final: float
    level_max: float
    predictability: float
    level_imbalance: dict[str, float]
    arms: tuple[str, ...] = field(repr=False, default=())

    def metric(self, name: str) -> float:
        value: float = getattr(self, name)
        return value


class _Tally:
    """Arm counts of one group (overall, a stratum, a factor level), with the
    largest ratio-adjusted imbalance seen so far."""

    __slots__ = ("ai_assisted", "max_imbalance", "specialist_only", "weight_ai", "weight_specialist")

    def __init__(self, ratio: algorithms.Ratio) -> None:
        self.ai_assisted = 0
        self.specialist_only = 0
        self.weight_ai = ratio.ai_assisted
        self.weight_specialist = ratio.specialist_only
        self.max_imbalance = 0.0

    def add(self, arm: str) -> None:
        if arm == algorithms.AI_ASSISTED:
            self.ai_assisted += 1
        else:
            self.specialist_only += 1
        imbalance = self.imbalance()
        if imbalance > self.max_imbalance:
            self.max_imbalance = imbalance

    def imbalance(self) -> float:
        return abs(self.ai_assisted / self.weight_ai - self.specialist_only / self.weight_specialist)

    def guess(self, rng: random.Random, ratio: algorithms.Ratio) -> str:
        """The arm with fewer ratio-adjusted allocations so far; ties at random
        in proportion to the ratio."""
        ai = self.ai_assisted / self.weight_ai
        specialist = self.specialist_only / self.weight_specialist
        if abs(ai - specialist) < 1e-12:
            return ratio.arm_for(rng.random())
        return algorithms.AI_ASSISTED if ai < specialist else algorithms.SPECIALIST_ONLY


class _Allocator:
    """The scheme as the service runs it, for one seed."""

    def __init__(self, spec: SchemeSpec, seed: bytes, factors: Sequence[str]) -> None:
        self.spec = spec
        self.seed = seed
        self.factors = list(factors)
        self.sizes = (
            algorithms.validate_block_sizes(spec.block_sizes, spec.ratio) if spec.method == PERMUTED_BLOCKS else []
        )
        self.weights = dict(spec.weights)
        self.sequences: dict[str, Iterator[str]] = {}
        self.positions: dict[str, int] = {}
        self.margins = algorithms.MarginalCounts()
        self.allocated = 0

    def allocate(self, levels: dict[str, str]) -> str:
        self.allocated += 1
        own = {f: levels[f] for f in self.factors}
        if self.spec.method == MINIMIZATION:
            choice = algorithms.minimization_arm(
                counts=self.margins,
                levels=own,
                weights=self.weights,
                ratio=self.spec.ratio,
                measure=self.spec.measure,
                probability=self.spec.probability,
                draw=algorithms.uniform(self.seed, "minimization", self.allocated),
            )
            self.margins.add(own, choice.arm)
            return choice.arm
        stratum = algorithms.stratum_key(own, self.factors)
        if self.spec.method == SIMPLE:
            position = self.positions.get(stratum, 0) + 1
            self.positions[stratum] = position
            return algorithms.simple_arm(self.seed, stratum, position, self.spec.ratio)
        # block_sequence yields what next_block_arm hands out position by
        # position (tests/test_randomization_algorithms.py checks this).
        sequence = self.sequences.get(stratum)
        if sequence is None:
            sequence = self.sequences[stratum] = algorithms.block_sequence(
                self.seed, stratum, self.spec.ratio, self.sizes
            )
        return next(sequence)


def simulate_once(
    spec: SchemeSpec,
    participants: Sequence[dict[str, str]],
    *,
    scheme_seed: bytes,
    scenario: Scenario,
    guess_rng: random.Random,
) -> RepeatResult:
    """Allocate the participants in order and measure the result."""
    factors = list(spec.factors) if spec.factors is not None else scenario.names
    unknown = [f for f in factors if f not in scenario.names]
    if unknown:
        raise ValueError(f"The scenario has no factor {', '.join(unknown)}.")
    allocator = _Allocator(spec, scheme_seed, factors)
    ratio = spec.ratio
    overall = _Tally(ratio)
    strata: dict[str, _Tally] = {}
    levels_tally: dict[str, _Tally] = {key: _Tally(ratio) for key in scenario.levels()}
    # The investigator watches the strata of the scheme's own factors.
    watched_strata: dict[str, _Tally] = {}
    correct = 0
    arms: list[str] = []
    for levels in participants:
        key = algorithms.stratum_key(levels, factors)
        watched = watched_strata.get(key)
        if watched is None:
            watched = watched_strata[key] = _Tally(ratio)
        guess = watched.guess(guess_rng, ratio)
        arm = allocator.allocate(levels)
        arms.append(arm)
        if guess == arm:
            correct += 1
        watched.add(arm)
        overall.add(arm)
        cell = key if factors == scenario.names else algorithms.stratum_key(levels, scenario.names)
        tally = strata.get(cell)
        if tally is None:
            tally = strata[cell] = _Tally(ratio)
        tally.add(arm)
        for name in scenario.names:
            levels_tally[f"{name}={levels[name]}"].add(arm)
    level_imbalance = {key: tally.imbalance() for key, tally in levels_tally.items()}
    return RepeatResult(
        overall_final=overall.imbalance(),
        overall_max=overall.max_imbalance,
        stratum_final=max((t.imbalance() for t in strata.values()), default=0.0),
        stratum_max=max((t.max_imbalance for t in strata.values()), default=0.0),
        level_final=max(level_imbalance.values(), default=0.0),
        level_max=max((t.max_imbalance for t in levels_tally.values()), default=0.0),
        predictability=correct / len(participants) if participants else 0.0,
        level_imbalance=level_imbalance,
        arms=tuple(arms),
    )


# --- Many simulated trials ----------------------------------------------------------------


def scheme_seed(seed: int, repeat: int, spec: SchemeSpec) -> bytes:
    """A 32-byte scheme seed fixed by the run's seed: the same on every
    machine, so a simulation can be reproduced from its --seed."""
    return hashlib.sha256(f"consilium-simulation|{seed}|{repeat}|{spec.label}".encode()).digest()


@dataclass(frozen=True)
class Summary:
    mean: float
    median: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        ordered = sorted(values)
        # Nearest-rank 95th percentile: a value that occurred.
        rank = max(1, math.ceil(0.95 * len(ordered)))
        return cls(statistics.fmean(ordered), statistics.median(ordered), ordered[rank - 1], ordered[-1])


@dataclass(frozen=True)
class SchemeResult:
    spec: SchemeSpec
    repeats: list[RepeatResult]

    def values(self, metric: str) -> list[float]:
        return [repeat.metric(metric) for repeat in self.repeats]

    def summary(self, metric: str) -> Summary:
        return Summary.of(self.values(metric))

    def level_values(self, level: str) -> list[float]:
        return [repeat.level_imbalance[level] for repeat in self.repeats]


@dataclass(frozen=True)
class Simulation:
    scenario: Scenario
    participants: int
    repeats: int
    seed: int
    results: list[SchemeResult]

    def as_dict(self) -> dict[str, object]:
        return {
            "participants": self.participants,
            "repeats": self.repeats,
            "seed": self.seed,
            "factors": {f.name: dict(zip(f.levels, f.probabilities, strict=True)) for f in self.scenario.factors},
            "schemes": [
                {
                    "scheme": result.spec.label,
                    "method": result.spec.method,
                    **{metric: vars(result.summary(metric)) for metric in METRICS},
                }
                for result in self.results
            ],
        }


def simulate(
    specs: Sequence[SchemeSpec],
    *,
    participants: int,
    repeats: int,
    seed: int = 0,
    scenario: Scenario | None = None,
) -> Simulation:
    """Simulate every scheme on the same participants (repeat r draws the
    same participants for each scheme), each with a fresh scheme seed."""
    if participants < 1:
        raise ValueError("Simulate at least one participant.")
    if repeats < 1:
        raise ValueError("Simulate at least one repeat.")
    scenario = scenario or Scenario()
    per_scheme: list[list[RepeatResult]] = [[] for _ in specs]
    for repeat in range(repeats):
        # Simulated people and guesses, not allocations: no secret is drawn here.
        people_rng = random.Random(f"participants|{seed}|{repeat}")  # noqa: S311
        people = [scenario.participant(people_rng) for _ in range(participants)]
        for index, spec in enumerate(specs):
            per_scheme[index].append(
                simulate_once(
                    spec,
                    people,
                    scheme_seed=scheme_seed(seed, repeat, spec),
                    scenario=scenario,
                    guess_rng=random.Random(f"guesses|{seed}|{repeat}|{index}"),  # noqa: S311
                )
            )
    return Simulation(
        scenario=scenario,
        participants=participants,
        repeats=repeats,
        seed=seed,
        results=[SchemeResult(spec, results) for spec, results in zip(specs, per_scheme, strict=True)],
    )


def table(simulation: Simulation) -> str:
    """One row per scheme and metric, aligned for a terminal."""
    header = ("scheme", "metric", "mean", "median", "p95", "max")
    rows: list[tuple[str, ...]] = [header]
    for result in simulation.results:
        for metric in METRICS:
            summary = result.summary(metric)
            style = "{:.3f}" if metric == "predictability" else "{:.2f}"
            rows.append(
                (
                    result.spec.label,
                    METRIC_LABELS[metric],
                    *(style.format(v) for v in (summary.mean, summary.median, summary.p95, summary.max)),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[i].ljust(widths[i]) if i < 2 else row[i].rjust(widths[i]) for i in range(len(header))]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)
