"""Hostile inputs the hardening tests (and tools/hardening_probes.py) send: small files that ask
a server for a lot of work or memory, built here from scratch so that nothing is downloaded."""

from __future__ import annotations

import functools
import io
import json
import struct

from PIL import Image


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment of a JPEG; a scan (SOS) runs to the next marker."""
    out, i = [], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:  # EOI
            out.append((marker, i, i + 2))
            break
        end = i + 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker == 0xDA:  # entropy-coded data follows: skip stuffed bytes and restart markers
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        out.append((marker, i, end))
        i = end
    return out


@functools.lru_cache(maxsize=8)
def scan_bomb(side: int = 5000, scans: int = 1000) -> bytes:
    """A progressive grey JPEG of `scans` scans in all: libjpeg's own 6, then its last
    (refinement) scan repeated. Each repeat costs libjpeg a pass over every block of the
    picture, and the file ~40 bytes: 1000 scans at 5000 x 5000 is a 190 KB file and tens of
    seconds of one core."""
    buf = io.BytesIO()
    Image.new("L", (side, side), 255).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    sos = [s for s in jpeg_segments(data) if s[0] == 0xDA]
    last = sos[-1]
    return data[: last[2]] + data[last[1] : last[2]] * (scans - len(sos)) + data[last[2] :]


@functools.lru_cache(maxsize=8)
def thin_png(width: int = 25_000_000, height: int = 1) -> bytes:
    """A one-bit PNG of width x height: 1 x 25,000,000 is ~25 KB and passes a 25 M-pixel cap."""
    buf = io.BytesIO()
    Image.new("1", (width, height), 1).save(buf, "PNG", optimize=True)
    return buf.getvalue()


@functools.lru_cache(maxsize=4)
def big_png(side: int = 13000, mode: str = "1") -> bytes:
    """A blank PNG of side x side pixels: 13000 is 169 M pixels, 46 KB in mode "1" (21 MB
    decoded) and ~690 KB in mode "RGBA" (676 MB decoded; making it takes as much here)."""
    buf = io.BytesIO()
    Image.new(mode, (side, side), 255 if mode != "1" else 1).save(buf, "PNG")
    return buf.getvalue()


def ico_bomb(side: int = 13000, mode: str = "1") -> bytes:
    """An ICO whose directory says 16 x 16 while the PNG inside is side x side: Pillow decodes
    the inner PNG inside Image.open, before anyone can look at a size."""
    inner = big_png(side, mode)
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(inner), 6 + 16)
    return header + entry + inner


def icns_bomb(side: int = 13000, mode: str = "1") -> bytes:
    """An ICNS whose `ic07` entry (a 128 x 128 icon) holds a side x side PNG, decoded at load."""
    inner = big_png(side, mode)
    entry = b"ic07" + struct.pack(">I", 8 + len(inner)) + inner
    return b"icns" + struct.pack(">I", 8 + len(entry)) + entry


def many_keys(n: int = 400_000) -> bytes:
    """A JSON object of n unknown keys (~5 MB at 400,000): one validation error per key."""
    return json.dumps({f"k{i}": 0 for i in range(n)}).encode()


def gif(side: int = 64) -> bytes:
    """A small, harmless GIF: a format the API does not promise."""
    buf = io.BytesIO()
    Image.new("L", (side, side), 255).save(buf, "GIF")
    return buf.getvalue()
