"""What a million requests cost: AWS Lambda (paid per request and per GB-second) against an
always-on instance (paid per hour), from a latency and a throughput you measured, with the monthly
volume at which the instance becomes the cheaper one.

    python -m lab_code.measuring costs --ms-per-request 6.5 --throughput 230
    python -m lab_code.measuring costs --ms-per-request 6.5 --throughput 230 \\
        --memory-mb 1024 1769 --instance c7g.large --monthly-requests 1e6 1e7 1e8 --plot costs.png

The Lambda model is an approximation, stated plainly: Lambda gives a function CPU in proportion to
its memory, one full vCPU at 1,769 MB. A CPU-bound, single-threaded request that takes
`ms_one_vcpu` on one vCPU is taken to last `ms_one_vcpu * 1769 / memory_mb` below 1,769 MB and
exactly `ms_one_vcpu` above (up to 6 vCPUs at 10,240 MB, which one thread cannot use). Network,
image decoding and waiting on other services do not scale that way; measure on Lambda to be sure.
Duration is billed per 1 ms, rounded up. A cold start adds its init time, taken as you measured
it (not scaled with memory), to that request's billed duration: since 1 August 2025 Lambda bills
the init phase of every on-demand function; container images and custom runtimes paid for it
before, functions packaged as .zip on a managed runtime did not.
The free tier is a separate, optional line: it belongs to the account, not to one function.

The instance side assumes traffic spread over the month, `peak_to_average` times higher at peak,
and instances run at `target_utilization` of the throughput you measured. Not counted on either
side: data transfer, storage, a load balancer, API Gateway (a Function URL costs nothing extra),
Savings Plans, Lambda's cheaper tiers beyond 6 billion GB-seconds a month.

The prices below change: re-check them at their sources before teaching from the numbers.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

ONE_VCPU_MB = 1769  # "At 1,769 MB, a function has the equivalent of one vCPU"
MIN_MB, MAX_MB = 128, 10_240  # Lambda's memory range, in 1-MB steps
HOURS_PER_MONTH = 730  # 365 * 24 / 12: an average month
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
TARGET_UTILIZATION = 0.6  # headroom for bursts: queueing delay grows fast near saturation
ARCHES = ("x86_64", "arm64")


class CostError(ValueError):
    """An input the cost model cannot price (its message is one sentence for the learner)."""


@dataclass(frozen=True)
class Price:
    usd: float
    unit: str
    source: str


@dataclass(frozen=True)
class Instance:
    name: str
    usd_per_hour: float
    vcpus: int
    memory_gib: float
    arch: str
    note: str
    source: str


@dataclass(frozen=True)
class PriceSheet:
    """Every price this module uses, with where and when it was read."""

    region: str
    read_on: str
    lambda_requests: Price
    lambda_gb_second: dict[str, Price]
    free_requests: int
    free_gb_seconds: int
    free_tier_source: str
    instances: dict[str, Instance] = field(default_factory=dict)


LAMBDA_PRICING = "https://aws.amazon.com/lambda/pricing/"
EC2_PRICING = "https://aws.amazon.com/ec2/pricing/on-demand/"
# Both official pages draw their rate tables with a script, so the stored copies read here show no
# rates in them. Lambda's rates agree in its worked examples and in every transcription found;
# the EC2 rates come from third-party listings of the AWS Price List (labelled per instance).
PRICES = PriceSheet(
    region="us-east-1",
    read_on="2026-12-02",
    lambda_requests=Price(0.20, "per million requests", LAMBDA_PRICING),
    lambda_gb_second={
        "x86_64": Price(0.0000166667, "per GB-second, first tier", LAMBDA_PRICING),
        "arm64": Price(0.0000133334, "per GB-second, first tier",
                       f"{LAMBDA_PRICING} (Arm tab; figure from transcriptions of the page)"),
    },
    free_requests=1_000_000,
    free_gb_seconds=400_000,
    free_tier_source=LAMBDA_PRICING,
    instances={i.name: i for i in (
        Instance("c7i.large", 0.08925, 2, 4, "x86_64", "Intel, compute optimized",
                 f"{EC2_PRICING} (not shown in the stored page; AWS Price List figure as listed "
                 "by third parties, read 2026-10-05)"),
        Instance("c7g.large", 0.0725, 2, 4, "arm64", "Graviton3, compute optimized",
                 f"{EC2_PRICING} (not shown in the stored page; figure from third-party lists)"),
        Instance("t3.medium", 0.0416, 2, 4, "x86_64",
                 "burstable: sustained full load spends CPU credits, which cost extra",
                 f"{EC2_PRICING} (not shown in the stored page; figure from third-party lists)"),
    )},
)
DEFAULT_INSTANCE = "c7i.large"


# --- checks -------------------------------------------------------------------------------------


def _positive(name: str, value: float) -> float:
    if not value > 0 or math.isinf(value):  # also refuses NaN
        raise CostError(f"{name} must be a positive number, not {value:g}.")
    return float(value)


def _fraction(name: str, value: float, zero_ok: bool) -> float:
    low_ok = value >= 0 if zero_ok else value > 0
    if not (low_ok and value <= 1):
        bounds = "between 0 and 1" if zero_ok else "above 0 and at most 1"
        raise CostError(f"{name} must be {bounds}, not {value:g}.")
    return float(value)


def _memory(memory_mb: int) -> int:
    if not MIN_MB <= memory_mb <= MAX_MB or memory_mb != int(memory_mb):
        raise CostError(f"Lambda memory must be a whole number of MB from {MIN_MB} to {MAX_MB}, "
                        f"not {memory_mb:g}.")
    return int(memory_mb)


def _peak_ratio(peak_to_average: float) -> float:
    if not 1 <= peak_to_average < math.inf:
        raise CostError(f"The peak-to-average ratio must be 1 or more, not {peak_to_average:g}.")
    return float(peak_to_average)


def _arch(arch: str, prices: PriceSheet) -> Price:
    if arch not in prices.lambda_gb_second:
        raise CostError(f"Lambda architecture must be one of {', '.join(ARCHES)}, not {arch!r}.")
    return prices.lambda_gb_second[arch]


def instance(name: str, prices: PriceSheet = PRICES) -> Instance:
    """The priced instance called `name` (CostError naming the known ones otherwise)."""
    if name not in prices.instances:
        known = ", ".join(sorted(prices.instances))
        raise CostError(f"No price for instance {name!r}: choose one of {known}, "
                        "or give its hourly price with --usd-per-hour.")
    return prices.instances[name]


# --- Lambda -------------------------------------------------------------------------------------


def lambda_ms(ms_one_vcpu: float, memory_mb: int) -> float:
    """How long a CPU-bound, single-threaded request lasts on Lambda with `memory_mb` (the
    approximation in the module docstring): slower in proportion below 1,769 MB, no faster above."""
    ms, mb = _positive("The time per request", ms_one_vcpu), _memory(memory_mb)
    return ms * max(1.0, ONE_VCPU_MB / mb)


def billed_ms(ms: float) -> int:
    """Lambda bills duration in whole milliseconds, rounded up."""
    return math.ceil(round(ms, 6))  # round first: 100.00000000001 from float noise is 100 ms


def lambda_gb_seconds(ms_one_vcpu: float, memory_mb: int, init_ms: float = 0.0,
                      cold_fraction: float = 0.0) -> float:
    """GB-seconds billed per request on average: a warm request bills its duration, a cold one
    (`cold_fraction` of them) its duration plus `init_ms` of init, each rounded up to 1 ms."""
    ms = lambda_ms(ms_one_vcpu, memory_mb)
    if not 0 <= init_ms < math.inf:
        raise CostError(f"The init time must be zero or more milliseconds, not {init_ms:g}.")
    cold = _fraction("The cold-start fraction", cold_fraction, zero_ok=True)
    billed = (1 - cold) * billed_ms(ms) + cold * billed_ms(ms + init_ms)
    return memory_mb / 1024 * billed / 1000


def lambda_usd_per_million(ms_one_vcpu: float, memory_mb: int, arch: str = "x86_64",
                           init_ms: float = 0.0, cold_fraction: float = 0.0,
                           prices: PriceSheet = PRICES) -> float:
    """US dollars for one million requests: the request price plus the GB-seconds they bill,
    before any free tier."""
    gb_s = lambda_gb_seconds(ms_one_vcpu, memory_mb, init_ms, cold_fraction)
    return prices.lambda_requests.usd + 1e6 * gb_s * _arch(arch, prices).usd


def lambda_free_tier_usd(monthly_requests: float, gb_s_per_request: float, arch: str = "x86_64",
                         prices: PriceSheet = PRICES) -> float:
    """What the free tier takes off a month's bill, if this function has it to itself."""
    requests = min(_positive("The monthly requests", monthly_requests), prices.free_requests)
    gb_s = min(monthly_requests * gb_s_per_request, prices.free_gb_seconds)
    return requests / 1e6 * prices.lambda_requests.usd + gb_s * _arch(arch, prices).usd


