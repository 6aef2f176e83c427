"""Lesson 07's price model: Lambda bills and instance bills worked by hand, the fractional-vCPU
rule, the break-even where the two bills meet, the command line and the plot."""

from __future__ import annotations

import math

import pytest

from lab_code.measuring import costs
from lab_code.measuring.costs import CostError, Scenario

X86 = costs.PRICES.lambda_gb_second["x86_64"].usd
ARM = costs.PRICES.lambda_gb_second["arm64"].usd
REQUESTS = costs.PRICES.lambda_requests.usd
C7I = costs.PRICES.instances["c7i.large"]


# --- the prices themselves ----------------------------------------------------------------------


def test_every_price_says_where_and_when_it_was_read():
    sheet = costs.PRICES
    assert sheet.region == "us-east-1" and len(sheet.read_on) == 10  # YYYY-MM-DD
    prices = [sheet.lambda_requests, *sheet.lambda_gb_second.values()]
    assert set(sheet.lambda_gb_second) == set(costs.ARCHES)
    for price in prices:
        assert price.usd > 0 and price.source.startswith("https://aws.amazon.com/")
    for name, inst in sheet.instances.items():
        assert inst.name == name and inst.usd_per_hour > 0 and inst.vcpus == 2
        assert inst.source.startswith("https://aws.amazon.com/ec2/pricing/")
    assert sheet.free_tier_source.startswith("https://")
    assert "re-check" in costs.__doc__ and "approximation" in costs.__doc__


# --- Lambda, by hand ----------------------------------------------------------------------------


def test_a_million_requests_at_128_mb_for_100_ms_is_the_price_formula_by_hand():
    ms_one_vcpu = 100 * 128 / costs.ONE_VCPU_MB  # lasts 100 ms at 128 MB (floats: 100.000...01)
    assert costs.lambda_ms(ms_one_vcpu, 128) == pytest.approx(100)
    by_hand = REQUESTS + 1_000_000 * (128 / 1024) * 0.100 * X86  # $0.20 + 12,500 GB-s
    assert by_hand == pytest.approx(0.40833, abs=1e-5)
    assert costs.lambda_usd_per_million(ms_one_vcpu, 128) == pytest.approx(by_hand, rel=1e-12)


def test_arm64_uses_its_own_rate_and_duration_rounds_up_to_whole_milliseconds():
    assert costs.lambda_usd_per_million(10, 2048, "arm64") == pytest.approx(
        REQUESTS + 1e6 * 2 * 0.010 * ARM, rel=1e-12)
    assert ARM < X86
    assert [costs.billed_ms(ms) for ms in (6.0, 6.01, 6.5, 7.0)] == [6, 7, 7, 7]
    noisy = costs.lambda_ms(59 * 128 / costs.ONE_VCPU_MB, 128)  # 59.00000000000001 in floats
    assert noisy != 59 and costs.billed_ms(noisy) == 59  # float noise is not a millisecond
    # 6.5 ms at 1,769 MB bills 7 ms: what the lesson's numbers use
    assert costs.lambda_usd_per_million(6.5, 1769) == pytest.approx(
        REQUESTS + 1e6 * 1769 / 1024 * 0.007 * X86, rel=1e-12)


def test_below_1769_mb_a_request_slows_in_proportion_and_above_it_is_no_faster():
    assert costs.lambda_ms(10, 1769) == 10
    assert costs.lambda_ms(10, 3538) == 10 and costs.lambda_ms(10, 10_240) == 10
    assert costs.lambda_ms(10, 128) == pytest.approx(10 * 1769 / 128)
    assert costs.lambda_ms(10, 512) == pytest.approx(2 * costs.lambda_ms(10, 1024))
    # so below one vCPU the GB-seconds stay the same (up to the 1-ms rounding) ...
    low = [costs.lambda_gb_seconds(100, mb) for mb in (256, 512, 1024)]
    assert max(low) / min(low) == pytest.approx(1, abs=0.01)
    # ... and above it they grow with the memory you pay for but cannot use
    one_vcpu = costs.lambda_gb_seconds(100, 1769)
    assert costs.lambda_gb_seconds(100, 3538) == pytest.approx(2 * one_vcpu)


