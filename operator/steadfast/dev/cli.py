"""`steadfast dev ...`: the local control plane and engine, for laptops and tests without Docker."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from steadfast.dev import engines
from steadfast.dev.controlplane import binaries, cluster, identities, processes


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("dev", help="local control plane and workflow engine (development only)")
    commands = dev.add_subparsers(dest="dev_command", required=True)

    up = commands.add_parser("up", help="start etcd, kube-apiserver, kube-controller-manager and the engine")
    up.add_argument("--dir", type=Path, default=cluster.DEFAULT_DIR, help="state folder (default %(default)s)")
    up.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME[:GROUP,...]",
        help="an extra token identity with groups, e.g. alice:approvers (repeatable)",
    )
    up.add_argument(
        "--engine",
        choices=engines.NAMES,
        default="local",
        help="workflow engine: the local one (default) or daprd with placement and scheduler",
    )
    up.add_argument("--no-engine", action="store_true", help="do not start a workflow engine")
    up.add_argument("--crds", type=Path, default=None, help="folder of CRD manifests to install")
    up.set_defaults(func=_up)

    down = commands.add_parser("down", help="stop everything started by `dev up` and remove its data")
    down.add_argument("--dir", type=Path, default=cluster.DEFAULT_DIR)
    down.set_defaults(func=_down)

    status = commands.add_parser("status", help="say what runs")
    status.add_argument("--dir", type=Path, default=cluster.DEFAULT_DIR)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    build = commands.add_parser("build", help="build (or reuse) the pinned Go binaries")
    build.add_argument("components", nargs="*", help=f"any of {sorted(binaries.BY_NAME)}")
    build.set_defaults(func=lambda a: binaries.main(a.components))

    demo = commands.add_parser("demo", help="control plane + engine + operator, samples applied, statuses shown")
    demo.add_argument("--dir", type=Path, default=cluster.DEFAULT_DIR)
    demo.add_argument(
        "--engine",
        choices=engines.NAMES,
        default="local",
        help="workflow engine: the local one (default) or daprd with placement and scheduler",
    )
    demo.set_defaults(func=_demo)

    # Only listed here: `steadfast.cli.main` hands `dev engine ...` to the engine's own parser untouched, since
    # argparse cannot pass options that come first (`--port 4001`) through a REMAINDER argument.
    commands.add_parser(
        "engine", help="run or inspect the local workflow engine (see `dev engine --help`)", add_help=False
    )


def _up(args: argparse.Namespace) -> int:
    try:
        users = [identities.Identity.parse(u) for u in args.user]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plane = cluster.ControlPlane(
        args.dir, users=users, engine=False if args.no_engine else args.engine, detach=True, crds=args.crds
    )
    try:
        state = plane.up()
    except (processes.StartError, binaries.BuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(state.exports())
    names = ", ".join(u["name"] for u in state.users)
    print(
        f"# contexts: {names} (kubectl --context NAME); stop with: steadfast dev down --dir {args.dir}", file=sys.stderr
    )
    return 0


def _down(args: argparse.Namespace) -> int:
    state = cluster.read_state(args.dir)
    cluster.ControlPlane(args.dir).down()
    print("stopped" if state else f"nothing was running from {args.dir}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    info = cluster.status(args.dir)
    if args.json:
        print(json.dumps(info, indent=2))
    elif not info["components"]:
        print(f"not running (no state in {info['directory']})")
    else:
        print(f"apiserver  {info['apiserver']}")
        print(f"engine     {info['engine'] or '-'}")
        print(f"kubeconfig {info['kubeconfig']}")
        for name, comp in info["components"].items():
            print(f"{name:<24} pid {comp['pid']:<8} {'running' if comp['alive'] else 'STOPPED'}")
    return 0 if info["running"] else 1


def _demo(args: argparse.Namespace) -> int:
    from steadfast.dev import demo

    try:
        return demo.run(args.dir, engine=args.engine)
    except (processes.StartError, binaries.BuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def engine_main(argv: list[str]) -> int:
    try:
        from steadfast_engine import cli as engine_cli
    except ImportError as exc:
        print(f"error: the local workflow engine is not available: {exc}", file=sys.stderr)
        return 1
    return engine_cli.main(argv)