# --- an always-on instance ----------------------------------------------------------------------


def instance_usd_per_million(usd_per_hour: float, throughput_per_s: float,
                             utilization: float = TARGET_UTILIZATION) -> float:
    """US dollars for one million requests on an instance that serves `throughput_per_s` flat out
    and is kept `utilization` busy."""
    served_per_hour = (_positive("The throughput", throughput_per_s) * 3600
                       * _fraction("The utilization", utilization, zero_ok=False))
    return _positive("The hourly price", usd_per_hour) / served_per_hour * 1e6


def instances_needed(peak_per_s: float, throughput_per_s: float,
                     target_utilization: float = TARGET_UTILIZATION) -> int:
    """Instances to keep running so that the peak load leaves each at `target_utilization`
    (always at least one: an always-on service never scales to zero)."""
    if not 0 <= peak_per_s < math.inf:
        raise CostError(f"The peak load must be zero or more requests per second, not "
                        f"{peak_per_s:g}.")
    per_instance = (_positive("The throughput", throughput_per_s)
                    * _fraction("The target utilization", target_utilization, zero_ok=False))
    return max(1, math.ceil(round(peak_per_s / per_instance, 9)))


def peak_per_s(monthly_requests: float, peak_to_average: float = 1.0) -> float:
    """The peak request rate of a month's traffic spread evenly, times `peak_to_average`."""
    ratio = _peak_ratio(peak_to_average)
    return _positive("The monthly requests", monthly_requests) / SECONDS_PER_MONTH * ratio


