"""Install WordNet 3.0 for METEOR's synonym matching (run by `make setup`; idempotent).

nltk's downloader reaches a host these machines cannot, so WordNet comes from Debian:
`wordnet-base` + `wordnet-sense-index` put it under /usr/share/wordnet. This script installs
them with apt-get (scripts/apt_install.py) when that folder is missing, then
copies the files into `$SUPERHF_CACHE/nltk_data/corpora/wordnet` and writes the `lexnames`
file Debian omits. It never fails the set-up: without apt it prints a warning, and METEOR
then runs without synonyms (and says so).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ when loaded by path
from apt_install import apt_install  # noqa: E402

from superhf.evaluation.meteor import WORDNET_SOURCE, install_wordnet, nltk_data_dir

PACKAGES = ["wordnet-base", "wordnet-sense-index"]


def _warn(message: str) -> None:
    print(f"WARNING: {message} METEOR will run without WordNet synonyms.", file=sys.stderr)


def main() -> int:
    missing = not (WORDNET_SOURCE / "data.noun").is_file()
    if missing and not apt_install(
        PACKAGES, lambda why: _warn(f"{WORDNET_SOURCE} is missing; {why}")
    ):
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
