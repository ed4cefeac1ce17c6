"""The command line every `make bench` reference takes (bench.py starts them all the same way):
`python -m lab.bench.bare_<stack> --port N --database-url URL [--host H] [--pool-size N]`."""

from __future__ import annotations

import argparse


def parse_args(description: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--pool-size", type=int, default=10)
    return parser.parse_args()
