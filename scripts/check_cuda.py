"""Compile every CUDA source shipped with gpuillum to PTX with NVRTC: no GPU needed.

CI runs this to catch syntax and type errors in the kernels on CPU-only machines. Each source
lists its template instantiations in a line ``// instantiations: a<b>, c<d>``; plain extern "C"
kernels need none.
"""
from __future__ import annotations

import re
import sys

from gpuillum.backend import all_cuda_sources, compile_check


def instantiations(text: str) -> tuple[str, ...]:
    names: list[str] = []
    for line in re.findall(r"//\s*instantiations:(.*)", text):
        names += [n.strip() for n in re.split(r";", line) if n.strip()]
    return tuple(names)


def main() -> int:
    sources = all_cuda_sources()
    failed = 0
    for path in sources:
        names = instantiations(path.read_text())
        try:
            ptx = compile_check(path.name, names)
        except Exception as exc:  # CompileException carries the compiler log
            failed += 1
            print(f"FAIL {path.name}:\n{exc}", file=sys.stderr)
            continue
        print(f"ok   {path.name}: {len(ptx)} bytes of PTX, {len(names)} template instantiation(s)")
    print(f"{len(sources) - failed} of {len(sources)} CUDA sources compiled")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
