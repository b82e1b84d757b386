"""Compare randomization schemes before choosing one: imbalance (overall, per
stratum, per factor level) and predictability over many simulated trials.

Runs without a database. Example:

    manage.py simulate_randomization --participants 300 --repeats 200 --plot schemes.png
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from randomization import algorithms, simulation

_RATIO = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_ratio(text: str) -> algorithms.Ratio:
    match = _RATIO.match(text)
    if match is None:
        raise CommandError(f"--ratio must look like 1:1 or 2:1, not {text!r}.")
    try:
        return algorithms.Ratio(int(match[1]), int(match[2]))
    except ValueError as error:
        raise CommandError(f"--ratio {text}: {error}") from error


def parse_block_sizes(text: str, ratio: algorithms.Ratio) -> tuple[int, ...]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise CommandError(f"--block-sizes must be whole numbers separated by commas, not {text!r}.") from error
    try:
        return tuple(algorithms.validate_block_sizes(sizes, ratio))
    except ValueError as error:
        raise CommandError(f"--block-sizes: {error}") from error


def write_plot(result: simulation.Simulation, path: str) -> None:
    """Box plots: final imbalance of every factor level, one box per scheme,
    and predictability per scheme."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    from matplotlib import pyplot

    levels = result.scenario.levels()
    schemes = result.results
    figure, (levels_axis, guess_axis) = pyplot.subplots(
        1,
        2,
        figsize=(max(10.0, 1.0 + 0.55 * len(levels) * len(schemes) + 3.0), 5.5),
        gridspec_kw={"width_ratios": [max(3, len(levels)), max(1.5, 0.6 * len(schemes))]},
    )
    colours = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a"]
    width = 0.8 / len(schemes)
    for number, scheme in enumerate(schemes):
        positions = [index + (number - (len(schemes) - 1) / 2) * width for index in range(len(levels))]
        boxes = levels_axis.boxplot(
            [scheme.level_values(level) for level in levels],
            positions=positions,
            widths=width * 0.9,
            patch_artist=True,
            showfliers=False,
            manage_ticks=False,
            medianprops={"color": "black"},
        )
        for box in boxes["boxes"]:
            box.set_facecolor(colours[number % len(colours)])
            box.set_alpha(0.75)
        levels_axis.plot([], [], color=colours[number % len(colours)], linewidth=8, label=scheme.spec.label)
    levels_axis.set_xticks(range(len(levels)), levels, rotation=30, ha="right")
    levels_axis.set_ylabel("final |imbalance| (ratio-adjusted)")
    levels_axis.set_title("Final imbalance per factor level")
    bottom, top = levels_axis.get_ylim()
    levels_axis.set_ylim(bottom, top + 0.15 * (top - bottom))  # room for the legend
    levels_axis.legend(loc="upper center", ncol=len(schemes), fontsize="small")
    levels_axis.grid(axis="y", alpha=0.3)
    guess_boxes = guess_axis.boxplot(
        [scheme.values("predictability") for scheme in schemes],
        patch_artist=True,
        showfliers=False,
        medianprops={"color": "black"},
    )
    for number, box in enumerate(guess_boxes["boxes"]):
        box.set_facecolor(colours[number % len(colours)])
        box.set_alpha(0.75)
    guess_axis.set_xticks(range(1, len(schemes) + 1), [s.spec.method for s in schemes], rotation=30, ha="right")
    guess_axis.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    guess_axis.set_ylabel("proportion of arms guessed correctly")
    guess_axis.set_title("Predictability")
    guess_axis.grid(axis="y", alpha=0.3)
    figure.suptitle(f"{result.repeats} simulated trials of {result.participants} participants (seed {result.seed})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


class Command(BaseCommand):
    help = (
        "Simulate randomization schemes on N participants, R times, and report the distribution of "
        "final and maximum imbalance and the predictability of the next arm."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--scheme",
            action="append",
            choices=simulation.METHODS,
            help="A scheme to simulate; repeat to compare several (default: all three).",
        )
        parser.add_argument("--participants", type=int, default=300, help="Participants per simulated trial.")
        parser.add_argument("--repeats", type=int, default=200, help="Simulated trials per scheme.")
        parser.add_argument("--block-sizes", default="2,4,6", help="Permuted block sizes, e.g. 2,4,6.")
        parser.add_argument("--ratio", default="1:1", help="Allocation ratio AI-assisted:specialist-only, e.g. 2:1.")
        parser.add_argument(
            "--probability", type=float, default=0.8, help="Minimization: probability of the minimizing arm."
        )
        parser.add_argument(
            "--measure",
            choices=[algorithms.RANGE, algorithms.VARIANCE],
            default=algorithms.RANGE,
            help="Minimization: imbalance measure.",
        )
        parser.add_argument("--seed", type=int, default=2026, help="Seed of the simulation, for a reproducible run.")
        parser.add_argument("--plot", metavar="FILE.png", help="Write box plots of the results to this PNG file.")
        parser.add_argument("--json", action="store_true", help="Print the summaries as one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        participants: int = options["participants"]
        repeats: int = options["repeats"]
        if participants < 1:
            raise CommandError("--participants must be at least 1.")
        if repeats < 1:
            raise CommandError("--repeats must be at least 1.")
        probability: float = options["probability"]
        if not 0.5 <= probability <= 1.0:
            raise CommandError("--probability must lie between 0.5 and 1.")
        plot = options["plot"]
        if plot and not str(plot).lower().endswith(".png"):
            raise CommandError("--plot must name a .png file.")
        ratio = parse_ratio(options["ratio"])
        methods: list[str] = list(dict.fromkeys(options["scheme"] or simulation.METHODS))
        block_sizes = parse_block_sizes(options["block_sizes"], ratio)
        specs = [
            simulation.SchemeSpec(
                method=method,
                ratio=ratio,
                block_sizes=block_sizes,
                measure=options["measure"],
                probability=probability,
            )
            for method in methods
        ]
        result = simulation.simulate(specs, participants=participants, repeats=repeats, seed=options["seed"])
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
        else:
            factors = ", ".join(f"{f.name} ({len(f.levels)} levels)" for f in result.scenario.factors)
            self.stdout.write(
                f"{repeats} simulated trials of {participants} participants each; factors: {factors}; "
                f"seed {options['seed']}.\nImbalance is |AI-assisted/{ratio.ai_assisted} - "
                f"specialist-only/{ratio.specialist_only}|; predictability is the share of correct guesses "
                "of the arm with fewer allocations so far in the stratum.\n"
            )
            self.stdout.write(simulation.table(result))
        if plot:
            write_plot(result, plot)
            if not options["json"]:
                self.stdout.write(f"\nPlot written to {plot}")