def test_cold_starts_bill_their_init_and_only_for_the_cold_share():
    warm = costs.lambda_gb_seconds(10, 2048)  # 2 GB for 10 ms
    cold = costs.lambda_gb_seconds(10, 2048, init_ms=1500, cold_fraction=0.01)
    assert warm == pytest.approx(2 * 0.010)
    assert cold == pytest.approx(2 * (0.99 * 0.010 + 0.01 * 1.510))
    assert costs.lambda_gb_seconds(10, 2048, init_ms=1500, cold_fraction=0) == warm


def test_the_free_tier_is_a_separate_credit_and_capped():
    s = Scenario(6.5, 230, memory_mb=(1024,))
    # 6.5 ms on one vCPU bills 12 ms at 1,024 MB: 12,000 GB-s for a million, never free here
    assert s.lambda_monthly(1024, 1e6) == pytest.approx(REQUESTS + 12_000 * X86)
    assert s.free_tier(1024, 1e6) == pytest.approx(s.lambda_monthly(1024, 1e6))  # all of it
    capped = 1 * REQUESTS + 400_000 * X86  # 1M requests and 400,000 GB-s, no more
    assert s.free_tier(1024, 1e8) == pytest.approx(capped)
    assert s.lambda_monthly(1024, 1e8) == pytest.approx(100 * s.lambda_per_million(1024))


# --- the instance, by hand ----------------------------------------------------------------------


def test_instance_cost_per_million_and_instances_needed_by_hand():
    assert costs.instance_usd_per_million(0.08925, 230, 0.6) == pytest.approx(
        0.08925 / (230 * 3600 * 0.6) * 1e6)
    assert costs.instance_usd_per_million(1.0, 1.0, 1.0) == pytest.approx(1e6 / 3600)
    assert costs.instances_needed(0, 100, 0.5) == 1  # an always-on service never reaches zero
    assert costs.instances_needed(50, 100, 0.5) == 1
    assert costs.instances_needed(50.001, 100, 0.5) == 2
    assert costs.instances_needed(0.7 * 230 * 3, 230, 0.7) == 3  # exactly full: no fourth
    cost, n = costs.instance_monthly_usd(3 * 230 * 0.6 * costs.SECONDS_PER_MONTH, 0.08925, 230)
    assert n == 3 and cost == pytest.approx(3 * 0.08925 * 730)
    cost, n = costs.instance_monthly_usd(1e6, 0.08925, 230, peak_to_average=400)
    assert n == 2  # 1M a month is 0.38/s on average; 400 times that (152/s) needs two at 60%


# --- break-even ---------------------------------------------------------------------------------


@pytest.mark.parametrize("memory_mb", [1024, 1769, 4096])
def test_at_the_break_even_both_bills_are_equal_and_they_swap_either_side(memory_mb):
    s = Scenario(6.5, 230, memory_mb=(memory_mb,))
    at = s.break_even(memory_mb)
    assert at is not None and at < s.capacity()
    instance_bill, n = s.instance_monthly(at)
    assert n == 1 and s.lambda_monthly(memory_mb, at) == pytest.approx(instance_bill, rel=1e-9)
    assert s.lambda_monthly(memory_mb, 0.9 * at) < s.instance_monthly(0.9 * at)[0]
    assert s.lambda_monthly(memory_mb, 1.1 * at) > s.instance_monthly(1.1 * at)[0]


def test_no_break_even_when_one_instance_fills_up_before_lambda_catches_up():
    # a slow instance: at full load it costs more per request than Lambda does
    s = Scenario(6.5, 5, memory_mb=(1769,))
    assert s.break_even(1769) is None
    for volume in (1e5, s.capacity(), 1.5 * s.capacity(), 10 * s.capacity()):
        assert s.lambda_monthly(1769, volume) < s.instance_monthly(volume)[0]