def instance_monthly_usd(monthly_requests: float, usd_per_hour: float, throughput_per_s: float,
                         target_utilization: float = TARGET_UTILIZATION,
                         peak_to_average: float = 1.0) -> tuple[float, int]:
    """A month's cost of enough always-on instances for the traffic, and how many that is."""
    n = instances_needed(peak_per_s(monthly_requests, peak_to_average), throughput_per_s,
                         target_utilization)
    return n * _positive("The hourly price", usd_per_hour) * HOURS_PER_MONTH, n


def one_instance_capacity(throughput_per_s: float, target_utilization: float = TARGET_UTILIZATION,
                          peak_to_average: float = 1.0) -> float:
    """The monthly requests one instance serves with its peak at `target_utilization`."""
    busy = (_positive("The throughput", throughput_per_s)
            * _fraction("The target utilization", target_utilization, zero_ok=False))
    return busy * SECONDS_PER_MONTH / _peak_ratio(peak_to_average)


def break_even_requests(lambda_per_million: float, usd_per_hour: float, throughput_per_s: float,
                        target_utilization: float = TARGET_UTILIZATION,
                        peak_to_average: float = 1.0) -> float | None:
    """The monthly requests at which Lambda's bill reaches one always-on instance's, or None if one
    instance fills up first (then Lambda is cheaper at every volume).

    Above it one instance is cheaper until it is full. Each further instance adds a step that the
    straight Lambda line may cross again (Lambda is cheaper just after a step, until the new
    instance fills): past the first crossing, compare the two at the volume you expect.
    """
    one_month = _positive("The hourly price", usd_per_hour) * HOURS_PER_MONTH
    volume = one_month / _positive("Lambda's price per million", lambda_per_million) * 1e6
    capacity = one_instance_capacity(throughput_per_s, target_utilization, peak_to_average)
    return volume if volume <= capacity else None


