#!/usr/bin/env python3
"""Regenerate the IAC Python code from proto/ (pinned tools, committed output).

    python scripts/gen_protos.py          # write orchgpt/iac/v1/*_pb2*.py(i)
    python scripts/gen_protos.py --check  # fail if the committed code is stale

The versions of grpcio-tools and mypy-protobuf are pinned in
scripts/gen_protos.requirements.txt so that every run writes the same bytes.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_PKG = Path("orchgpt") / "iac" / "v1"


def generate(out_root: Path) -> list[Path]:
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    if not protos:
        raise SystemExit("no .proto files under proto/")
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    subprocess.run(cmd, check=True, cwd=PROTO_ROOT)
    return sorted((out_root / OUT_PKG).glob("*_pb2*"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="fail if regenerating changes the code")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp))
        dest = ROOT / OUT_PKG
        stale = []
        for f in files:
            target = dest / f.name
            if not target.exists() or not filecmp.cmp(f, target, shallow=False):
                stale.append(target.relative_to(ROOT))
                if not args.check:
                    shutil.copyfile(f, target)
        if args.check:
            if stale:
                print("generated protobuf code is stale; run python scripts/gen_protos.py:")
                for s in stale:
                    print(f"  {s}")
                return 1
            print(f"generated protobuf code is up to date ({len(files)} files)")
        else:
            print(f"wrote {len(stale)} of {len(files)} files into {OUT_PKG}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
