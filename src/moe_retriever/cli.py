"""The command line: parse, load config, call the library. Nothing else lives here.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` builds its parser and
``_cmd_<name>(args)`` runs it. Errors a user can cause (unknown dataset, bad file, bad option)
are raised as ``UserError`` / ``DataValidationError`` / ``ValueError`` / ``FileNotFoundError``
and printed as one line with a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from moe_retriever.data.core import DataValidationError


class UserError(Exception):
    """A mistake in the command line or its inputs; printed as one line."""


# ---------------------------------------------------------------------------- data
def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect datasets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser(
        "describe",
        help="samples, classes, modality dimensions and observed combinations",
    )
    d.add_argument("source", help="a built-in dataset name (miniacc, mfeat, synthetic) or a folder")
    d.add_argument("--json", action="store_true", help="print machine-readable JSON")
    d.set_defaults(func=_cmd_data_describe)


def _cmd_data_describe(args: argparse.Namespace) -> int:
    from moe_retriever.datasets import load_data

    data = load_data(args.source)
    summary = data.describe()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from moe_retriever.data.report import format_description

    print(format_description(summary))
    return 0


# ---------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moe-retriever",
        description="Classification on multimodal data with modalities missing sample by sample.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, DataValidationError, ValueError, FileNotFoundError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"moe-retriever: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