# --- one comparison -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One comparison: a measured request, the Lambda set-ups to price, and the instance. Every
    value is checked when it is made (CostError with one sentence)."""

    ms_one_vcpu: float
    throughput_per_s: float
    memory_mb: tuple[int, ...] = (1024, ONE_VCPU_MB)
    arch: str = "x86_64"
    instance: Instance = PRICES.instances[DEFAULT_INSTANCE]
    target_utilization: float = TARGET_UTILIZATION
    peak_to_average: float = 1.0
    init_ms: float = 0.0
    cold_fraction: float = 0.0
    prices: PriceSheet = PRICES

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory_mb", tuple(_memory(mb) for mb in self.memory_mb))
        if not self.memory_mb:
            raise CostError("Give at least one Lambda memory size.")
        for mb in self.memory_mb:
            lambda_usd_per_million(self.ms_one_vcpu, mb, self.arch, self.init_ms,
                                   self.cold_fraction, self.prices)
        instance_usd_per_million(self.instance.usd_per_hour, self.throughput_per_s,
                                 self.target_utilization)
        _peak_ratio(self.peak_to_average)

    def lambda_per_million(self, memory_mb: int) -> float:
        return lambda_usd_per_million(self.ms_one_vcpu, memory_mb, self.arch, self.init_ms,
                                      self.cold_fraction, self.prices)

    def lambda_monthly(self, memory_mb: int, monthly_requests: float) -> float:
        return _positive("The monthly requests", monthly_requests) / 1e6 \
            * self.lambda_per_million(memory_mb)

    def free_tier(self, memory_mb: int, monthly_requests: float) -> float:
        gb_s = lambda_gb_seconds(self.ms_one_vcpu, memory_mb, self.init_ms, self.cold_fraction)
        return lambda_free_tier_usd(monthly_requests, gb_s, self.arch, self.prices)

    def instance_monthly(self, monthly_requests: float) -> tuple[float, int]:
        return instance_monthly_usd(monthly_requests, self.instance.usd_per_hour,
                                    self.throughput_per_s, self.target_utilization,
                                    self.peak_to_average)

    def capacity(self) -> float:
        return one_instance_capacity(self.throughput_per_s, self.target_utilization,
                                     self.peak_to_average)

    def break_even(self, memory_mb: int) -> float | None:
        return break_even_requests(self.lambda_per_million(memory_mb), self.instance.usd_per_hour,
                                   self.throughput_per_s, self.target_utilization,
                                   self.peak_to_average)


# --- reporting ----------------------------------------------------------------------------------


def usd(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def volume(requests: float) -> str:
    """1.5e8 -> '150M', 2e9 -> '2B', 5e4 -> '50k'."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if requests >= size:
            return f"{requests / size:.4g}{suffix}"
    return f"{requests:.4g}"


def lambda_label(s: Scenario, memory_mb: int) -> str:
    return f"Lambda {memory_mb} MB {s.arch}"


LABEL, CELL = 28, 14  # column widths of the text tables


def row(label: str, cells: Sequence[str]) -> str:
    return f"  {label:<{LABEL}}" + "".join(f"{c:>{CELL}}" for c in cells)


def per_million_lines(s: Scenario) -> list[str]:
    lines = [row("per million requests", ["duration", "billed", "US$"])]
    for mb in s.memory_mb:
        ms = lambda_ms(s.ms_one_vcpu, mb)
        lines.append(row(lambda_label(s, mb), [f"{ms:.1f} ms", f"{billed_ms(ms)} ms",
                                               f"{s.lambda_per_million(mb):.4f}"]))
    per_m = instance_usd_per_million(s.instance.usd_per_hour, s.throughput_per_s,
                                     s.target_utilization)
    lines.append(row(f"{s.instance.name}, {s.target_utilization:.0%} busy", ["", "",
                                                                             f"{per_m:.4f}"]))
    return lines


