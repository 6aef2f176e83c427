# %% [context]
import json
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import lab_code
from lab_code.measuring import costs, loadgen, stages
from lab_code import preprocess
from lab_code.serving.ports import free_port
from lab_code.serving.processes import start_background, stop_background
from lab_code.recognizer import TextRecognizer

ROOT = Path(lab_code.__file__).resolve().parents[1]
bench = json.loads((ROOT / "profiling" / "results" / "fast_and_cheap" / "results.json")
                   .read_text())
torch.set_num_threads(1)
fast = TextRecognizer()
widths = np.random.default_rng(0).integers(60, 900, size=150)

# %% [exercise 1]
def stage_that_grows(clients=32, seconds=3.0):
    """Start one worker, break its requests down with 1 and with `clients` clients, and return
    the stage whose mean time grew the most, with both breakdowns."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = Path(tempfile.mkdtemp(prefix="lesson07-ex1-")) / "service.log"
    service = start_background(["lab_code.serving", "serverless", "--port", str(port), "--workers", "1"],
                               url + "health", log)
    try:
        bodies = loadgen.realworld_bodies(family="screenshot")
        rows = {}
        for n in (1, clients):
            result = loadgen.run_load(url, bodies, clients=n, duration_s=seconds, warmup_s=0.5)
            rows[f"{n} clients"] = stages.breakdown(result.stages_ms, result.latency_ms["p50"])
    finally:
        stop_background(service)  # even when the load fails: nothing left running
    alone, busy = rows.values()
    grew = max(alone, key=lambda part: busy[part] - alone[part])
    return grew, rows


grew, rows = stage_that_grows()
print("grows the most:", grew)
stages.plot(rows)
# Expect "queue": one model thread serves one request at a time, so with 32 clients each request
# waits for the ~31 ahead of it. The work per request (decode, lines, model) barely moves.
assert grew == "queue"

# %% [exercise 2]
def time_per_step(steps=(1, 16, 64, 256, 512), rounds=2):
    """Milliseconds per line of `fast.model` on the random `widths`, for each rounding step."""
    def run(step):
        start = time.perf_counter()
        with torch.inference_mode():
            for w in widths:
                line = np.zeros((preprocess.HEIGHT, int(w)), np.float32)
                fast.model(preprocess.batch([line], multiple_of=step))
        return (time.perf_counter() - start) * 1000 / len(widths)

    times = {step: [] for step in steps}
    for _ in range(rounds):  # in turns: a busy moment slows every step alike
        for step in steps:
            times[step].append(run(step))
    return {step: min(ms) for step, ms in times.items()}


per_step = time_per_step()
for step, ms in per_step.items():
    print(f"multiple of {step:>3}: {ms:.2f} ms per line")
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(list(per_step), list(per_step.values()), "o-")
ax.set_xscale("log", base=2)
ax.set_xlabel("widths rounded up to a multiple of")
ax.set_ylabel("ms per line")
# Coarser steps mean fewer shapes (fewer slow first calls) but more blank columns to read: a
# 60-pixel line rounded to 512 costs as much as a 512-pixel one. The sweet spot sits where a
# shape's first-call cost, spread over the calls that reuse it, meets the extra columns' cost.
assert per_step[64] < per_step[1]

# %% [exercise 3]
def break_even_both_ways(memory_mb=2048, arch="arm64", instance="c7g.large"):
    """Break-even monthly volumes of Lambda vs one instance, as measured and with a model twice
    as fast (half the time per request, twice the throughput)."""
    shipped = next(r for r in bench["configs"]["workers"]["runs"] if r["clients"] == 64)
    one = "onnx" if "onnx" in bench["configs"] else "frozen"  # one worker, the runtime shipped
    alone = next(r for r in bench["configs"][one]["runs"] if r["clients"] == 1)
    ms, throughput = alone["latency_ms"]["p50"], shipped["throughput_per_s"]
    out = {}
    for name, factor in (("measured", 1.0), ("twice as fast", 2.0)):
        scenario = costs.Scenario(ms_one_vcpu=ms / factor, throughput_per_s=throughput * factor,
                                  memory_mb=(memory_mb,), arch=arch,
                                  instance=costs.instance(instance))
        out[name] = {"lambda_per_million": scenario.lambda_per_million(memory_mb),
                     "break_even_per_month": scenario.break_even(memory_mb)}
    return out


both = break_even_both_ways()
for name, record in both.items():
    be = record["break_even_per_month"]
    print(f"{name:>14}: Lambda ${record['lambda_per_million']:.3f} per million, break-even at "
          + (f"{be / 1e6:,.0f}M requests a month" if be else "none (one instance fills first)"))
# A faster model cuts Lambda's GB-seconds in half, but not its request fee ($0.20 per million),
# which is a large part of the bill for a request this short: Lambda's cost falls by less than
# half. One instance's price stays put while its capacity doubles. The break-even moves up:
# Lambda stays the cheaper choice for more traffic. Lambda's gain shows in every bill from the
# first request; the instance's shows only once you would otherwise need a second one.