def test_the_lessons_example_breaks_even_near_160_million_a_month():
    s = Scenario(6.5, 230)
    by_hand = 0.08925 * 730 / costs.lambda_usd_per_million(6.5, 1769) * 1e6
    assert s.break_even(1769) == pytest.approx(by_hand)
    assert 1.5e8 < by_hand < 1.7e8


def test_peaks_four_times_the_average_by_hand():
    """At a peak of 4x the average, one instance (100/s flat out, 60% busy at peak: 60/s)
    carries a quarter of the month it would carry flat: 60 * 2,628,000 s / 4 = 39.42M."""
    month_s = 730 * 3600
    assert costs.one_instance_capacity(100, 0.6, peak_to_average=4) == pytest.approx(
        60 * month_s / 4) == pytest.approx(39_420_000)
    assert costs.peak_per_s(100e6, peak_to_average=4) == pytest.approx(100e6 / month_s * 4)
    # 100M a month peaks at 152.2/s: three instances at 60/s each, where a flat month needs one
    assert costs.instance_monthly_usd(100e6, 0.1, 100, 0.6, peak_to_average=4) == (
        pytest.approx(3 * 0.1 * 730), 3)
    assert costs.instance_monthly_usd(100e6, 0.1, 100, 0.6)[1] == 1
    # Lambda at $2 a million matches one $0.10/h instance ($73 a month) at 36.5M a month, within
    # the 39.42M it carries at 4x peaks; at 5x peaks it carries 31.536M and fills up first
    assert costs.break_even_requests(2.0, 0.1, 100, 0.6, peak_to_average=4) == pytest.approx(
        36.5e6)
    assert costs.break_even_requests(2.0, 0.1, 100, 0.6, peak_to_average=5) is None
    assert costs.one_instance_capacity(100, 0.6, peak_to_average=5) == pytest.approx(31_536_000)


def test_a_scenario_and_the_cli_carry_the_peak_ratio(capsys):
    flat, peaky = Scenario(6.5, 230), Scenario(6.5, 230, peak_to_average=3)
    assert peaky.capacity() == pytest.approx(flat.capacity() / 3)
    assert peaky.capacity() == pytest.approx(230 * 0.6 * 730 * 3600 / 3)  # 120.9M a month
    assert peaky.instance_monthly(150e6) == (pytest.approx(2 * C7I.usd_per_hour * 730), 2)
    code, out, _ = run(capsys, "--ms-per-request", "6.5", "--throughput", "230",
                       "--memory-mb", "1769", "--peak-to-average", "3")
    assert code == 0 and "Peak traffic is 3 times the month's average." in out
    # the break-even (~162M, test_the_lessons_example...) lies beyond the 120.9M it carries
    assert "none, Lambda is cheaper at every volume" in out
    code, out, _ = run(capsys, "--ms-per-request", "6.5", "--throughput", "230",
                       "--memory-mb", "1769", "--peak-to-average", "1.2")
    assert code == 0 and "until it is full at 302.2M" in out  # 362.664M / 1.2


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: Scenario(6.5, 0),
    lambda: Scenario(-1, 230),
    lambda: Scenario(6.5, 230, memory_mb=(64,)),
    lambda: Scenario(6.5, 230, memory_mb=(20_000,)),
    lambda: Scenario(6.5, 230, memory_mb=()),
    lambda: Scenario(6.5, 230, arch="sparc"),
    lambda: Scenario(6.5, 230, target_utilization=1.5),
    lambda: Scenario(6.5, 230, target_utilization=0),
    lambda: Scenario(6.5, 230, peak_to_average=0.5),
    lambda: Scenario(6.5, 230, cold_fraction=2),
    lambda: Scenario(6.5, 230, init_ms=-5),
    lambda: Scenario(6.5, 230, init_ms=float("nan"), cold_fraction=0.1),
    lambda: costs.instances_needed(float("nan"), 230),
    lambda: Scenario(float("nan"), 230),
    lambda: costs.instance("m99.huge"),
])
def test_bad_input_is_one_sentence(make):
    with pytest.raises(CostError) as err:
        make()
    message = str(err.value)
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message