def monthly_lines(s: Scenario, monthly_requests: Sequence[float], free_tier: bool) -> list[str]:
    lines = [row("a month of", [f"{volume(r)} req" for r in monthly_requests])]
    for mb in s.memory_mb:
        lines.append(row(lambda_label(s, mb),
                         [usd(s.lambda_monthly(mb, r)) for r in monthly_requests]))
        if free_tier:
            lines.append(row("  free tier, if unused",
                             [usd(-s.free_tier(mb, r)) for r in monthly_requests]))
    bills = [s.instance_monthly(r) for r in monthly_requests]
    lines.append(row(f"{s.instance.name} (how many)", [f"{usd(c)} ({n})" for c, n in bills]))
    if free_tier:
        lines.append(f"  The free tier ({volume(s.prices.free_requests)} requests and "
                     f"{s.prices.free_gb_seconds:,} GB-s a month) is optional and the account's:")
        lines.append("  all its functions share it, so it is not taken off the figures above.")
    return lines


def break_even_lines(s: Scenario) -> list[str]:
    lines = []
    one = usd(s.instance.usd_per_hour * HOURS_PER_MONTH)
    for mb in s.memory_mb:
        at = s.break_even(mb)
        if at is None:
            lines.append(f"break-even with {lambda_label(s, mb)}: none, Lambda is cheaper at "
                         f"every volume (one {s.instance.name} fills up first).")
        else:
            lines.append(f"break-even with {lambda_label(s, mb)}: {volume(at)} requests a month "
                         f"({at / SECONDS_PER_MONTH:.1f}/s on average), where one "
                         f"{s.instance.name} costs the same ({one}); above it the instance is "
                         f"cheaper until it is full at {volume(s.capacity())}.")
    return lines


def report(s: Scenario, monthly_requests: Sequence[float], free_tier: bool = True) -> str:
    """The whole comparison as text: prices per million, monthly bills, break-even."""
    head = [f"{s.prices.region} on-demand prices read {s.prices.read_on}; they change: re-check "
            "them at the sources in lab_code/measuring/costs.py.",
            f"{s.ms_one_vcpu:g} ms per request on one vCPU; {s.instance.name} "
            f"(${s.instance.usd_per_hour:g}/h, {s.instance.vcpus} vCPUs) serves "
            f"{s.throughput_per_s:g} requests/s flat out."]
    if s.cold_fraction:
        head.append(f"{s.cold_fraction:.2%} of Lambda requests start cold and bill "
                    f"{s.init_ms:g} ms of init on top.")
    if s.peak_to_average != 1:
        head.append(f"Peak traffic is {s.peak_to_average:g} times the month's average.")
    head = [w for line in head for w in textwrap.wrap(line, 100, subsequent_indent="  ")]
    ends = [w for line in break_even_lines(s)
            for w in textwrap.wrap(line, 100, subsequent_indent="  ")]
    parts = [head, per_million_lines(s), monthly_lines(s, monthly_requests, free_tier), ends]
    return "\n\n".join("\n".join(p) for p in parts)


