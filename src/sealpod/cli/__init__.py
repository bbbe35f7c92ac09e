"""Command-line interface (typer + rich): rendering only."""