# --- command line -------------------------------------------------------------------------------


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = costs.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_the_table_and_the_break_even(capsys):
    code, out, err = run(capsys, "--ms-per-request", "6.5", "--throughput", "230",
                         "--memory-mb", "1769", "--monthly-requests", "1e6", "1e7", "1e8")
    assert code == 0 and err == ""
    assert "us-east-1" in out and costs.PRICES.read_on in out
    per_million = f"{costs.lambda_usd_per_million(6.5, 1769):.4f}"
    assert per_million in out and "6.5 ms" in out and "7 ms" in out
    assert "$40.15" in out and "$65.15 (1)" in out  # 100M on Lambda; one c7i.large a month
    assert "free tier, if unused" in out
    at = costs.volume(Scenario(6.5, 230, memory_mb=(1769,)).break_even(1769))
    assert f"break-even with Lambda 1769 MB x86_64: {at} requests a month" in out


def test_cli_other_instance_price_and_no_free_tier(capsys):
    code, out, _ = run(capsys, "--ms-per-request", "6.5", "--throughput", "230",
                       "--instance", "m7g.large", "--usd-per-hour", "0.0816", "--no-free-tier",
                       "--arch", "arm64")
    assert code == 0 and "m7g.large ($0.0816/h" in out and "arm64" in out
    assert "free tier" not in out
    code, out, _ = run(capsys, "--ms-per-request", "6.5", "--throughput", "230",
                       "--instance", "c7g.large")
    assert code == 0 and "$52.92 (1)" in out  # 0.0725 * 730


@pytest.mark.parametrize("bad", [
    ["--throughput", "0"], ["--throughput", "-3"], ["--ms-per-request", "-1"],
    ["--memory-mb", "64"], ["--utilization", "1.5"], ["--instance", "m99.huge"],
    ["--monthly-requests", "0"], ["--cold-fraction", "-0.1"],
])
def test_cli_bad_input_is_one_error_sentence_and_exit_2(capsys, bad):
    argv = {"--ms-per-request": "6.5", "--throughput": "230"}
    argv.update(dict(zip(bad[::2], bad[1::2], strict=True)))
    code, out, err = run(capsys, *[x for kv in argv.items() for x in kv])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith(".")


def test_cli_help_and_plot_file(capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        costs.main(["--help"])
    assert done.value.code == 0 and "--ms-per-request" in capsys.readouterr().out
    png = tmp_path / "costs.png"
    code, out, _ = run(capsys, "--ms-per-request", "6.5", "--throughput", "230", "--plot",
                       str(png))
    assert code == 0 and f"wrote {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the plot -----------------------------------------------------------------------------------


def test_plot_draws_a_line_per_memory_size_a_step_and_the_break_even():
    s = Scenario(6.5, 230, memory_mb=(1024, 1769))
    fig = costs.plot(s, max_instances=3)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    lines = {ln.get_label(): ln for ln in ax.lines if not ln.get_label().startswith("_")}
    for mb in (1024, 1769):
        (line,) = [ln for label, ln in lines.items() if label.startswith(f"Lambda {mb} MB")]
        x, y = line.get_xdata(), line.get_ydata()
        assert y[-1] / x[-1] * 1e6 == pytest.approx(s.lambda_per_million(mb))
    (step,) = [ln for label, ln in lines.items() if label.startswith("c7i.large x1..3")]
    month = C7I.usd_per_hour * 730
    assert sorted(set(step.get_ydata())) == pytest.approx([month, 2 * month, 3 * month])
    assert max(step.get_xdata()) == pytest.approx(3 * s.capacity())
    marks = [ln for label, ln in lines.items() if label.startswith("break-even")]
    assert len(marks) == 2
    for mb, mark in zip((1024, 1769), marks, strict=True):
        assert mark.get_xdata()[0] == pytest.approx(s.break_even(mb))
        assert mark.get_ydata()[0] == pytest.approx(month)
    assert not math.isnan(ax.get_ylim()[1])