def plot(s: Scenario, max_instances: int = 3, title: str = ""):
    """Monthly cost against monthly requests (log x): a straight line for each Lambda memory size,
    a step for 1..`max_instances` always-on instances, each break-even marked. Returns the
    matplotlib Figure."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cap, month = s.capacity(), s.instance.usd_per_hour * HOURS_PER_MONTH
    low = min(1e5, cap / 100)
    high = cap * max_instances
    fig = Figure(figsize=(9, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    xs = np.geomspace(low, high, 200)
    for mb in s.memory_mb:
        per_m = s.lambda_per_million(mb)
        ax.plot(xs, xs / 1e6 * per_m, label=f"{lambda_label(s, mb)} (${per_m:.3f} per million)")
    step_x = [low] + [x for n in range(1, max_instances) for x in (n * cap, n * cap)] + [high]
    step_y = [y for n in range(1, max_instances + 1) for y in (n * month, n * month)]
    ax.plot(step_x, step_y, color="black",
            label=f"{s.instance.name} x1..{max_instances} (${s.instance.usd_per_hour:g}/h each, "
                  f"{s.target_utilization:.0%} busy at peak)")
    for mb in s.memory_mb:
        at = s.break_even(mb)
        if at is not None:
            ax.plot([at], [month], "o", color="red",
                    label=f"break-even, {mb} MB: {volume(at)} a month")
            ax.axvline(at, color="red", linestyle=":", linewidth=1)
    ax.set(xscale="log", xlabel="requests per month", ylabel="US$ per month",
           title=title or f"{s.ms_one_vcpu:g} ms per request, {s.throughput_per_s:g} requests/s "
                          f"per instance ({s.prices.region}, prices of {s.prices.read_on})")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    return fig


# --- command line -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.measuring costs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ms-per-request", type=float, required=True, metavar="MS",
                        help="time one request takes on one vCPU (measure it, e.g. lesson 07)")
    parser.add_argument("--throughput", type=float, required=True, metavar="PER_S",
                        help="requests per second one instance serves flat out (measure it)")
    parser.add_argument("--memory-mb", type=float, nargs="+", default=[1024, ONE_VCPU_MB],
                        metavar="MB", help=f"Lambda memory sizes to price ({MIN_MB}-{MAX_MB}; "
                                           f"default: 1024 {ONE_VCPU_MB})")
    parser.add_argument("--arch", choices=ARCHES, default="x86_64",
                        help="Lambda architecture (default: x86_64)")
    parser.add_argument("--instance", default=DEFAULT_INSTANCE,
                        help=f"always-on instance: {', '.join(sorted(PRICES.instances))} "
                             f"(default: {DEFAULT_INSTANCE})")
    parser.add_argument("--usd-per-hour", type=float, default=None, metavar="USD",
                        help="the instance's hourly price, for one not listed or a newer price")
    parser.add_argument("--monthly-requests", type=float, nargs="+", default=[1e6, 1e7, 1e8],
                        metavar="N", help="monthly volumes to price (default: 1e6 1e7 1e8)")
    parser.add_argument("--utilization", type=float, default=TARGET_UTILIZATION, metavar="F",
                        help="how busy an instance may run at peak, 0-1 "
                             f"(default: {TARGET_UTILIZATION})")
    parser.add_argument("--peak-to-average", type=float, default=1.0, metavar="X",
                        help="peak traffic over the month's average (default: 1, flat)")
    parser.add_argument("--init-ms", type=float, default=0.0, metavar="MS",
                        help="init time a cold start bills (default: 0)")
    parser.add_argument("--cold-fraction", type=float, default=0.0, metavar="F",
                        help="share of Lambda requests that start cold, 0-1 (default: 0)")
    parser.add_argument("--no-free-tier", action="store_true",
                        help="leave out the free-tier lines")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="also save the cost plot to this file")
    return parser


def scenario_from(args: argparse.Namespace) -> Scenario:
    """The Scenario the command line describes (CostError for a bad value)."""
    if args.usd_per_hour is None:
        chosen = instance(args.instance)
    else:
        listed = PRICES.instances.get(args.instance)
        chosen = Instance(args.instance, _positive("The hourly price", args.usd_per_hour),
                          listed.vcpus if listed else 2, listed.memory_gib if listed else 0,
                          listed.arch if listed else "?", "price given on the command line",
                          "command line")
    for r in args.monthly_requests:
        _positive("The monthly requests", r)
    return Scenario(args.ms_per_request, args.throughput, tuple(args.memory_mb), args.arch,
                    chosen, args.utilization, args.peak_to_average, args.init_ms,
                    args.cold_fraction)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        s = scenario_from(args)
    except CostError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report(s, args.monthly_requests, free_tier=not args.no_free_tier))
    if args.plot:
        try:
            plot(s).savefig(args.plot, dpi=100)
        except OSError as err:
            print(f"error: could not write {args.plot} ({err.strerror}): choose another path.",
                  file=sys.stderr)
            return 1
        print(f"\nwrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
