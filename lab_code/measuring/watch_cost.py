"""What watching costs: the service's throughput at 64 clients with its metrics and prediction log
on, against the same service with both off, measured side by side in alternating rounds.

    python -m lab_code.measuring watch_cost --rounds 10 --duration 8 --json watch_cost.json

It reports two figures per round: the ratio of requests per second, and the ratio of the
service's own CPU time per answer (its processes' user + system time, from /proc), which a busy
neighbour disturbs far less than throughput.

Both services run at once (two workers each): one with `--watch-db FILE` and /metrics (scraped
every second, as the replayed day's Prometheus does), one with `--watch-db off --no-metrics`. Each
round loads one and then the other, in alternating order, with wrk (C, so the
client takes little of the CPU it measures; Debian's `wrk` package), or with
lab_code.measuring.loadgen where wrk is missing. The requests cycle through the real-world set's
single lines, so no cache and no single input shape flatters either side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from lab_code.measuring.cpu_time import group_cpu_s
from lab_code.measuring.loadgen import realworld_bodies, run_load
from lab_code.serving import ports, processes
from lab_code.serving.runner import wait_for_workers

WRK_SCRIPT = """
local bodies, n = {}, 0
init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  n = math.random(#bodies)
end
request = function()
  n = n % #bodies + 1
  return wrk.format("POST", "/", {["Content-Type"] = "application/json"}, bodies[n])
end
"""
CONFIGS = {"on": ["--watch-db", "{db}"], "off": ["--watch-db", "off", "--no-metrics"]}


def wrk(url: str, bodies_file: Path, clients: int, duration_s: float) -> dict[str, Any]:
    """Requests per second (non-2xx excluded) and latency percentiles from one wrk run."""
    script = bodies_file.with_suffix(".lua")
    script.write_text(WRK_SCRIPT)
    done = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{duration_s:.0f}s", "--latency",
                           "--timeout", "30s", "-s", str(script), url, "--", str(bodies_file)],
                          capture_output=True, text=True, timeout=duration_s + 60)
    out = done.stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad_n = int(bad.group(1)) if bad else 0
    seconds = float(re.search(r"requests in ([\d.]+)(m?s)", out).group(1))
    unit = re.search(r"requests in [\d.]+(m?s)", out).group(1)
    seconds = seconds / 1000 if unit == "ms" else seconds
    lat = {p: _ms(re.search(rf"^\s+{p}%\s+([\d.]+\w+)", out, re.M).group(1))
           for p in ("50", "90", "99")}
    return {"throughput_per_s": round((total - bad_n) / seconds, 2), "requests": total,
            "non_2xx": bad_n, "latency_ms": lat}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return round(float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit], 2)


def load_once(url: str, pgid: int, folder: Path, bodies: list[bytes], clients: int,
              duration_s: float, use_wrk: bool) -> dict[str, Any]:
    """One measured run against the service at `url` (process group `pgid`): throughput,
    latency, and the service's CPU time per answer."""
    cpu_before = group_cpu_s(pgid)
    if use_wrk:
        file = folder / "bodies.jsonl"
        if not file.exists():
            file.write_bytes(b"\n".join(bodies) + b"\n")
        result = wrk(url, file, clients, duration_s)
    else:
        load = run_load(url, bodies, clients=clients, duration_s=duration_s, warmup_s=0)
        result = {"throughput_per_s": load.throughput_per_s, "requests": load.requests,
                  "non_2xx": sum(v for k, v in load.statuses.items() if k != "200"),
                  "latency_ms": load.latency_ms}
    cpu = group_cpu_s(pgid) - cpu_before
    answered = result["requests"] - result["non_2xx"]
    result["service_cpu_s"] = round(cpu, 2)
    result["cpu_ms_per_answer"] = round(cpu * 1000 / max(answered, 1), 3)
    return result


def start_service(name: str, folder: Path):
    """The service with watching on (a SQLite log, /metrics) or off, two workers."""
    port = ports.free_port()
    db = folder / f"{name}.sqlite"
    args = ["lab_code.serving", "serverless", "--port", str(port), "--workers", "2",
            *[a.format(db=db) for a in CONFIGS[name]]]
    log = folder / f"{name}.log"
    service = processes.start_background(args, f"http://127.0.0.1:{port}/health", log)
    wait_for_workers(log, 2)
    return service, f"http://127.0.0.1:{port}/", db


def _scrape(url: str, stop: threading.Event) -> None:
    import requests

    while not stop.wait(1.0):
        try:
            requests.get(url, timeout=5)
        except requests.RequestException:
            pass


def component_costs(images_n: int = 30, repeats: int = 3) -> dict[str, float]:
    """CPU milliseconds per picture, in this process, of what a prediction costs anyway (decode
    and split into lines, the model) and of what watching adds to it (input statistics, the
    metrics' updates, the log row): the best of `repeats` passes over the real-world set's first
    screenshots. Timed with the process' CPU clock, so other work on the machine matters less."""
    from lab_code import images
    from lab_code.serving import serverless
    from lab_code.serving.inputs import image_stats
    from lab_code.serving.watch import Watch, WatchConfig

    datas = [json.loads(b)["image"] for b in realworld_bodies(images_n, family="screenshot")]
    import base64

    datas = [base64.b64decode(d) for d in datas]
    pictures = [images.open_image_bytes(d) for d in datas]
    lines = [images.page_lines(p) for p in pictures]
    recognizer = serverless.load_recognizer()
    folder = Path(tempfile.mkdtemp(prefix="watch-parts-"))
    watch = Watch(WatchConfig(db=str(folder / "w.sqlite"), profile="off"))
    watch.ready("v", ["/"])
    timings = {"read": 0.1, "decode": 1.0, "lines": 2.0, "queue": 0.1, "model": 8.0}

    def decode() -> None:
        for data in datas:
            images.page_lines(images.open_image_bytes(data))

    def model() -> None:
        for one in lines:
            recognizer.predict_lines_scored(one)

    def watching() -> None:
        for i, picture in enumerate(pictures):
            watch.request_started()
            watch.waiting(1)
            stats = image_stats(picture)
            watch.prediction({}, prediction_id=f"{time.time_ns()}-{i}", source="api",
                             timings=timings, stats=stats, scored=[("text", 0.97)], chars=4)
            watch.waiting(-1)
            watch.request_finished("/", 200, 0.02, {})

    out = {}
    try:
        for name, work in (("decode_and_lines", decode), ("model", model), ("watch", watching)):
            best = float("inf")
            for _ in range(repeats):
                began = time.process_time()
                work()
                best = min(best, time.process_time() - began)
            out[f"{name}_ms"] = round(best * 1000 / len(datas), 3)
    finally:
        watch.close()
        shutil.rmtree(folder, ignore_errors=True)
    out["watch_share_percent"] = round(100 * out["watch_ms"] / (
        out["decode_and_lines_ms"] + out["model_ms"]), 2)
    return out


def measure(rounds: int, clients: int, duration_s: float, warmup_s: float = 3.0,
            use_wrk: bool | None = None) -> dict[str, Any]:
    """Both services up at once (the idle one costs nothing), then `rounds` pairs of short runs,
    on and off back to back in alternating order, so that each pair meets the same machine."""
    use_wrk = shutil.which("wrk") is not None if use_wrk is None else use_wrk
    bodies = realworld_bodies(family="screenshot")
    folder = Path(tempfile.mkdtemp(prefix="watch-cost-"))
    started = {"load_average": os.getloadavg(), "time": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                       time.gmtime()),
               "in_process": component_costs()}
    runs: list[dict[str, Any]] = []
    services: dict[str, Any] = {}
    stop_scraping = threading.Event()
    try:
        for name in CONFIGS:
            services[name] = start_service(name, folder)
        # what Prometheus adds to the watched one: a scrape every second, all along
        scraper = threading.Thread(target=_scrape, args=(services["on"][1] + "metrics",
                                                         stop_scraping))
        scraper.start()
        for _, url, _ in services.values():
            run_load(url, bodies, clients=clients, duration_s=warmup_s, warmup_s=0)
        for i in range(rounds):
            for name in (("on", "off") if i % 2 == 0 else ("off", "on")):
                service, url, _ = services[name]
                result = load_once(url, service.pid, folder, bodies, clients, duration_s,
                                   use_wrk)
                runs.append({"round": i, "config": name, **result,
                             "load_average_after": os.getloadavg()})
                print(f"round {i} {name:3}: {result['throughput_per_s']:7.1f} req/s, p50 "
                      f"{result['latency_ms'].get('50', result['latency_ms'].get('p50'))} ms, "
                      f"{result['cpu_ms_per_answer']:.1f} CPU ms per answer", flush=True)
        stop_scraping.set()
        scraper.join(10)
        time.sleep(1.5)  # the log writers' last batches
        from lab_code.serving.predictions import PredictionLog, Store

        logged = PredictionLog(Store(services["on"][2]))
        rows = logged.count()
        logged.close()
    finally:
        stop_scraping.set()
        for service, _, _ in services.values():
            processes.stop_background(service)
        shutil.rmtree(folder, ignore_errors=True)
    ratios, cpu_ratios = [], []
    for i in range(rounds):
        on = next(r for r in runs if r["round"] == i and r["config"] == "on")
        off = next(r for r in runs if r["round"] == i and r["config"] == "off")
        ratios.append(round(on["throughput_per_s"] / off["throughput_per_s"], 4))
        cpu_ratios.append(round(on["cpu_ms_per_answer"] / off["cpu_ms_per_answer"], 4))
    answered_on = sum(r["requests"] - r["non_2xx"] for r in runs if r["config"] == "on")
    return {"command": "python -m lab_code.measuring watch_cost " + " ".join(sys.argv[1:]),
            "client": "wrk" if use_wrk else "lab_code.measuring.loadgen", "clients": clients,
            "duration_s": duration_s, "workers": 2, "cpus": os.cpu_count(), **started,
            "load_average_end": os.getloadavg(), "runs": runs,
            "rows_logged": rows, "answered_with_log_on": answered_on,
            "ratios_on_over_off": ratios, "median_ratio": statistics.median(ratios),
            "cost_percent": round((1 - statistics.median(ratios)) * 100, 2),
            "cpu_per_answer_on_over_off": cpu_ratios,
            "cpu_cost_percent": round((statistics.median(cpu_ratios) - 1) * 100, 2)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.measuring watch_cost",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="on/off pairs (default: 10)")
    parser.add_argument("--clients", type=int, default=64, help="connections (default: 64)")
    parser.add_argument("--duration", type=float, default=8.0, metavar="SECONDS",
                        help="measured seconds per run (default: 8)")
    parser.add_argument("--client", choices=["auto", "wrk", "loadgen"], default="auto",
                        help="the load generator (default: wrk when installed)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.client == "wrk" and shutil.which("wrk") is None:
        print("error: wrk is not installed: apt-get install wrk, or pass --client loadgen.",
              file=sys.stderr)
        return 1
    if args.rounds < 1 or args.clients < 1 or args.duration <= 0:
        print("error: --rounds and --clients must be at least 1 and --duration positive.",
              file=sys.stderr)
        return 2
    result = measure(args.rounds, args.clients, args.duration,
                     use_wrk=None if args.client == "auto" else args.client == "wrk")
    print(f"throughput with metrics and the prediction log on / off: {result['ratios_on_over_off']}"
          f" (median {result['median_ratio']:.3f}: {result['cost_percent']:+.1f}% cost); service "
          f"CPU per answer on / off: {result['cpu_per_answer_on_over_off']} "
          f"({result['cpu_cost_percent']:+.1f}%)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
