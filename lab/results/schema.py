"""results.json as types: TypedDicts mirroring lab/results/schema.md."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

# Every class is total=False: a reader meets files of older runs, and a figure that could not be
# measured is null (None) or, in old files, absent. Values documented as free-form stay Any.


class Rates(TypedDict, total=False):
    """`rps` and `ok_rps`: over the repetitions."""

    median: float | None
    min: float | None
    max: float | None
    spread: float | None
    values: list[float]


class Latency(TypedDict, total=False):
    """`latency_ms`: milliseconds, from the merged HDR histograms."""

    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    p99_9: float | None
    max: float | None
    min: float | None
    mean: float | None
    count: int


class Memory(TypedDict, total=False):
    rss_peak_bytes: float | None
    rss_mean_bytes: float | None
    rss_baseline_bytes: float | None
    rss_per_connection_bytes: float | None
    uss_peak_bytes: float | None
    pss_peak_bytes: float | None


class Pool(TypedDict, total=False):
    size: int | None
    in_use_peak: float | None
    waiting_peak: float | None
    rejections: float | None


class Cpu(TypedDict, total=False):
    mean: float | None
    peak: float | None


class Generator(TypedDict, total=False):
    """An entry's `generator`."""

    cpu_percent_mean: float | None
    cpu_percent_peak: float | None
    ceiling_rps: float | None
    share_of_ceiling: float | None
    workers_cpu_percent_max: float | None  # the busiest Locust worker by its heartbeats


class Saturation(TypedDict, total=False):
    users: int
    ok_rps: float | None
    p99_ms: float | None


class Writes(TypedDict, total=False):
    """An entry's `writes` (summed over repetitions); a repetition's adds run_tag, wrong_id, message."""

    acknowledged: int
    rows: int
    missing: int
    unacknowledged_rows: int
    ok: bool
    run_tag: str
    wrong_id: int
    message: str


class Cost(TypedDict, total=False):
    """What a request costs the server: in an entry `cpu_us_per_request` is Rates, in a repetition a float."""

    cpu_us_per_request: Any
    cpu_seconds: float | None
    cpu_source: Any  # a repetition's source, or the entry's sorted list of them
    cpu_us_per_request_by_source: dict[str, Any]  # source -> a float (repetition) or Rates (entry)
    metrics_vs_cgroup: float | None  # entry: median of metrics / cgroup - 1 over repetitions
    cpu_budget: dict[str, Any] | None
    speed_work_per_cpu_ms: Rates | None
    cpu_us_per_request_speed_adjusted: Any  # entry: Rates | None; repetition: a float or None
    cpu_phase: list[str] | None  # entry: full-core | budget | unbudgeted, per repetition
    cpu_us_per_request_budget: Rates | None  # entry: over the budgeted windows of full-core repetitions
    phase: str  # repetition: where its CPU per request comes from


class Capacity(TypedDict, total=False):
    """Capacity at SLO: a repetition's `capacity_rps` and `knee_rate`, an entry's `median` and `values`."""

    capacity_rps: float | None
    median: float | None
    values: list[float]
    slo_p99_ms: float
    limited_by: Any  # a repetition's word, or the entry's sorted list of them
    lower_bound: bool  # a repetition's: its knee lies above (limited_by not "server")
    lower_bounds: list[bool]  # an entry's, one per value
    knee_rate: float | None
    knee_rates: list[float | None]
    held_again_rate: float | None  # a higher step that met the SLO after the knee's miss
    held_again_rates: list[float | None]
    note: str
    notes: list[str]


class OpenModel(TypedDict, total=False):
    offered: int
    late: int
    dropped: int
    late_ms: float | None
    latency_uncorrected_ms: Latency | None
    steps: list[dict[str, Any]]


class RepSpeed(TypedDict, total=False):
    """The speed probe's reading over one repetition (lab/load/speed.py)."""

    work_per_cpu_ms: float
    windows: int
    cpu_s: float
    window_log_sd: float | None


class Speed(TypedDict, total=False):
    """The run's reference speed: over every repetition with a probe reading."""

    work_per_cpu_ms: float
    reps: int
    log_sd: float | None
    min: float
    max: float
    probe: str


class Window(TypedDict, total=False):
    start: float
    end: float
    seconds: float


