"""The scheme simulator and its command: minimization balances factor levels
far better than simple randomization, blocks stay within their bound and are
predictable, simple randomization is not; the command prints the table,
writes the plot and refuses bad arguments. No database."""

from __future__ import annotations

import json
import random
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from randomization import algorithms, simulation
from randomization.simulation import MINIMIZATION, PERMUTED_BLOCKS, SIMPLE, SchemeSpec

PARTICIPANTS = 200
REPEATS = 60


@pytest.fixture(scope="module")
def compared() -> simulation.Simulation:
    return simulation.simulate(
        [SchemeSpec(PERMUTED_BLOCKS), SchemeSpec(MINIMIZATION), SchemeSpec(SIMPLE)],
        participants=PARTICIPANTS,
        repeats=REPEATS,
        seed=7,
    )


def result_of(run: simulation.Simulation, method: str) -> simulation.SchemeResult:
    return next(result for result in run.results if result.spec.method == method)


def test_it_keeps_factor_levels_far_better_balanced_with_minimization_than_with_simple(
    compared: simulation.Simulation,
) -> None:
    minimization = result_of(compared, MINIMIZATION).summary("level_max")
    simple = result_of(compared, SIMPLE).summary("level_max")
    assert minimization.median < simple.median / 2
    final_minimization = result_of(compared, MINIMIZATION).summary("level_final")
    assert final_minimization.median < result_of(compared, SIMPLE).summary("level_final").median / 3


def test_it_keeps_every_stratum_within_the_block_bound(compared: simulation.Simulation) -> None:
    blocks = result_of(compared, PERMUTED_BLOCKS)
    bound = blocks.spec.block_bound()
    assert bound == 3
    assert max(blocks.values("stratum_max")) <= bound
    # Simple randomization does not: the bound is a property of blocks.
    assert max(result_of(compared, SIMPLE).values("stratum_max")) > bound


def test_it_keeps_two_to_one_blocks_within_their_bound() -> None:
    spec = SchemeSpec(PERMUTED_BLOCKS, ratio=algorithms.Ratio(2, 1), block_sizes=(3, 6))
    run = simulation.simulate([spec], participants=150, repeats=20, seed=3)
    assert max(run.results[0].values("stratum_max")) <= spec.block_bound() == 2
    arms = [arm for repeat in run.results[0].repeats for arm in repeat.arms]
    assert 0.62 <= arms.count(algorithms.AI_ASSISTED) / len(arms) <= 0.72


def test_it_finds_blocks_predictable_and_simple_randomization_not(compared: simulation.Simulation) -> None:
    blocks = result_of(compared, PERMUTED_BLOCKS).summary("predictability")
    simple = result_of(compared, SIMPLE).summary("predictability")
    assert blocks.mean > 0.6
    assert 0.46 <= simple.mean <= 0.54


def test_it_allocates_as_the_service_does(compared: simulation.Simulation) -> None:
    """A repeat's arms equal the sequence the algorithms give its seed."""
    spec = SchemeSpec(PERMUTED_BLOCKS, factors=("site",))
    scenario = simulation.Scenario()
    people_rng = random.Random(11)
    people = [scenario.participant(people_rng) for _ in range(80)]
    seed = bytes(range(32))
    result = simulation.simulate_once(spec, people, scheme_seed=seed, scenario=scenario, guess_rng=random.Random(1))
    cursors: dict[str, algorithms.BlockCursor] = {}
    expected = []
    for person in people:
        stratum = algorithms.stratum_key(person, ["site"])
        cursor = cursors.setdefault(stratum, algorithms.BlockCursor())
        expected.append(algorithms.next_block_arm(seed, stratum, spec.ratio, [2, 4, 6], cursor))
    assert list(result.arms) == expected


def test_it_reproduces_a_run_from_its_seed() -> None:
    specs = [SchemeSpec(MINIMIZATION)]
    first = simulation.simulate(specs, participants=50, repeats=5, seed=42)
    again = simulation.simulate(specs, participants=50, repeats=5, seed=42)
    other = simulation.simulate(specs, participants=50, repeats=5, seed=43)
    assert [r.arms for r in first.results[0].repeats] == [r.arms for r in again.results[0].repeats]
    assert [r.arms for r in first.results[0].repeats] != [r.arms for r in other.results[0].repeats]


