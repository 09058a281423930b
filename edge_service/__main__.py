"""``python -m edge_service`` runs the CLI."""

from edge_service.cli import main

main()
