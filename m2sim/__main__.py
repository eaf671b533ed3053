"""``python -m m2sim`` runs the ``m2sim`` command."""

from m2sim.cli import main

main()
