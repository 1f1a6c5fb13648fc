"""Collect the JSON files of ``gpu_check.sh`` into one Markdown file for ``benchmarks/RESULTS.md``.

    python benchmarks/gpu_summary.py OUT_DIR            # writes OUT_DIR/RESULTS_gpu.md

Each benchmark's table is written with its machine line (the GPU's name, torch and CUDA versions,
the load), then the step summary of the script; nothing is computed here that the benchmarks did
not measure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def summary(out: Path) -> str:
    lines = [f"# GPU check: {out}", ""]
    env = out / "env.txt"
    if env.exists():
        lines += ["```", *env.read_text().splitlines()[-12:], "```", ""]
    for path in sorted(out.glob("bench_*.json")):
        data = json.loads(path.read_text())
        machine = data.get("machine", {})
        lines += [f"## {data.get('title', path.stem)}", "",
                  "machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()), "",
                  "command: `" + " ".join(str(a) for a in data.get("argv", [])) + "`", "",
                  harness.table(data.get("rows", [])), ""]
    steps = out / "SUMMARY.txt"
    if steps.exists():
        lines += ["## Steps", "", "```", *steps.read_text().splitlines(), "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "gpu_results")
    text = summary(out)
    (out / "RESULTS_gpu.md").write_text(text)
    print(f"wrote {out / 'RESULTS_gpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
