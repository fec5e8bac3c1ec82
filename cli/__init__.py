"""`bert`: one command line over training, export and serving.

Each subcommand lives in its own module with a `main(argv) -> int`; it is imported only
when called, so `bert serve` works without torch installed.
"""
