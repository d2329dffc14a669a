"""A workflow worker in its own process (``python tests/engine/worker_proc.py ADDRESS``).

The crash tests kill it with SIGKILL; the benchmark runs its worker here so that the engine and
the SDK do not share one interpreter's GIL.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

import dapr.ext.workflow as wf
from engine_workflows import register


def main(address: str) -> int:
    logging.basicConfig(level=logging.WARNING)
    host, port = address.rsplit(":", 1)
    rt = wf.WorkflowRuntime(host=host, port=port)
    register(rt)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rt.start()  # type: ignore[no-untyped-call]  # the SDK's start() has no hints
    print("worker ready", flush=True)
    stop.wait()
    rt.shutdown()  # type: ignore[no-untyped-call]  # the SDK's shutdown() has no hints
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
