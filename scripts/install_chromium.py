"""Install headless Chromium for report.html's browser tests (run by `make setup`; idempotent).

tests/evaluation/test_report_html.py opens report.html in Chromium (`--headless --dump-dom`,
`--screenshot`). No Python package can download a browser on these machines, so it comes
from Debian (`chromium`, `chromium-driver`). Already on the PATH: nothing to do. Without apt
or root it prints a warning and exits 0: the browser tests then skip and say why.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ when loaded by path
from apt_install import apt_install  # noqa: E402

PACKAGES = ["chromium", "chromium-driver"]
NAMES = ["chromium", "chromium-browser", "google-chrome"]


def _warn(message: str) -> None:
    print(f"WARNING: {message} The report's browser tests will skip.", file=sys.stderr)


def main() -> int:
    found = next((shutil.which(n) for n in NAMES if shutil.which(n)), None)
    if found is None and apt_install(PACKAGES, _warn):
        found = shutil.which("chromium")
    if found:
        print(f"Chromium ready for the browser tests: {found}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
