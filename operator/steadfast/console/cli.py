"""`steadfast console`: serve the web console, as the kubeconfig user (locally) or as each viewer (in a cluster)."""

from __future__ import annotations

import argparse
import os
import sys

from aiohttp import web

from steadfast.console.identity import MODES, Credentials
from steadfast.console.server import Console

DEFAULT_LISTEN = "127.0.0.1:8090"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    env = os.environ.get
    cmd = sub.add_parser(
        "console",
        help="the web console: overview, approvals inbox, saga timelines, monitors (as you, never more)",
        description="Serve the web console. Every API call carries the viewer's credentials: locally your "
        "kubeconfig; in a cluster the viewer's bearer token (--auth token) or an authenticating proxy's identity "
        "headers (--auth proxy).",
    )
    cmd.add_argument("--listen", default=env("STEADFAST_CONSOLE_LISTEN", DEFAULT_LISTEN), help="HOST:PORT")
    cmd.add_argument(
        "--auth",
        choices=MODES,
        default=env("STEADFAST_CONSOLE_AUTH", "kubeconfig"),
        help="whose credentials: kubeconfig (the local user), token (the viewer's bearer token), proxy "
        "(X-Forwarded-User/Groups from a trusted authenticating proxy, impersonated)",
    )
    cmd.add_argument(
        "--trusted-proxy",
        action="append",
        default=None,
        help="with --auth proxy: the proxy's address or network (default: loopback only; repeatable)",
    )
    cmd.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        help="Host header values served (default with --auth kubeconfig: the listen address and localhost)",
    )
    cmd.add_argument(
        "--ca-file",
        default=env("STEADFAST_CONSOLE_CA"),
        help="with --auth token in a pod: the API server's CA (default: the service account's ca.crt)",
    )
    cmd.add_argument(
        "-n",
        "--namespace",
        default=env("STEADFAST_CONSOLE_NAMESPACE") or None,
        help="the namespace pages show until the viewer picks another (default: every namespace they may list)",
    )
    cmd.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG)")
    cmd.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    cmd.set_defaults(func=run)


def _hosts(listen: str, auth: str, given: list[str] | None) -> frozenset[str]:
    if given:
        return frozenset(given)
    if auth != "kubeconfig":
        return frozenset()  # the credentials come with each request: a rebound page brings none
    host, _, port = listen.rpartition(":")
    return frozenset({listen, f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"} - {f"{host}:"})


def run(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"error: --listen {args.listen!r}: give HOST:PORT", file=sys.stderr)
        return 2
    proxies = tuple(args.trusted_proxy or ("127.0.0.1/32", "::1/128"))
    credentials = Credentials(
        args.auth, kubeconfig=args.kubeconfig, context=args.context, trusted_proxies=proxies, ca_file=args.ca_file
    )
    console = Console(
        credentials, allowed_hosts=_hosts(args.listen, args.auth, args.allowed_host), namespace=args.namespace
    )
    print(f"Steadfast console on http://{args.listen}/ (as: {args.auth})", flush=True)
    # handler_cancellation: a page's event stream ends (and its watch with it) as soon as the browser goes away.
    # shutdown_timeout: open event streams never finish by themselves; a stop ends them after a second.
    web.run_app(
        console.app(),
        host=host.strip("[]"),
        port=int(port),
        print=None,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=1.0,
    )
    return 0
