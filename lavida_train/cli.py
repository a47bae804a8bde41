"""``lavida-train``: check a stage file, or train it in one process.

    lavida-train validate STAGE.yaml [a.b=value ...] [--json]
    lavida-train run STAGE.yaml [a.b=value ...]

On several GPUs or nodes use Composer's launcher: ``composer -n 8 -m lavida_train.train STAGE.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from lavida_data.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lavida-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("validate", "check a stage file and its overrides"), ("run", "train in this process")):
        c = sub.add_parser(name, help=text)
        c.add_argument("stage")
        c.add_argument("overrides", nargs="*", help="a.b=value")
        c.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from .config import load_stage

    try:
        cfg = load_stage(args.stage, args.overrides)
    except ConfigError as e:
        if args.json:
            print(json.dumps({"valid": False, "errors": [i.to_json() for i in e.issues]}, indent=2))
        for issue in e.issues:
            print(str(issue), file=sys.stderr)
        return 1
    if args.command == "validate":
        if args.json:
            print(json.dumps({"valid": True, "errors": [], "config": cfg.model_dump(mode="json")}, indent=2))
        else:
            print(f"{args.stage}: valid ({cfg.stage}, model {cfg.model.preset})", file=sys.stderr)
        return 0
    from .train import main as train_main

    return train_main([args.stage, *args.overrides])


if __name__ == "__main__":
    sys.exit(main())
