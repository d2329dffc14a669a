"""The `steadfast` command (also `kubectl steadfast` when installed as a kubectl plugin)."""

from __future__ import annotations

import argparse
import sys

from steadfast import overview, runner
from steadfast.approval import cli as approval_cli
from steadfast.console import cli as console_cli
from steadfast.fleet import cli as fleet_cli
from steadfast.repair import cli as repair_cli
from steadfast.templates import cli as template_cli

# The development tools (control plane, daprd unit, local engine, demo) are not in the operator's image.
try:
    from steadfast.dev import cli as dev_cli
except ImportError:  # pragma: no cover - exercised by the runtime-only install test
    dev_cli = None  # type: ignore[assignment]


def _crds(args: argparse.Namespace) -> int:
    from steadfast.api import crd

    argv = [*(["--check"] if args.check else []), *(["--out", str(args.out)] if args.out else [])]
    return crd.main(argv)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="steadfast",
        description="Durable sagas, health monitors and approvals as Kubernetes resources, run by Dapr Workflows.",
    )
    sub = top.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="write crds/*.yaml from the API models (or --check for drift)")
    crds.add_argument("--check", action="store_true", help="fail when the files differ from the models")
    crds.add_argument("--out", default=None, help="output folder (default: the repository's crds/)")
    crds.set_defaults(func=_crds)

    runner.add_parser(sub)
    approval_cli.add_parsers(sub)
    repair_cli.add_parsers(sub)
    overview.add_parsers(sub)
    fleet_cli.add_parsers(sub)
    template_cli.add_parsers(sub)
    console_cli.add_parser(sub)
    if dev_cli is not None:
        dev_cli.add_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["dev", "engine"] and dev_cli is not None:
        return dev_cli.engine_main(argv[2:])
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
