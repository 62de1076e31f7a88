"""Install WordNet 3.0 for METEOR's synonym matching (run by `make setup`; idempotent).

nltk's downloader reaches a host these machines cannot, so WordNet comes from Debian:
`wordnet-base` + `wordnet-sense-index` put it under /usr/share/wordnet. This script installs
them with apt-get when that folder is missing (as root, or with password-less sudo), then
copies the files into `$SUPERHF_CACHE/nltk_data/corpora/wordnet` and writes the `lexnames`
file Debian omits. It never fails the set-up: without apt it prints a warning, and METEOR
then runs without synonyms (and says so).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from superhf.evaluation.meteor import WORDNET_SOURCE, install_wordnet, nltk_data_dir

PACKAGES = ["wordnet-base", "wordnet-sense-index"]


def _warn(message: str) -> None:
    print(f"WARNING: {message} METEOR will run without WordNet synonyms.", file=sys.stderr)


def _apt_install() -> bool:
    if shutil.which("apt-get") is None:
        _warn(f"{WORDNET_SOURCE} is missing and apt-get is not available.")
        return False
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif (
        shutil.which("sudo")
        and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
    ):
        prefix = ["sudo", "-n"]
    else:
        _warn(f"{WORDNET_SOURCE} is missing; install {' '.join(PACKAGES)} as root.")
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    print(f"Installing {' '.join(PACKAGES)} with apt-get ...", file=sys.stderr)
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        # The package lists may be missing or stale on a fresh machine.
        subprocess.run([*prefix, "apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            _warn(f"apt-get install failed: {result.stderr.strip()[-500:]}")
            return False
    return True


def main() -> int:
    if not (WORDNET_SOURCE / "data.noun").is_file() and not _apt_install():
        return 0
    try:
        target = install_wordnet()
    except OSError as err:
        _warn(f"could not copy WordNet into {nltk_data_dir()}: {err}.")
        return 0
    print(f"WordNet 3.0 ready for nltk in {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
