"""What the AI operations view shows, as plain frozen dataclasses: the page
renders them, the API serializes them (ai_engine.serializers)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from trial.models import Site, Trial


@dataclass(frozen=True)
class BrokerQueue:
    """Messages waiting on the broker's queue (all trials share it); None
    with the error when the broker did not answer."""

    queue: str
    waiting: int | None
    error: str = ""
    note: str = ""


@dataclass(frozen=True)
class StatusCount:
    status: str
    label: str
    count: int


@dataclass(frozen=True)
class Latency:
    """Queue-to-result time (finished_at − created_at) of the results judged
    (done or abstained) that finished in the window."""

    label: str
    hours: float
    results: int
    mean_seconds: float | None
    p50_seconds: float | None
    p95_seconds: float | None
    mean_runtime_ms: float | None
    mean_batch_size: float | None


@dataclass(frozen=True)
class ReasonCount:
    code: str
    count: int
    share: float  # of all abstentions

    @property
    def percent(self) -> float:
        return 100.0 * self.share


@dataclass(frozen=True)
class Abstention:
    done: int
    abstained: int
    rate: float | None  # abstained / (done + abstained)
    reasons: list[ReasonCount]

    @property
    def judged(self) -> int:
        return self.done + self.abstained

    @property
    def percent(self) -> float | None:
        return None if self.rate is None else 100.0 * self.rate


@dataclass(frozen=True)
class CategoryCount:
    category: str
    count: int
    share: float  # of the cell's done results

    @property
    def percent(self) -> float:
        return 100.0 * self.share


@dataclass(frozen=True)
class DriftCell:
    """What the AI said at one site, on one device model, in one calendar month."""

    site_code: str
    site_name: str
    device: str
    month: dt.date
    judged: int  # done + abstained
    abstained: int
    done: int
    with_lesion: int  # done results with at least one lesion
    abstention_rate: float | None
    lesion_share: float | None
    mean_area_mm2: float | None  # over done results whose area in mm² is known
    area_known: int
    mean_category_probability: float | None
    categories: list[CategoryCount]
    abstention_z: float | None  # (rate − overall) / binomial SE; None below FLAG_MIN_N
    lesion_z: float | None
    abstention_flag: bool
    lesion_flag: bool

    @property
    def abstention_percent(self) -> float | None:
        return None if self.abstention_rate is None else 100.0 * self.abstention_rate

    @property
    def lesion_percent(self) -> float | None:
        return None if self.lesion_share is None else 100.0 * self.lesion_share


@dataclass(frozen=True)
class Drift:
    overall_abstention_rate: float | None
    overall_lesion_share: float | None
    cells: list[DriftCell]

    @property
    def overall_abstention_percent(self) -> float | None:
        return None if self.overall_abstention_rate is None else 100.0 * self.overall_abstention_rate

    @property
    def overall_lesion_percent(self) -> float | None:
        return None if self.overall_lesion_share is None else 100.0 * self.overall_lesion_share

    @property
    def flagged(self) -> int:
        return sum(1 for cell in self.cells if cell.abstention_flag or cell.lesion_flag)


@dataclass(frozen=True)
class HostLoad:
    """One worker machine over the last hour (claimed_by is host:pid)."""

    host: str
    processes: int
    finished: int
    failed: int
    running: int
    mean_runtime_ms: float | None


@dataclass(frozen=True)
class DeviceLoad:
    device: str
    finished: int
    mean_runtime_ms: float | None


@dataclass(frozen=True)
class FailureRow:
    result_id: int
    image_id: int
    study_id: str
    site_code: str
    model: str
    reason: str
    attempts: int
    finished_at: dt.datetime | None
    data_withdrawn: bool


@dataclass(frozen=True)
class RecentResult:
    """A finished result (done or abstained) and which of its files other
    software can take; never the participant's arm."""

    result_id: int
    image_id: int
    study_id: str
    site_code: str
    device: str  # the imaging device: manufacturer and model from the study's header
    status: str
    reason_code: str  # abstained only
    category: str
    category_probability: float | None
    lesion_count: int | None
    finished_at: dt.datetime | None
    data_withdrawn: bool
    has_overlay: bool
    has_segmentation: bool
    has_mask: bool

    @property
    def files(self) -> list[str]:
        """The kinds of file that can be downloaded (none once the data were withdrawn)."""
        if self.data_withdrawn:
            return []
        present = {"overlay": self.has_overlay, "segmentation": self.has_segmentation, "mask": self.has_mask}
        return [kind for kind, there in present.items() if there]


@dataclass(frozen=True)
class Operations:
    trial: Trial
    sites: list[Site]
    all_sites: bool
    computed_at: dt.datetime
    broker: BrokerQueue
    outbox: int  # queued, never handed to the broker (it was down)
    stale_running: int  # running with an ended lease: the sweeper takes them back
    statuses: list[StatusCount]
    latency: list[Latency]
    abstention: Abstention
    drift: Drift
    hosts: list[HostLoad]
    devices: list[DeviceLoad]
    failures: list[FailureRow]
    window_days: int | None
    recent_results: list[RecentResult]

    @property
    def total(self) -> int:
        return sum(row.count for row in self.statuses)
