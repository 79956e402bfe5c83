"""Regenerates the committed Python stubs of proto/meridian_proto/*.proto.

Run with --check to compare instead of writing (the test suite does, so stale stubs fail CI).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent.parent / "proto"
PACKAGE = PROTO_ROOT / "meridian_proto"


def generate(out_dir: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE.glob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {sources}")


def generated_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (root / "meridian_proto").glob("*_pb2*.py*")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the committed stubs are stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = generated_files(Path(tmp))
        if args.check:
            committed = generated_files(PROTO_ROOT)
            stale = sorted(n for n in fresh.keys() | committed.keys() if fresh.get(n) != committed.get(n))
            if stale:
                print("stale generated stubs: " + ", ".join(stale) + "; run `make proto`", file=sys.stderr)
                return 1
            return 0
        for name, content in fresh.items():
            (PACKAGE / name).write_bytes(content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
