"""``python -m real`` runs the ``m2real`` command."""

from real.cli import main

main()
