"""`python -m local [--upstream sample|URL]`: the whole aggregator on this machine; Ctrl-C stops it."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from local.stack import LocalStack, Options


def _interrupt(*_args) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__)
    parser.add_argument("--upstream", help="'sample' for the bundled sample upstream, or a URL")
    args = parser.parse_args(argv)
    try:
        stack = LocalStack(Options.from_env(upstream=args.upstream))
    except ValueError as exc:
        print(f"local stack failed to start: {exc}", file=sys.stderr, flush=True)
        return 1
    # Raising from the handler, not setting an Event: a handler that takes a lock the main thread
    # already holds would deadlock.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.start()
        print("API aggregator, local stack (no Docker, no AWS account)\n" + stack.describe(), flush=True)
        print("Ready. Ctrl-C stops everything.", flush=True)
        while True:  # short sleeps: a signal delivered to another thread is only seen between them
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping...", flush=True)
        return 0
    except Exception as exc:
        print(f"local stack failed to start: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
