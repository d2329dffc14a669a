"""Starting, watching and stopping the local control plane's child processes."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path


class StartError(RuntimeError):
    """A component did not become ready; the message carries the tail of its log."""


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now and that no outgoing connection will take before a server binds it.

    A port the kernel hands out for `bind(0)` comes from the ephemeral range, the same range it picks source
    ports of outgoing connections from: between our check and the server's bind, a connection (daprd's own to
    its scheduler, say) can take it, and the server dies with "address already in use". Ports below that range
    are never used as source ports, so only another server can take them; we also never hand one out twice.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# util-linux's setpriv (essential on Debian) sets the parent-death signal and execs the command. Doing it
# in a preexec_fn instead is unsafe: the parent has threads, and a fork can deadlock in the child.
_SETPRIV = shutil.which("setpriv")


def launch(args: list[str], log: Path, *, detach: bool, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `args` with output to `log`.

    Detached processes (for `steadfast dev up`) get their own session and outlive the CLI; attached ones
    (test fixtures) die with their parent even on SIGKILL.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    if not detach and _SETPRIV:
        args = [_SETPRIV, "--pdeathsig", "KILL", "--", *args]
    with open(log, "ab") as out:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=detach,
            process_group=None if detach else 0,
        )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as handle:
        if handle.read().split()[2] == "Z":
            return False
    return True


def stop(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `timeout`."""
    if not alive(pid):
        return
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return

    def signal_all(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if pgid == pid:
                os.killpg(pgid, sig)
            else:
                os.kill(pid, sig)

    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not alive(pid):
            return
        time.sleep(0.05)
    signal_all(signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def wait_until(check: Callable[[], bool], *, what: str, timeout: float, pid: int | None, log: Path) -> None:
    """Poll a readiness check during start-up; fail fast with the log tail if the process exits."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if check():
            return
        if pid is not None and not alive(pid):
            raise StartError(f"{what} exited during start-up; last lines of {log}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise StartError(f"{what} was not ready after {timeout:.0f}s; last lines of {log}:\n{tail(log)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def http_ok(
    url: str,
    *,
    token: str | None = None,
    ca_file: Path | None = None,
    insecure: bool = False,
    client_cert: tuple[Path, Path] | None = None,
) -> bool:
    """Whether `url` answers 200; `client_cert` (cert, key) for servers that require one (etcd)."""
    request = urllib.request.Request(url)  # noqa: S310 (only http(s) URLs we built)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context: ssl.SSLContext | None = None
    if url.startswith("https"):
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client_cert is not None:
            context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:  # noqa: S310
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def tcp_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
