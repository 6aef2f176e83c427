"""Decoding in worker processes (lab_code.serving.decoding): the same lines as decoding here, and
every way a decode can go wrong ends with an answer and a fresh worker: a deadline (killed), too
much CPU (RLIMIT_CPU) or memory (RLIMIT_AS), a worker killed from outside, a bug in the worker.
The scan bombs below are sent with the scan limit lifted, so that they really reach libjpeg."""

from __future__ import annotations

import io
import json
import os
import signal
import time

import hostile
import numpy as np
import pytest
from PIL import Image
from stand_ins import wait_for

from lab_code import images
from lab_code.serving import decoding
from lab_code.training import data

NO_SCAN_LIMIT = images.WorkLimits(max_jpeg_scans=10**6)  # the header check broken on purpose


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


LINE = data.render("decoded elsewhere", data.Style.clean(data.fonts()[0], size=28))



def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def events(capsys, name: str) -> list[dict]:
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines()
            if line.startswith("{") and f'"event": "{name}"' in line]


@pytest.fixture
def pool():
    pool = decoding.DecodePool(size=2)
    assert pool.wait_ready()
    yield pool
    pids = pool.pids()
    pool.close()
    wait_for(lambda: not any(alive(pid) for pid in pids), 10, "a worker outlived close()")


def soon(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


def test_a_worker_gives_the_same_lines_as_decoding_here(pool):
    page = png(LINE)
    timings: dict[str, float] = {}
    there = pool.lines(page, "the line", images.LIMITS, soon(), timings)
    here = images.decode_lines(page, "the line", images.LIMITS)
    assert len(there) == len(here) == 1
    assert all(np.array_equal(a, b) for a, b in zip(there, here, strict=True))
    assert set(timings) == {"decode", "lines"}
    img = pool.image(page, "the line", images.LIMITS, soon())
    assert img.size == LINE.size and np.array_equal(np.asarray(img), np.asarray(LINE))
    again = pool.image_lines(LINE, images.LIMITS, soon())
    assert all(np.array_equal(a, b) for a, b in zip(again, here, strict=True))


def test_refusals_come_back_as_the_same_sentence_and_status(pool):
    for raw, status in [(hostile.scan_bomb(5000, 1000), 422), (hostile.ico_bomb(), 415)]:
        with pytest.raises(images.ImageInputError) as there:
            pool.lines(raw, "the upload", images.LIMITS, soon())
        with pytest.raises(images.ImageInputError) as here:
            images.decode_lines(raw, "the upload", images.LIMITS)
        assert (there.value.status, str(there.value)) == (here.value.status, str(here.value))
        assert there.value.status == status


def test_the_deadline_kills_the_decode_and_a_new_worker_takes_its_place(pool, capsys):
    """A thread would have gone on decoding for half a minute after its 504."""
    busy_pids = set(pool.pids())
    start = time.monotonic()
    with pytest.raises(decoding.DecodeTimeout):
        pool.lines(hostile.scan_bomb(5000, 1000), "the bomb", NO_SCAN_LIMIT, start + 2.0)
    assert time.monotonic() - start < 4.0
    gone = [pid for pid in busy_pids if not alive(pid)]
    assert len(gone) == 1, "the worker that held the bomb must be dead"
    wait_for(lambda: pool.health()["workers"] == 2 and pool.health()["busy"] == 0, 30,
             "two idle workers")
    [event] = events(capsys, "decoder_replaced")
    assert event["reason"] == "deadline" and event["pid"] == gone[0] and event["exit_status"] == -9
    assert len(pool.lines(png(LINE), "the line", images.LIMITS, soon())) == 1


def test_health_sees_a_decode_in_progress(pool):
    import threading

    job = threading.Thread(target=lambda: pytest.raises(
        decoding.DecodeTimeout, pool.lines, hostile.scan_bomb(5000, 1000), "bomb",
        NO_SCAN_LIMIT, soon(3.0)))
    job.start()
    try:
        wait_for(lambda: pool.health()["longest_s"] > 1.0, 10, "a decode running over 1 s")
        assert pool.health()["busy"] == 1
    finally:
        job.join(30)
    assert pool.health()["busy"] == 0


def test_an_image_over_its_cpu_time_is_a_422():
    pool = decoding.DecodePool(size=1, cpu_s=1)
    try:
        start = time.monotonic()
        with pytest.raises(images.ImageInputError, match="more than 1 s of CPU") as err:
            pool.lines(hostile.scan_bomb(5000, 1000), "the bomb", NO_SCAN_LIMIT, soon(60))
        assert err.value.status == 422 and time.monotonic() - start < 20
        assert len(pool.lines(png(LINE), "the line", images.LIMITS, soon())) == 1
    finally:
        pool.close()


def test_an_image_over_the_memory_ceiling_is_a_422_and_the_worker_is_replaced(capsys):
    """~110 MB of address space when idle; a 5000 x 5000 colour PNG needs 75 MB more to decode,
    and its grey and float copies more again."""
    pool = decoding.DecodePool(size=1, memory_mb=200)
    noise = np.random.default_rng(0).integers(0, 255, (5000, 5000, 3), dtype=np.uint8)
    try:
        with pytest.raises(images.ImageInputError, match="MB") as err:
            pool.lines(png(Image.fromarray(noise)), "the photo", images.LIMITS, soon(60))
        assert err.value.status == 422
        assert len(pool.lines(png(LINE), "the line", images.LIMITS, soon())) == 1
    finally:
        pool.close()
    assert events(capsys, "decoder_replaced")


def test_a_worker_holding_memory_after_a_job_is_replaced(capsys):
    pool = decoding.DecodePool(size=1, recycle_mb=1)  # every worker holds more than 1 MB
    try:
        first = pool.pids()
        pool.lines(png(LINE), "the line", images.LIMITS, soon())
        wait_for(lambda: pool.pids() and pool.pids() != first, 30, "new workers")
        [event] = events(capsys, "decoder_replaced")
        assert event["reason"] == "memory" and event["rss_mb"] > 1
    finally:
        pool.close()


def test_a_worker_killed_while_idle_costs_no_request(pool, capsys):
    """What the OOM killer does: the next image goes to a live worker, without an error."""
    for pid in pool.pids():
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in pool.pids()), 10, "the workers to die")
    assert len(pool.lines(png(LINE), "the line", images.LIMITS, soon())) == 1
    wait_for(lambda: pool.health()["workers"] == 2, 30, "two workers back")
    assert {e["reason"] for e in events(capsys, "decoder_replaced")} == {"died while idle"}


