"""A real Prometheus beside the service: started on 127.0.0.1 with the repository's scrape config
and alerting rules (monitoring/), queried through its HTTP API, stopped cleanly.

    python -m lab_code.measuring prometheus --target 127.0.0.1:8000 --port 9090

Prometheus is a program of its own (Debian/Ubuntu: `apt-get install prometheus`; elsewhere a
binary from its releases). `--speedup N` divides every duration in the rules (rate windows,
`for:`) and the scrape interval by N, so a replayed day of a few minutes fires what a real day
would: one second then stands for N seconds of production.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
CONFIG, RULES, RULES_TEST = "prometheus.yml", "rules.yml", "rules_test.yml"
DEFAULT_TARGET = "127.0.0.1:8000"  # the target monitoring/prometheus.yml names
DEFAULT_PORT = 9090  # Prometheus' own default
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION = re.compile(r"(\d+)(ms|s|m|h|d)\b")
MISSING = ("Prometheus is not installed here: `apt-get install prometheus` (Debian, Ubuntu) "
           "or a binary from prometheus.io; without it, read /metrics with prometheus_client's "
           "parser (lab_code.measuring.panels).")


class PrometheusError(RuntimeError):
    """Prometheus is missing, did not start, or answered with an error; one sentence."""


def binary(name: str = "prometheus") -> str:
    found = shutil.which(name)
    if found is None:
        raise PrometheusError(MISSING)
    return found


def seconds_text(seconds: float) -> str:
    """A Prometheus duration: whole seconds, or milliseconds below one second."""
    return f"{round(seconds)}s" if seconds >= 1 else f"{max(1, round(seconds * 1000))}ms"


def scaled(text: str, speedup: float, window_floor_s: float = 4.0,
           floor_s: float = 1.0) -> str:
    """Rules or config text with every duration (rate windows `[5m]`, `for: 10m`, intervals)
    divided by `speedup`; a rate window never below `window_floor_s` (rate() needs a few
    scrapes in it), any other duration never below `floor_s`."""
    if speedup == 1:
        return text

    def shrink(floor: float):
        def one(m: re.Match) -> str:
            return seconds_text(max(floor, int(m.group(1)) * UNITS[m.group(2)] / speedup))
        return one

    out = []
    for line in text.splitlines(keepends=True):
        code, hash_, comment = line.partition("#")
        if re.search(r"\bfor:|interval:|\[", code):  # durations live here, not in prose
            code = re.sub(r"\[(\d+(?:ms|s|m|h|d))\]", lambda m: "[" + DURATION.sub(
                shrink(window_floor_s), m.group(1)) + "]", code)
            code = re.sub(r"((?:for|interval):\s*)(\d+(?:ms|s|m|h|d))",
                          lambda m: m.group(1) + DURATION.sub(shrink(floor_s), m.group(2)),
                          code)
        out.append(code + hash_ + comment)
    return "".join(out)


def write_config(folder: Path, target: str = DEFAULT_TARGET, speedup: float = 1.0,
                 scrape_s: float | None = None) -> Path:
    """The repository's config and rules, copied into `folder` with the target (and, with a
    speedup, the durations) changed; returns the config file."""
    folder.mkdir(parents=True, exist_ok=True)
    config = (MONITORING / CONFIG).read_text().replace(DEFAULT_TARGET, target)
    config = scaled(config, speedup)
    if scrape_s is not None:
        config = re.sub(r"(scrape_interval|evaluation_interval):\s*\S+",
                        lambda m: f"{m.group(1)}: {seconds_text(scrape_s)}", config)
    (folder / CONFIG).write_text(config)
    (folder / RULES).write_text(scaled((MONITORING / RULES).read_text(), speedup))
    return folder / CONFIG


@dataclass
class Prometheus:
    """A running Prometheus: its process, URL and folder."""

    process: subprocess.Popen
    url: str
    folder: Path

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; the `data` of a successful answer."""
        import requests

        try:
            resp = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
            body = resp.json()
        except (requests.RequestException, ValueError) as err:
            raise PrometheusError(f"Prometheus at {self.url} did not answer /api/v1/{path} "
                                  f"({type(err).__name__}).") from err
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus refused {path}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query: [{"metric": {labels}, "value": [time, "text"]}, ...]."""
        params = {"query": promql} | ({"time": at} if at is not None else {})
        return self.api("query", **params)["result"]

    def value(self, promql: str, at: float | None = None) -> float | None:
        """The single number an instant query gives (None when it gives nothing)."""
        result = self.query(promql, at)
        return float(result[0]["value"][1]) if result else None

    def query_range(self, promql: str, start: float, end: float,
                    step: float) -> list[dict[str, Any]]:
        return self.api("query_range", query=promql, start=start, end=end,
                        step=step)["result"]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts pending or firing now."""
        return self.api("alerts")["alerts"]

    def fired(self, start: float, end: float, step: float = 1.0) -> dict[str, float]:
        """Each alert that fired between `start` and `end` (Unix times) -> the first time it
        did, read from Prometheus' own ALERTS series."""
        first: dict[str, float] = {}
        for series in self.query_range('ALERTS{alertstate="firing"}', start, end, step):
            name = series["metric"]["alertname"]
            at = min(float(t) for t, _ in series["values"])
            first[name] = min(at, first.get(name, at))
        return dict(sorted(first.items(), key=lambda kv: kv[1]))

    def wait_for_scrape(self, timeout: float = 30.0) -> bool:
        """Wait until the target has been scraped successfully once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(PrometheusError):
                if self.value('up{job="recognizer"}') == 1:
                    return True
            time.sleep(0.25)
        return False

    def stop(self) -> None:
        stop(self)


def start(folder: str | Path, target: str = DEFAULT_TARGET, port: int = DEFAULT_PORT,
          speedup: float = 1.0, scrape_s: float | None = None,
          timeout: float = 30.0) -> Prometheus:
    """Start Prometheus on 127.0.0.1:`port`, scraping `target`, its data and config in
    `folder`; returns once it answers /-/ready."""
    import requests

    folder = Path(folder)
    config = write_config(folder, target, speedup, scrape_s)
    log = folder / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary(), f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={folder / 'data'}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    running = Prometheus(proc, f"http://127.0.0.1:{port}", folder)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise PrometheusError(f"Prometheus exited with code {proc.returncode}: {tail}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{running.url}/-/ready", timeout=1).status_code == 200:
                return running
        time.sleep(0.2)
    stop(running)
    raise PrometheusError(f"Prometheus did not get ready within {timeout:.0f} s: see {log}.")


def stop(running: Prometheus, timeout: float = 10.0) -> None:
    proc = running.process
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def promtool(*args: str, stdin: str | None = None,
             timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run promtool (check rules, test rules, check metrics: its text on `stdin`) and return
    what it did."""
    return subprocess.run([binary("promtool"), *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.measuring prometheus",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=DEFAULT_TARGET, metavar="HOST:PORT",
                        help=f"the service to scrape (default: {DEFAULT_TARGET})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"Prometheus' own port on 127.0.0.1 (default: {DEFAULT_PORT})")
    parser.add_argument("--data", type=Path, default=Path("prometheus-data"),
                        help="folder for its config copy and its data (default: "
                             "prometheus-data)")
    parser.add_argument("--speedup", type=float, default=1.0, metavar="N",
                        help="divide the rules' durations by N, for a replayed day (default: 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.speedup <= 0:
        print("error: --speedup must be above 0.", file=sys.stderr)
        return 2
    try:
        running = start(args.data, args.target, args.port, args.speedup)
    except PrometheusError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Prometheus on {running.url}/ scraping {args.target} (alerts at {running.url}/alerts);"
          " Ctrl+C stops it.", flush=True)
    try:
        while running.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop(running)
    return 0


if __name__ == "__main__":
    sys.exit(main())
