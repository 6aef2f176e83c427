"""A throwaway PostgreSQL server for tests: initdb into a temp folder, listen on 127.0.0.1 and a
free port, stop and delete it afterwards. Uses the Debian binaries (`postgresql` package); as root
it runs them as the `postgres` user, since initdb refuses to run as root."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from lab_code.serving import ports


def binaries() -> Path | None:
    """The folder of initdb/pg_ctl (newest version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextlib.contextmanager
def server() -> Iterator[str]:
    """Yield the URL of a fresh PostgreSQL database (postgresql://postgres@127.0.0.1:PORT/
    postgres) and always stop the server and remove its files."""
    folder = binaries()
    if folder is None:
        raise FileNotFoundError("PostgreSQL's binaries are not installed (apt-get install "
                                "postgresql).")
    root = Path(tempfile.mkdtemp(prefix="course-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port = ports.free_port()
    env = {**os.environ, "LC_ALL": "C"}
    try:
        subprocess.run(_as_owner([str(folder / "initdb"), "-D", str(data), "-U", "postgres",
                                  "--auth=trust", "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True, env=env, timeout=120)
        subprocess.run(_as_owner([str(folder / "pg_ctl"), "-D", str(data), "-l",
                                  str(root / "log"), "-w", "-t", "60", "-o",
                                  f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 "
                                  "-c fsync=off", "start"]),
                       check=True, capture_output=True, env=env, timeout=90)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_owner([str(folder / "pg_ctl"), "-D", str(data), "-m", "fast",
                                      "-w", "stop"]), capture_output=True, env=env, timeout=60)
        for _ in range(20):  # the server's files belong to postgres: removable by root
            shutil.rmtree(root, ignore_errors=True)
            if not root.exists():
                break
            time.sleep(0.1)
