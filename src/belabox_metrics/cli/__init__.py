"""Command-line entry points: main(argv) -> exit code."""
