"""Install Debian packages for `make setup` when they are missing; never fail the set-up.

Used by scripts/install_wordnet.py (WordNet for METEOR) and scripts/install_chromium.py
(headless Chromium for the report's browser tests): apt-get as root, or with password-less
sudo; a missing or stale package list is refreshed once. Without apt it returns False and
the caller prints what is lost.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable


def apt_install(packages: list[str], warn: Callable[[str], None]) -> bool:
    """`apt-get install -y packages`; False (after `warn(why)`) when it cannot."""
    if shutil.which("apt-get") is None:
        warn(f"apt-get is not available to install {' '.join(packages)}.")
        return False
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif (
        shutil.which("sudo")
        and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
    ):
        prefix = ["sudo", "-n"]
    else:
        warn(f"install {' '.join(packages)} as root.")
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    print(f"Installing {' '.join(packages)} with apt-get ...", file=sys.stderr)
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        # The package lists may be missing or stale on a fresh machine.
        subprocess.run([*prefix, "apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            warn(f"apt-get install failed: {result.stderr.strip()[-500:]}")
            return False
    return True
