"""Is there a Docker engine on this machine? (There is none on Colab and in the course's CI,
so the lessons lint and explain Dockerfiles instead of building them.)"""

from __future__ import annotations

import shutil
import subprocess


def version(timeout: float = 10.0) -> str | None:
    """The version of the Docker engine this machine reaches, or None: no `docker` command, or
    a command with no engine (daemon) behind it, as on Colab and in the course's CI."""
    exe = shutil.which("docker")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "version", "--format", "{{.Server.Version}}"],
                              capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = proc.stdout.strip()
    return version if proc.returncode == 0 and version else None

