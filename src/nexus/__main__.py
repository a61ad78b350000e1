"""`python -m nexus` is the `nexus` console script."""

from nexus.console import main

main()
