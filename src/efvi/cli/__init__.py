"""Command-line front end: ``efvi <command>``; one module per command."""
