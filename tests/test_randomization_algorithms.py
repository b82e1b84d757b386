"""The pure allocation functions: block balance, random block sizes, a
reproducible sequence from the seed, the commitment, minimization's choice
and the blinded statistician's stable labels. No database."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter

import pytest

from randomization import algorithms
from randomization.algorithms import AI_ASSISTED, SPECIALIST_ONLY, MarginalCounts, Ratio

SEED = bytes.fromhex("5e" * 32)
OTHER_SEED = bytes.fromhex("a7" * 32)
STRATA = [f"site=C0{site}|indication={indication}" for site in (1, 2, 3) for indication in ("cervical", "thyroid")]


def take(iterator: object, count: int) -> list[str]:
    return list(itertools.islice(iterator, count))  # type: ignore[call-overload]


@pytest.mark.parametrize(("ratio", "sizes"), [(Ratio(1, 1), [2, 4, 6]), (Ratio(2, 1), [3, 6, 9])])
def test_it_holds_the_ratio_exactly_at_the_end_of_every_block(ratio: Ratio, sizes: list[int]) -> None:
    checked = 0
    for stratum in STRATA:
        for index in range(60):
            arms = algorithms.block(SEED, stratum, index, ratio, sizes)
            counts = Counter(arms)
            units = len(arms) // ratio.total
            assert counts[AI_ASSISTED] == units * ratio.ai_assisted, (stratum, index, arms)
            assert counts[SPECIALIST_ONLY] == units * ratio.specialist_only, (stratum, index, arms)
            checked += 1
    assert checked == len(STRATA) * 60


@pytest.mark.parametrize(("ratio", "sizes"), [(Ratio(1, 1), [2, 4, 6]), (Ratio(2, 1), [3, 6])])
def test_it_is_balanced_in_the_running_sequence_at_every_block_boundary(ratio: Ratio, sizes: list[int]) -> None:
    for stratum in STRATA:
        sequence = algorithms.block_sequence(SEED, stratum, ratio, sizes)
        counts: Counter[str] = Counter()
        for index in range(40):
            size = len(algorithms.block(SEED, stratum, index, ratio, sizes))
            counts.update(take(sequence, size))
            assert counts[AI_ASSISTED] * ratio.specialist_only == counts[SPECIALIST_ONLY] * ratio.ai_assisted


def test_it_never_lets_a_stratum_drift_beyond_half_the_largest_block() -> None:
    for stratum in STRATA:
        difference, worst = 0, 0
        for arm in take(algorithms.block_sequence(SEED, stratum, Ratio(), [2, 4, 6]), 600):
            difference += 1 if arm == AI_ASSISTED else -1
            worst = max(worst, abs(difference))
        assert worst <= 3


def test_it_draws_several_block_sizes() -> None:
    sizes = Counter(
        len(algorithms.block(SEED, stratum, index, Ratio(), [2, 4, 6])) for stratum in STRATA for index in range(50)
    )
    assert set(sizes) == {2, 4, 6}
    # Each size is drawn about a third of the time (300 blocks).
    assert all(60 <= count <= 140 for count in sizes.values()), sizes


def test_it_shuffles_the_order_within_blocks() -> None:
    orders = {tuple(algorithms.block(SEED, "all", index, Ratio(), [4])) for index in range(100)}
    assert len(orders) == 6  # every arrangement of 2 + 2 occurs


def test_it_regenerates_the_same_sequence_from_the_same_seed() -> None:
    first = take(algorithms.block_sequence(SEED, STRATA[0], Ratio(), [2, 4, 6]), 200)
    again = take(algorithms.block_sequence(bytes.fromhex(SEED.hex()), STRATA[0], Ratio(), [2, 4, 6]), 200)
    assert first == again


def test_it_gives_another_sequence_for_another_seed_or_stratum() -> None:
    sequence = take(algorithms.block_sequence(SEED, STRATA[0], Ratio(), [2, 4, 6]), 200)
    assert sequence != take(algorithms.block_sequence(OTHER_SEED, STRATA[0], Ratio(), [2, 4, 6]), 200)
    assert sequence != take(algorithms.block_sequence(SEED, STRATA[1], Ratio(), [2, 4, 6]), 200)


def test_it_reproduces_simple_randomization_from_the_seed() -> None:
    first = [algorithms.simple_arm(SEED, "all", position, Ratio()) for position in range(1, 201)]
    assert first == [algorithms.simple_arm(SEED, "all", position, Ratio()) for position in range(1, 201)]
    assert first != [algorithms.simple_arm(OTHER_SEED, "all", position, Ratio()) for position in range(1, 201)]
    assert 70 <= first.count(AI_ASSISTED) <= 130


def test_it_follows_a_two_to_one_ratio_in_simple_randomization() -> None:
    arms = [algorithms.simple_arm(SEED, "all", position, Ratio(2, 1)) for position in range(1, 3001)]
    assert 0.63 <= arms.count(AI_ASSISTED) / len(arms) <= 0.70


def test_it_commits_to_the_seed_with_its_sha256() -> None:
    assert algorithms.commitment(SEED) == hashlib.sha256(SEED).hexdigest()
    assert algorithms.commitment(SEED) != algorithms.commitment(OTHER_SEED)


@pytest.mark.parametrize(("ratio", "sizes"), [(Ratio(1, 1), [2, 4, 6]), (Ratio(2, 1), [3, 6])])
def test_it_hands_out_with_a_cursor_exactly_the_block_sequence(ratio: Ratio, sizes: list[int]) -> None:
    for stratum in STRATA[:3]:
        cursor = algorithms.BlockCursor()
        by_cursor = [algorithms.next_block_arm(SEED, stratum, ratio, sizes, cursor) for _ in range(150)]
        assert by_cursor == take(algorithms.block_sequence(SEED, stratum, ratio, sizes), 150)
        assert cursor.next_position == 151


def test_it_resumes_a_cursor_restored_from_its_stored_fields() -> None:
    cursor = algorithms.BlockCursor()
    first = [algorithms.next_block_arm(SEED, "all", Ratio(), [2, 4, 6], cursor) for _ in range(37)]
    restored = algorithms.BlockCursor(cursor.next_position, cursor.block_index, cursor.block_start)
    rest = [algorithms.next_block_arm(SEED, "all", Ratio(), [2, 4, 6], restored) for _ in range(40)]
    assert first + rest == take(algorithms.block_sequence(SEED, "all", Ratio(), [2, 4, 6]), 77)


def test_it_refuses_block_sizes_that_are_not_multiples_of_the_ratio() -> None:
    with pytest.raises(ValueError, match="not a positive multiple of 3"):
        algorithms.validate_block_sizes([3, 4], Ratio(2, 1))
    with pytest.raises(ValueError, match="At least one block size"):
        algorithms.validate_block_sizes([], Ratio())
    assert algorithms.validate_block_sizes([6, 2, 4, 2], Ratio()) == [2, 4, 6]


def test_it_refuses_a_ratio_with_a_zero_part() -> None:
    with pytest.raises(ValueError, match="positive integers"):
        Ratio(0, 1)


# --- Minimization -------------------------------------------------------------------


def counts_favouring_specialist() -> MarginalCounts:
    """Site C01 and cervical already lean to specialist-only (3 vs 1)."""
    counts = MarginalCounts()
    for arm in [SPECIALIST_ONLY, SPECIALIST_ONLY, SPECIALIST_ONLY, AI_ASSISTED]:
        counts.add({"site": "C01", "indication": "cervical"}, arm)
    return counts


def choose(
    draw: float,
    *,
    counts: MarginalCounts | None = None,
    ratio: Ratio = Ratio(),
    probability: float = 0.8,
    measure: str = algorithms.RANGE,
) -> algorithms.MinimizationChoice:
    return algorithms.minimization_arm(
        counts=counts if counts is not None else counts_favouring_specialist(),
        levels={"site": "C01", "indication": "cervical"},
        weights={"site": 1.0, "indication": 1.0},
        ratio=ratio,
        measure=measure,
        probability=probability,
        draw=draw,
    )


def test_it_prefers_the_arm_that_lowers_the_imbalance() -> None:
    choice = choose(0.1)
    # AI-assisted: |2-3| per factor = 2; specialist-only: |1-4| per factor = 6.
    assert choice.scores == {AI_ASSISTED: 2.0, SPECIALIST_ONLY: 6.0}
    assert choice.preferred == AI_ASSISTED
    assert choice.arm == AI_ASSISTED


@pytest.mark.parametrize("measure", [algorithms.RANGE, algorithms.VARIANCE])
def test_it_picks_the_minimizing_arm_with_the_given_probability(measure: str) -> None:
    draws = [(index + 0.5) / 1000 for index in range(1000)]
    arms = [choose(draw, probability=0.8, measure=measure).arm for draw in draws]
    assert arms.count(AI_ASSISTED) == 800
    assert [choose(draw, probability=0.65).arm for draw in draws].count(AI_ASSISTED) == 650


def test_it_always_picks_the_minimizing_arm_with_probability_one() -> None:
    assert {choose(draw / 100, probability=1.0).arm for draw in range(100)} == {AI_ASSISTED}


def test_it_weights_factors() -> None:
    counts = MarginalCounts()
    # Site leans to AI-assisted by 2, indication to specialist-only by 2.
    counts.add({"site": "C01"}, AI_ASSISTED)
    counts.add({"site": "C01"}, AI_ASSISTED)
    counts.add({"indication": "cervical"}, SPECIALIST_ONLY)
    counts.add({"indication": "cervical"}, SPECIALIST_ONLY)
    heavy_site = algorithms.minimization_arm(
        counts=counts,
        levels={"site": "C01", "indication": "cervical"},
        weights={"site": 3.0, "indication": 1.0},
        ratio=Ratio(),
        measure=algorithms.RANGE,
        probability=1.0,
        draw=0.5,
    )
    assert heavy_site.preferred == SPECIALIST_ONLY


def test_it_breaks_ties_in_proportion_to_the_ratio() -> None:
    empty = MarginalCounts()
    draws = [(index + 0.5) / 300 for index in range(300)]
    one_to_one = [choose(draw, counts=empty).arm for draw in draws]
    assert all(choose(draw, counts=empty).preferred is None for draw in draws[:5])
    assert one_to_one.count(AI_ASSISTED) == 150
    # 2:1 — the site leans to AI-assisted (2:0), the indication to
    # specialist-only (0:1): either arm leaves a total imbalance of 2.
    two_to_one = MarginalCounts()
    two_to_one.add({"site": "C01"}, AI_ASSISTED)
    two_to_one.add({"site": "C01"}, AI_ASSISTED)
    two_to_one.add({"indication": "cervical"}, SPECIALIST_ONLY)
    arms = [choose(draw, counts=two_to_one, ratio=Ratio(2, 1)).arm for draw in draws]
    assert choose(0.5, counts=two_to_one, ratio=Ratio(2, 1)).preferred is None
    assert arms.count(AI_ASSISTED) == 200


def test_it_counts_a_two_to_one_allocation_as_balanced() -> None:
    counts = MarginalCounts()
    for arm in (AI_ASSISTED, SPECIALIST_ONLY):
        counts.add({"site": "C01", "indication": "cervical"}, arm)
    # 1:1 so far, with a 2:1 ratio the next should be AI-assisted.
    assert choose(0.5, counts=counts, ratio=Ratio(2, 1), probability=1.0).arm == AI_ASSISTED


# --- Strata and masking -------------------------------------------------------------------


def test_it_names_strata_in_the_factor_order() -> None:
    levels = {"indication": "thyroid", "site": "C02", "nodule_size_band": "20-39"}
    assert algorithms.stratum_key(levels, ["site", "indication"]) == "site=C02|indication=thyroid"
    assert algorithms.stratum_key(levels, []) == "all"


def test_it_keeps_the_masked_labels_stable_for_a_seed() -> None:
    labels = algorithms.masked_labels(SEED)
    assert sorted(labels.values()) == ["A", "B"]
    assert algorithms.masked_labels(bytes.fromhex(SEED.hex())) == labels


def test_it_masks_ai_assisted_as_a_or_b_depending_on_the_seed() -> None:
    seen = {algorithms.masked_labels(hashlib.sha256(bytes([n])).digest())[AI_ASSISTED] for n in range(32)}
    assert seen == {"A", "B"}