def test_a_bug_in_the_worker_is_an_error_of_its_own_not_a_refusal(pool):
    broken = images.WorkLimits(max_lines=None)  # a comparison with None fails in the worker
    with pytest.raises(decoding.DecoderError, match="TypeError"):
        pool.lines(png(LINE), "the line", broken, soon())
    assert len(pool.lines(png(LINE), "the line", images.LIMITS, soon())) == 1


def test_a_pool_that_cannot_start_a_worker_says_so(monkeypatch):
    monkeypatch.setattr(decoding, "MAX_FAILED_STARTS", 1)
    monkeypatch.setattr(decoding.sys, "executable", "/nonexistent/python")
    pool = decoding.DecodePool(size=1)
    try:
        with pytest.raises(decoding.DecoderUnavailable, match="failed to start") as err:
            pool.lines(png(LINE), "the line", images.LIMITS, soon(10))
        assert err.value.status == 503 and "broken" in pool.health()
    finally:
        pool.close()


def test_what_the_bytes_refuse_never_waits_for_a_busy_worker(pool):
    """Both workers busy (two bombs with the scan check broken): a crafted file is still
    refused at once, from its bytes and header, in the calling thread."""
    import threading

    def held() -> None:
        with pytest.raises(decoding.DecodeTimeout):
            pool.lines(hostile.scan_bomb(5000, 1000), "bomb", NO_SCAN_LIMIT, soon(4.0))

    jobs = [threading.Thread(target=held) for _ in range(2)]
    for job in jobs:
        job.start()
    try:
        wait_for(lambda: pool.health()["busy"] == 2, 10, "both workers busy")
        for raw in (hostile.scan_bomb(5000, 1000), hostile.ico_bomb(), hostile.thin_png()):
            start = time.monotonic()
            with pytest.raises(images.ImageInputError):
                pool.lines(raw, "the upload", images.LIMITS, soon())
            assert time.monotonic() - start < 0.5
    finally:
        for job in jobs:
            job.join(30)