class Repetition(TypedDict, total=False):
    rep: int
    status: Literal["ok", "problem"]
    problems: list[str]
    warnings: list[str]
    window: Window
    requests: int
    failures: int
    failure_rate: float | None
    failures_by_kind: dict[str, int]
    by_name: dict[str, Any]
    rps: float | None
    ok_rps: float | None
    warmup_requests: int
    tail_requests: int
    latency_ms: Latency | None
    latency_failed_ms: Latency | None
    locust_processes: int
    cost: Cost
    cost_budget: Cost | None  # the budgeted window's, when CPU per request came from a full-core window
    full_core: dict[str, Any] | None  # the full-core window: start, end, seconds, requests, failures, rps
    speed: RepSpeed | None
    open_model: OpenModel | None
    capacity: Capacity | None
    cpu_budget: dict[str, Any] | None
    resources: dict[str, Any]
    generator: dict[str, Any]
    acks_recorded: int | None
    writes: Writes | None
    stages: list[dict[str, Any]]
    timeline: dict[str, list[Any]]
    resource_timeline: dict[str, list[Any]]
    sampler: dict[str, Any] | None
    locust_exit_code: int | None


class Entry(TypedDict, total=False):
    """One server x scenario of `results`."""

    server: str
    scenario: str
    description: str
    shape: str
    users: int
    spawn_rate: float
    duration_s: float
    full_core_s: float | None
    warmup_s: float
    uses_db: bool
    server_config: dict[str, Any] | None
    status: Literal["ok", "problem"]
    problems: list[str]
    warnings: list[str]
    reps: int
    rounds: dict[str, Any] | None
    rps: Rates
    ok_rps: Rates
    requests: int
    failures: int
    failure_rate: float | None
    failures_by_kind: dict[str, int]
    latency_ms: Latency | None
    latency_hdr: str | None
    cost: Cost
    open_model: OpenModel | None
    capacity: Capacity | None
    memory: Memory
    threads_peak: float | None
    processes_peak: float | None
    fds_peak: float | None
    client_connections_peak: float | None
    db_connections_peak: float | None
    db_connections_mean: float | None
    db_sessions_other: int | None
    pool: Pool
    cpu_percent: Cpu
    generator: Generator
    generator_bound: bool
    generator_bound_reason: str | None
    saturation: Saturation | None
    writes: Writes | None
    repetitions: list[Repetition]


class Run(TypedDict, total=False):
    id: str
    profile: str
    started_at: float
    finished_at: float | None
    wall_seconds: float | None
    planned_seconds: float | None
    exit_status: int | None
    command: str
    settings: dict[str, Any]
    machine: dict[str, Any]
    calibration: dict[str, Any] | None
    speed: Speed | None


class Rule(TypedDict, total=False):
    """The rule a comparison was judged by (lab.results.stats.settings)."""

    kind: Literal["within", "across"]
    margin: float
    alpha: float
    power: float
    target: float
    min_reps: int
    knob: str


class Decision(TypedDict, total=False):
    """The test behind a cell (lab.results.stats.Decision.as_dict)."""

    changed: bool
    direction: int
    ratio: float | None
    ci: list[float] | None
    p: float | None
    n: list[int]
    margin: float
    alpha: float
    sigma: float | None
    mde: float | None
    reps_for_target: int | None
    logs: bool
    reason: str


class Cell(TypedDict, total=False):
    """One scenario x headline figure of `verdicts`."""

    figure: str
    state: Literal["winner", "tie", "at least tie", "not judged", "generator-bound", "one server",
                   "not measured"]
    winner: str | None
    runner_up: str | None
    text: str
    note: str
    decision: Decision | None


class Verdicts(TypedDict, total=False):
    """The verdict matrix (lab/results/matrix.py)."""

    rule: Rule
    columns: list[str]
    scenarios: dict[str, dict[str, Cell]]


class Results(TypedDict, total=False):
    """The whole file."""

    schema: Literal["serverlab-results"]
    schema_version: int
    generated_at: str
    run: Run
    servers: list[str]
    scenarios: list[str]
    results: list[Entry]
    generator_bound: list[str]
    problems: list[str]
    ok: bool
    verdicts: Verdicts


# The documented tables of schema.md and the type each one describes.
TABLES: dict[str, type] = {"Top level": Results, "`run`": Run, "An entry of `results`": Entry,
                           "A repetition": Repetition, "`verdicts`": Verdicts}
