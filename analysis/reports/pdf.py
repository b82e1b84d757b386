"""The trial's analysis as a PDF: reportlab (platypus) for the document and
tables, matplotlib (Agg, PNG in memory) for the figures.

`render_report` draws a TrialAnalysis exactly as analysis.endpoints computed
it. An open (pooled) report has one group, "All": it is refused otherwise,
and it never shows the primary comparison, the log-rank/Cox comparison or
the AI error cases, which are by arm.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Callable, Sequence
from typing import Any
from xml.sax.saxutils import escape

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from reportlab.graphics.shapes import Drawing, Line, Polygon, Rect, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import (
    Flowable,
    Image,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from analysis.results import POOLED, ChecklistItem, ConsortFlow, ErrorCase, TrialAnalysis
from analysis.stats import BlandAltman, Estimate

Thumbnail = Callable[[int], bytes | None]

_STYLES = getSampleStyleSheet()
_BODY = _STYLES["BodyText"]
_SMALL = ParagraphStyle("small", parent=_BODY, fontSize=8, leading=10)
_CELL = ParagraphStyle("cell", parent=_BODY, fontSize=8, leading=10)
_MONO = ParagraphStyle("mono", parent=_BODY, fontName="Courier", fontSize=8, leading=10)
_WIDTH = A4[0] - 4 * cm
_TABLE_STYLE = TableStyle(
    [
        ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
        ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.9, 0.92, 0.95)),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
)


class ReportError(ValueError):
    """The analysis cannot be drawn as asked (e.g. an open report with arms)."""


def render_report(
    analysis: TrialAnalysis,
    *,
    requested_by: str = "",
    thumbnail: Thumbnail | None = None,
    compress: bool = True,
) -> bytes:
    """The PDF of one analysis. `requested_by` is printed on the title page;
    `thumbnail(image_id)` may return PNG bytes for an AI error case (closed
    reports only); `compress=False` leaves the page streams readable."""
    _check_open(analysis)
    buffer = io.BytesIO()
    kind = "Closed report (by arm)" if analysis.closed else "Open report (pooled, arms masked)"
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=2 * cm,
        rightMargin=2 * cm,
        topMargin=2 * cm,
        bottomMargin=2 * cm,
        title=f"{analysis.trial_code} — {kind}",
        author="Consilium",
        pageCompression=1 if compress else 0,
    )
    footer = f"{analysis.trial_code} · {kind} · data {analysis.data_hash[:12]}"

    def on_page(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.drawString(2 * cm, 1.2 * cm, footer)
        canvas.drawRightString(A4[0] - 2 * cm, 1.2 * cm, f"Page {doc.page}")
        canvas.restoreState()

    story: list[Flowable] = []
    story += _title_page(analysis, kind, requested_by)
    story += _section("1. CONSORT-AI flow diagram", [_consort_drawing(analysis.consort)])
    story += _section("2. Baseline characteristics", [_baseline_table(analysis)])
    story += _section("3. Outcomes", [_outcome_table(analysis), Spacer(1, 6), _influence_table(analysis)])
    if analysis.closed:
        story += _section("4. Primary result", _primary(analysis))
    else:
        story += _section(
            "4. Primary result",
            [Paragraph("The comparison between arms is in the closed report only.", _BODY)],
        )
    story += _section("5. Agreement", [_agreement_table(analysis), *_bland_altman(analysis.bland_altman)])
    story += _section("6. Time to diagnosis", _survival(analysis))
    story += _section("7. Interim look", _interim(analysis))
    if analysis.closed:
        story += _section("8. AI error analysis", _errors(analysis.errors, thumbnail))
    story += _section("9. CONSORT-AI checklist", _checklist(analysis.consort_ai))
    story += _section("Notes", _notes(analysis))
    document.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return buffer.getvalue()


def _check_open(analysis: TrialAnalysis) -> None:
    if analysis.closed:
        return
    pooled = [POOLED]
    groups_seen = {
        "groups": list(analysis.groups),
        "outcomes": list(analysis.outcomes),
        "allocated": list(analysis.consort.allocated),
        "received": list(analysis.consort.received),
        "lost": list(analysis.consort.lost),
        "analysed": list(analysis.consort.analysed),
        "time to diagnosis": list(analysis.time_to_diagnosis),
    }
    for name, keys in groups_seen.items():
        if keys and keys != pooled:
            raise ReportError(f"An open report is pooled: its {name} must be by {POOLED!r} only (got {keys}).")
    for row in analysis.baseline:
        if list(row.by_group) != pooled:
            raise ReportError(f"An open report is pooled: baseline row {row.variable!r} is by {list(row.by_group)}.")
    if analysis.primary.arms is not None or analysis.errors or analysis.logrank or analysis.cox_hazard_ratio:
        raise ReportError("An open report has no comparison between arms and no AI error cases.")


# Formatting -------------------------------------------------------------------------------------


def _p(text: str, style: ParagraphStyle = _CELL) -> Paragraph:
    return Paragraph(escape(text), style)


def _pct(estimate: Estimate | None) -> str:
    if estimate is None or not math.isfinite(estimate.value):
        return "–"
    return f"{100 * estimate.value:.1f} % ({100 * estimate.ci_low:.1f}–{100 * estimate.ci_high:.1f})"


def _num(estimate: Estimate | None, digits: int = 3) -> str:
    if estimate is None or not math.isfinite(estimate.value):
        return "–"
    return f"{estimate.value:.{digits}f} ({estimate.ci_low:.{digits}f} to {estimate.ci_high:.{digits}f})"


def _pvalue(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _opt(value: float | int | None, fmt: str = "{}") -> str:
    return "–" if value is None else fmt.format(value)


def _table(rows: list[list[Any]], widths: Sequence[float] | None = None) -> Table:
    cells = [[cell if isinstance(cell, Flowable) else _p(str(cell)) for cell in row] for row in rows]
    table = Table(cells, colWidths=list(widths) if widths else None, repeatRows=1, hAlign="LEFT")
    table.setStyle(_TABLE_STYLE)
    return table


def _section(title: str, body: list[Flowable]) -> list[Flowable]:
    return [Paragraph(escape(title), _STYLES["Heading2"]), *body, Spacer(1, 10)]


def _figure(fig: Any, width: float) -> Image:
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    png.seek(0)
    image = Image(png)
    ratio = image.imageHeight / image.imageWidth
    image.drawWidth = width
    image.drawHeight = width * ratio
    return image


# Sections ---------------------------------------------------------------------------------------


def _title_page(analysis: TrialAnalysis, kind: str, requested_by: str) -> list[Flowable]:
    generated = analysis.generated_at
    if generated.tzinfo is not None:
        generated = generated.astimezone(dt.UTC)
    rows = [
        ["Trial", f"{analysis.trial_code} — {analysis.trial_title}"],
        ["Report", kind],
        ["Generated at", generated.strftime("%Y-%m-%d %H:%M UTC")],
        ["Data hash (SHA-256)", analysis.data_hash],
        ["Requested by", requested_by or "–"],
        ["Groups", ", ".join(analysis.groups)],
    ]
    info = Table(
        [[_p(a, _BODY), _p(b, _MONO if a.startswith("Data hash") else _BODY)] for a, b in rows],
        colWidths=[4.5 * cm, _WIDTH - 4.5 * cm],
        hAlign="LEFT",
    )
    info.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.grey)]))
    warning = (
        "CLOSED REPORT: results by arm. For the DSMB and the unblinded statistician only; do not share."
        if analysis.closed
        else "OPEN REPORT: pooled over both arms; no result by arm."
    )
    return [
        Spacer(1, 3 * cm),
        Paragraph(escape(f"{analysis.trial_code}: analysis report"), _STYLES["Title"]),
        Spacer(1, 1 * cm),
        info,
        Spacer(1, 1 * cm),
        Paragraph(f"<b>{escape(warning)}</b>", _BODY),
        PageBreak(),
    ]


def _box(drawing: Drawing, x: float, y: float, w: float, h: float, lines: list[str]) -> None:
    drawing.add(Rect(x, y, w, h, fillColor=colors.white, strokeColor=colors.black, strokeWidth=0.8))
    top = y + h - 11
    for n, line in enumerate(lines[: max(1, int((h - 4) // 9))]):
        drawing.add(String(x + 4, top - 9 * n, line, fontName="Helvetica", fontSize=7.5))


def _arrow(drawing: Drawing, x1: float, y1: float, x2: float, y2: float) -> None:
    drawing.add(Line(x1, y1, x2, y2, strokeColor=colors.black, strokeWidth=0.8))
    angle = math.atan2(y2 - y1, x2 - x1)
    size = 4.0
    left = (x2 - size * math.cos(angle - 0.4), y2 - size * math.sin(angle - 0.4))
    right = (x2 - size * math.cos(angle + 0.4), y2 - size * math.sin(angle + 0.4))
    drawing.add(Polygon([x2, y2, *left, *right], fillColor=colors.black, strokeColor=colors.black, strokeWidth=0.5))


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _consort_drawing(flow: ConsortFlow) -> Drawing:
    """Enrolment, allocation, follow-up and analysis boxes, one column per
    group, with arrows; the exclusions beside the enrolment arrow."""
    width = _WIDTH
    groups = list(flow.allocated) or [POOLED]
    reasons = flow.exclusion_reasons[:6]
    top_h = 28.0
    excl_h = 16.0 + 9 * max(1, len(reasons))
    row_h = 46.0
    height = 20 + top_h + 20 + excl_h + 20 + top_h + 4 * (row_h + 18) + 10
    drawing = Drawing(width, height)
    y = height - 10 - top_h
    centre = width / 2
    box_w = 200.0
    _box(drawing, centre - box_w / 2, y, box_w, top_h, [f"Assessed for eligibility (n = {flow.assessed})"])
    # Exclusions to the right of the enrolment arrow.
    excl_y = y - 20 - excl_h
    excl_lines = [f"Excluded (n = {flow.excluded})"] + [
        f"  {_shorten(reason, 44)} (n = {count})" for reason, count in reasons
    ]
    if len(flow.exclusion_reasons) > len(reasons):
        excl_lines[-1] = f"  other reasons (n = {sum(c for _, c in flow.exclusion_reasons[len(reasons) - 1 :])})"
    _box(drawing, centre + 20, excl_y, width - centre - 20, excl_h, excl_lines)
    rand_y = excl_y - 20 - top_h
    _arrow(drawing, centre, y, centre, rand_y + top_h)
    _arrow(drawing, centre, excl_y + excl_h / 2, centre + 20, excl_y + excl_h / 2)
    _box(drawing, centre - box_w / 2, rand_y, box_w, top_h, [f"Randomized (n = {flow.randomized})"])
    column_w = (width - 10 * (len(groups) - 1)) / len(groups)
    previous = rand_y
    stages = ["Allocation", "Received", "Follow-up", "Analysis"]
    for stage_index, stage in enumerate(stages):
        y_row = previous - 18 - row_h
        for index, group in enumerate(groups):
            x = index * (column_w + 10)
            lines = _consort_lines(flow, stage, group)
            _box(drawing, x, y_row, column_w, row_h, lines)
            start_x = centre if stage_index == 0 else x + column_w / 2
            _arrow(drawing, start_x, previous, x + column_w / 2, y_row + row_h)
        previous = y_row
    return drawing


def _consort_lines(flow: ConsortFlow, stage: str, group: str) -> list[str]:
    label = "" if group == POOLED else f"{group}: "
    if stage == "Allocation":
        return [f"{label}allocated (n = {flow.allocated.get(group, 0)})"]
    if stage == "Received":
        return [f"Received the allocated read (n = {flow.received.get(group, 0)})", "(signed final clinical read)"]
    if stage == "Follow-up":
        lines = [f"Lost or withdrawn (n = {flow.lost.get(group, 0)})"]
        lines += [f"  {_shorten(reason, 40)} (n = {count})" for reason, count in flow.lost_reasons.get(group, [])[:3]]
        return lines
    return [f"Analysed (n = {flow.analysed.get(group, 0)})", "(final read and conclusive reference)"]


def _baseline_table(analysis: TrialAnalysis) -> Flowable:
    if not analysis.baseline:
        return _p("No baseline data.", _BODY)
    header = ["Variable", "Level", *analysis.groups]
    rows = [header] + [
        [row.variable, row.level, *(row.by_group.get(g, "–") for g in analysis.groups)] for row in analysis.baseline
    ]
    first = 4.5 * cm
    level = 3.5 * cm
    rest = (_WIDTH - first - level) / max(1, len(analysis.groups))
    return _table(rows, [first, level, *([rest] * len(analysis.groups))])


def _outcome_table(analysis: TrialAnalysis) -> Flowable:
    names = [
        ("Participants (n)", lambda o: str(o.n)),
        ("Sensitivity, % (95 % CI)", lambda o: _pct(o.sensitivity)),
        ("Specificity, % (95 % CI)", lambda o: _pct(o.specificity)),
        ("Biopsy / FNA rate, % (95 % CI)", lambda o: _pct(o.sampling_rate)),
        ("Reading time, median (s)", lambda o: _opt(o.reading_time_median_s, "{:.0f}")),
        ("Staging agreement, weighted κ (95 % CI)", lambda o: _num(o.staging_kappa)),
        ("AI stand-alone AUC (95 % CI)", lambda o: _num(o.ai_auc)),
    ]
    rows: list[list[Any]] = [["Outcome", *analysis.groups]]
    for name, value in names:
        rows.append([name, *(value(analysis.outcomes[g]) if g in analysis.outcomes else "–" for g in analysis.groups)])
    first = 6 * cm
    rest = (_WIDTH - first) / max(1, len(analysis.groups))
    return _table(rows, [first, *([rest] * len(analysis.groups))])


def _influence_table(analysis: TrialAnalysis) -> Flowable:
    rows: list[list[Any]] = [["Influence of the AI", *analysis.groups]]
    for name, attribute in (
        ("Final read changed after the AI", "changed_after_ai"),
        ("… towards the reference", "changed_towards_reference"),
        ("… away from the reference", "changed_away_from_reference"),
    ):
        rows.append(
            [
                name,
                *(
                    _opt(getattr(analysis.outcomes[g], attribute)) if g in analysis.outcomes else "–"
                    for g in analysis.groups
                ),
            ]
        )
    first = 6 * cm
    rest = (_WIDTH - first) / max(1, len(analysis.groups))
    return _table(rows, [first, *([rest] * len(analysis.groups))])


def _primary(analysis: TrialAnalysis) -> list[Flowable]:
    primary = analysis.primary
    first, second = primary.arms if primary.arms else ("first arm", "second arm")
    rows: list[list[Any]] = [["Primary endpoint: sensitivity for high-grade disease", "Estimate (95 % CI)", "p"]]
    rd = primary.risk_difference
    rows.append([f"Risk difference, {first} − {second} (Newcombe)", _pct(rd), _pvalue(rd.p_value if rd else None)])
    odds = primary.adjusted_odds_ratio
    rows.append(
        [
            "Odds ratio adjusted for the stratification factors (logistic regression)",
            _num(odds, 2),
            _pvalue(odds.p_value if odds else None),
        ]
    )
    return [_table(rows, [9 * cm, 5 * cm, _WIDTH - 14 * cm])]


def _agreement_table(analysis: TrialAnalysis) -> Flowable:
    agreement = analysis.agreement
    rows: list[list[Any]] = [["Agreement", "Estimate (95 % CI)"]]
    rows.append(["Cases with panel reads (n)", str(agreement.n_cases)])
    rows.append(["Within the panel: Fleiss κ", _num(agreement.panel_fleiss_kappa)])
    rows.append(["Within the panel: Gwet's AC1", _num(agreement.panel_gwet_ac1)])
    rows.append(["Final clinical read vs panel majority: weighted κ", _num(agreement.clinical_vs_panel_kappa)])
    for group in analysis.groups:
        count = analysis.outline_dice_n.get(group, 0)
        label = "AI mask vs reader outline: mean Dice" + ("" if group == POOLED else f" ({group})")
        rows.append([f"{label}, n = {count}", _num(analysis.outline_dice.get(group))])
    return _table(rows, [9 * cm, _WIDTH - 9 * cm])


def _survival(analysis: TrialAnalysis) -> list[Flowable]:
    curves = analysis.time_to_diagnosis
    if not curves:
        return [_p("No time-to-diagnosis data.", _BODY)]
    horizon = max((max(km.follow_up_times) for km in curves.values() if km.follow_up_times), default=0.0)
    ticks = _ticks(horizon)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for group, km in curves.items():
        times = [0.0] + [step.time for step in km.table]
        proportion = [0.0] + [1.0 - step.survival for step in km.table]
        ax.step(times, proportion, where="post", label=f"{group} (n = {km.n})")
    ax.set_xlabel("Days from randomization")
    ax.set_ylabel("Proportion diagnosed")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, max(ticks[-1], horizon, 1.0))
    ax.set_xticks(ticks)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    story: list[Flowable] = [_figure(fig, _WIDTH)]
    at_risk: list[list[Any]] = [["Numbers at risk", *(f"{t:g}" for t in ticks)]]
    for group, km in curves.items():
        at_risk.append([group, *(str(n) for n in km.at_risk(ticks))])
    first = 3.5 * cm
    story.append(_table(at_risk, [first, *([(_WIDTH - first) / len(ticks)] * len(ticks))]))
    story.append(Spacer(1, 6))
    summary: list[list[Any]] = [["Group", "n", "Diagnosed", "Median days (95 % CI)"]]
    for group, km in curves.items():
        median = "not reached" if km.median is None else f"{km.median:g}"
        ci = f"({_opt(km.median_ci_low, '{:g}')}–{_opt(km.median_ci_high, '{:g}')})"
        summary.append([group, str(km.n), str(km.events), f"{median} {ci}"])
    story.append(_table(summary))
    if analysis.closed and (analysis.logrank is not None or analysis.cox_hazard_ratio is not None):
        lines = []
        if analysis.logrank is not None:
            lines.append(f"Log-rank χ² = {analysis.logrank.statistic:.2f}, p = {_pvalue(analysis.logrank.p_value)}.")
        if analysis.cox_hazard_ratio is not None:
            hr = analysis.cox_hazard_ratio
            lines.append(f"Cox hazard ratio {_num(hr, 2)}, p = {_pvalue(hr.p_value)}.")
        story.append(Spacer(1, 4))
        story.append(_p(" ".join(lines), _BODY))
    return story


def _ticks(horizon: float) -> list[float]:
    if horizon <= 0:
        return [0.0]
    raw = horizon / 6
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return [step * n for n in range(int(horizon // step) + 1)]


def _interim(analysis: TrialAnalysis) -> list[Flowable]:
    look = analysis.interim
    if look is None:
        return [_p("No interim look is planned at this point.", _BODY)]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(look.boundary_timing, look.boundary_z, "o-", color="tab:red", label="Efficacy boundary (Lan–DeMets)")
    if analysis.closed and look.z is not None:
        ax.plot([look.information_fraction], [look.z], "s", color="tab:blue", markersize=8, label="Observed z")
    ax.axvline(look.information_fraction, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("Information fraction")
    ax.set_ylabel("z")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    rows: list[list[Any]] = [["Information fraction", "Boundary z"]]
    rows += [[f"{t:.3f}", f"{z:.4f}"] for t, z in zip(look.boundary_timing, look.boundary_z, strict=False)]
    story: list[Flowable] = [_figure(fig, _WIDTH * 0.8), _table(rows)]
    if analysis.closed:
        text = (
            f"At information fraction {look.information_fraction:.3f}: observed z = {_opt(look.z, '{:.3f}')}, "
            f"conditional power {_opt(look.conditional_power, '{:.3f}')}; the boundary was "
            f"{'crossed' if look.crossed else 'not crossed'}."
        )
    else:
        text = f"Information fraction {look.information_fraction:.3f}. The observed z is in the closed report only."
    story.append(Spacer(1, 4))
    story.append(_p(text, _BODY))
    return story


def _errors(errors: list[ErrorCase], thumbnail: Thumbnail | None) -> list[Flowable]:
    if not errors:
        return [_p("No AI false negatives or false positives.", _BODY)]
    header = ["Study ID", "Group", "Error", "AI category", "AI probability", "Reference"]
    if thumbnail is not None:
        header.append("Image")
    rows: list[list[Any]] = [header]
    for case in errors:
        row: list[Any] = [
            case.study_id,
            case.group,
            case.kind,
            case.ai_category,
            _opt(case.ai_probability, "{:.3f}"),
            case.reference,
        ]
        if thumbnail is not None:
            png = thumbnail(case.image_id) if case.image_id is not None else None
            if png:
                image = Image(io.BytesIO(png))
                scale = 2.2 * cm / max(image.imageWidth, image.imageHeight)
                image.drawWidth, image.drawHeight = image.imageWidth * scale, image.imageHeight * scale
                row.append(image)
            else:
                row.append("–")
        rows.append(row)
    return [KeepTogether([_p(f"{len(errors)} cases.", _BODY)]), _table(rows)]


def _bland_altman(comparisons: dict[str, BlandAltman]) -> list[Flowable]:
    """One Bland–Altman plot (differences against averages; the mean
    difference and the limits of agreement, their 95 % intervals shaded) and
    a one-line table per comparison."""
    story: list[Flowable] = [Spacer(1, 6), Paragraph("Bland–Altman limits of agreement", _STYLES["Heading3"])]
    if not comparisons:
        story.append(_p("No Bland–Altman comparison had enough pairs (see the notes).", _BODY))
        return story
    for name, result in comparisons.items():
        fig, ax = plt.subplots(figsize=(6, 2.8))
        ax.scatter(result.averages, result.differences, s=8, alpha=0.5, color="tab:blue")
        lines = (
            (result.mean_difference, result.mean_difference_ci, "tab:red", "Mean difference"),
            (result.lower_limit, result.lower_limit_ci, "tab:grey", "Limits of agreement"),
            (result.upper_limit, result.upper_limit_ci, "tab:grey", None),
        )
        for value, (low, high), colour, label in lines:
            ax.axhline(value, color=colour, linestyle="--", linewidth=1, label=label)
            ax.axhspan(low, high, color=colour, alpha=0.15)
        ax.set_xlabel("Mean of the two measurements")
        ax.set_ylabel("Difference")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
        rows: list[list[Any]] = [
            ["Comparison", "n", "Mean difference (95 % CI)", "Lower limit (95 % CI)", "Upper limit (95 % CI)"],
            [
                name,
                str(result.n),
                _interval(result.mean_difference, result.mean_difference_ci),
                _interval(result.lower_limit, result.lower_limit_ci),
                _interval(result.upper_limit, result.upper_limit_ci),
            ],
        ]
        widths = [5.5 * cm, 1.2 * cm, *([(_WIDTH - 6.7 * cm) / 3] * 3)]
        story += [KeepTogether([_figure(fig, _WIDTH * 0.8), _table(rows, widths)]), Spacer(1, 6)]
    return story


def _interval(value: float, ci: tuple[float, float]) -> str:
    return f"{value:.2f} ({ci[0]:.2f} to {ci[1]:.2f})"


def _checklist(items: list[ChecklistItem]) -> list[Flowable]:
    if not items:
        return [_p("The checklist was not prepared for this analysis.", _BODY)]
    intro = _p(
        "Items of the CONSORT-AI extension (Liu et al., Nat Med 2020;26:1364–1374). "
        '"Filled by Consilium" is written from the trial\'s data; the rest is for the authors.',
        _BODY,
    )
    rows: list[list[Any]] = [["Item", "Topic", "Content"]]
    for item in items:
        text = f"Filled by Consilium: {item.text}" if item.filled else f"To be completed by the authors: {item.text}"
        rows.append([item.item, item.topic, text])
    return [intro, Spacer(1, 4), _table(rows, [1.5 * cm, 4 * cm, _WIDTH - 5.5 * cm])]


def _notes(analysis: TrialAnalysis) -> list[Flowable]:
    if not analysis.notes:
        return [_p("None.", _BODY)]
    return [_p(f"• {note}", _BODY) for note in analysis.notes]
