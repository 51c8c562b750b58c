"""Shared fixtures, and a guard that the test process ends when the tests do."""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time

import pytest

from tests.failure_notes import NOTES

pytest_plugins = ["tests.fixtures_app", "tests.fixtures_cameras", "tests.fixtures_s3", "tests.fixtures_browser"]

#: How long threads a test left behind get to finish once every test has run.
STRAGGLER_GRACE = 10.0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT] = int(exitstatus)


_EXIT = pytest.StashKey[int]()


def pytest_unconfigure(config: pytest.Config) -> None:
    """A non-daemon thread left running by a library (a decoder, an executor) would keep the
    interpreter from exiting after the summary, and CI would wait for its time limit instead
    of reporting. Name those threads, dump their stacks and end with the suite's own status.
    First, what failing tests left to explain themselves: last, where CI's excerpt shows it."""
    for test, note in NOTES:
        print(f"\n--- left by {test} ---\n{note}")
    stragglers = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    deadline = time.monotonic() + STRAGGLER_GRACE
    for thread in stragglers:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [t for t in stragglers if t.is_alive()]
    if not left:
        return
    sys.stdout.flush()
    print(f"\ntests: {len(left)} thread(s) still running after the tests: {', '.join(t.name for t in left)}", file=sys.stderr)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(config.stash.get(_EXIT, 1))
