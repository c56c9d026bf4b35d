"""`python -m local`: the whole aggregator on this machine. `python -m local invoke FUNCTION -e EVENT`: one
invocation of one function, as `sam local invoke` does, without Docker.

One Ctrl-C lets invocations in flight finish, then stops; a second stops at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import NoReturn

from local import template as tpl
from local.invoke import invoke
from local.stack import LocalStack, Options

EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops as Ctrl-C does, until run() takes over
    args = _parser().parse_args(argv)
    try:
        options = Options.from_env(upstream=args.upstream, verbose=args.verbose, template=args.template)
        if args.command == "invoke":
            return invoke(options, args.function, args.event, args.env_vars)
        options.reload = not args.no_reload
        stack = LocalStack(options)
    except (ValueError, OSError) as exc:
        print(f"local stack failed to start: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # before the stack runs, or during an invoke (which stops what it started)
        return EXIT_INTERRUPTED
    return run(stack)


def run(stack: LocalStack) -> int:
    interrupts = 0

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            raise KeyboardInterrupt
        print("stopped at once.", flush=True)  # instances are killed; jobs they ran are reconciled at the next start
        for pool in (getattr(stack, "deployment", None) and stack.deployment.pools.values()) or ():
            pool.kill()
        os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        stack.start()
        print("API aggregator, local stack (no Docker, no AWS account)\n" + stack.describe(), flush=True)
        print("Ready. Ctrl-C stops everything.", flush=True)
        while True:  # short sleeps: a signal is only seen by the main thread between them
            time.sleep(0.5)
    except KeyboardInterrupt:
        busy = stack.busy() if hasattr(stack, "deployment") else 0
        waiting = f": letting {busy} invocation(s) finish (Ctrl-C again stops at once)" if busy else ""
        print(f"stopping{waiting}...", flush=True)
        stack.stop(wait_seconds=max((f.timeout for f in stack.template.functions.values()), default=0))
        print("stopped.", flush=True)
        return 0
    except Exception as exc:
        print(f"local stack failed to start: {exc}", file=sys.stderr, flush=True)
        stack.stop()
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__, parents=[_shared()])
    parser.add_argument("--no-reload", action="store_true", help="do not recycle instances when code changes")
    parser.set_defaults(command="run", upstream=None, verbose=False, template=tpl.TEMPLATE)
    commands = parser.add_subparsers(dest="command")
    one = commands.add_parser(
        "invoke", parents=[_shared()], help="invoke one function once with an event file, as `sam local invoke`"
    )
    one.add_argument("function", help="the function's logical id in the template, e.g. ReadApiFunction")
    one.add_argument("-e", "--event", required=True, type=Path, help="a JSON event file, e.g. events/get_data.json")
    one.add_argument("--env-vars", "-n", type=Path, help="JSON overrides, as sam local's --env-vars takes")
    return parser


def _shared() -> argparse.ArgumentParser:
    """Options taken before or after the command; SUPPRESS keeps an absent one from hiding a given one."""
    shared = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    shared.add_argument("--upstream", help="'sample' for the bundled sample upstream, or a URL")
    shared.add_argument("--verbose", action="store_true", help="every function's log lines, raw")
    shared.add_argument("--template", "-t", type=Path, help="the SAM template (template.yaml)")
    return shared


def _exit(code: int) -> NoReturn:
    """Exit once every part has stopped, skipping the interpreter's teardown of moto's modules (a quarter
    second at each stop and invoke); what was printed is flushed first, to a stream still open."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):  # closed, or no stream at all
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