def test_it_summarises_with_mean_median_95th_percentile_and_maximum() -> None:
    summary = simulation.Summary.of([float(n) for n in range(1, 101)])
    assert (summary.mean, summary.median, summary.p95, summary.max) == (50.5, 50.5, 95.0, 100.0)


def test_it_measures_predictability_against_the_fewer_allocations_guess() -> None:
    """With 1:1 blocks of 2 the second of each pair is always guessed right."""
    spec = SchemeSpec(PERMUTED_BLOCKS, block_sizes=(2,), factors=())
    people = [{"site": "C01", "indication": "cervical", "covariate": "low"}] * 400
    result = simulation.simulate_once(
        spec, people, scheme_seed=b"s" * 32, scenario=simulation.Scenario(), guess_rng=random.Random(5)
    )
    # Half the guesses are certain, the other half (ties) are coin flips.
    assert 0.70 <= result.predictability <= 0.80
    assert result.overall_max == 1


def test_it_is_fast_enough_for_a_designer_to_try_schemes() -> None:
    import time

    started = time.perf_counter()
    simulation.simulate([SchemeSpec(m) for m in simulation.METHODS], participants=300, repeats=30, seed=1)
    assert time.perf_counter() - started < 5


# --- The command ------------------------------------------------------------------------


def run_command(*arguments: str) -> str:
    out = StringIO()
    call_command("simulate_randomization", *arguments, stdout=out)
    return out.getvalue()


def test_it_prints_one_row_per_scheme_and_metric() -> None:
    output = run_command("--participants", "60", "--repeats", "10")
    lines = output.splitlines()
    header = next(line for line in lines if line.startswith("scheme"))
    assert header.split() == ["scheme", "metric", "mean", "median", "p95", "max"]
    for method in simulation.METHODS:
        rows = [line for line in lines if line.startswith(method)]
        assert len(rows) == len(simulation.METRICS), method
    row = next(line for line in lines if line.startswith("permuted_blocks") and "max imbalance, worst stratum" in line)
    # Aligned: every row's metric starts under the header's "metric".
    assert row.index("max imbalance") == header.index("metric")
    assert all(float(cell) <= 3 for cell in row.split()[-4:])


def test_it_simulates_only_the_schemes_asked_for() -> None:
    output = run_command("--scheme", "minimization", "--participants", "40", "--repeats", "5", "--probability", "0.9")
    assert "minimization 1:1 p=0.9 range" in output
    assert "permuted_blocks" not in output and "simple 1:1" not in output


def test_it_prints_json_when_asked() -> None:
    data = json.loads(
        run_command("--participants", "30", "--repeats", "4", "--json", "--ratio", "2:1", "--block-sizes", "3,6")
    )
    assert data["participants"] == 30 and data["repeats"] == 4
    assert [scheme["method"] for scheme in data["schemes"]] == list(simulation.METHODS)
    assert set(data["schemes"][0]["level_final"]) == {"mean", "median", "p95", "max"}


def test_it_writes_the_plot(tmp_path: Path) -> None:
    plot = tmp_path / "schemes.png"
    output = run_command("--participants", "40", "--repeats", "6", "--plot", str(plot))
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert plot.stat().st_size > 10_000
    assert f"Plot written to {plot}" in output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--ratio", "2-1"], "--ratio must look like 1:1 or 2:1"),
        (["--ratio", "0:1"], "positive integers"),
        (["--block-sizes", "2,3"], "Block size 3 is not a positive multiple of 2"),
        (["--ratio", "2:1", "--block-sizes", "2,4"], "not a positive multiple of 3"),
        (["--block-sizes", "two"], "--block-sizes must be whole numbers"),
        (["--participants", "0"], "--participants must be at least 1"),
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--probability", "0.3"], "--probability must lie between 0.5 and 1"),
        (["--plot", "schemes.pdf"], "--plot must name a .png file"),
    ],
)
def test_it_refuses_bad_arguments(arguments: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run_command("--repeats", "2", *arguments)


def test_it_refuses_an_unknown_scheme() -> None:
    with pytest.raises(CommandError, match="invalid choice"):
        run_command("--scheme", "urn")
