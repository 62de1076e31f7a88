"""`python -m superhf ...` is `superhf ...` (and what `accelerate launch -m superhf` runs)."""

from superhf.cli import main

main()
