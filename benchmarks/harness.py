"""Shared benchmark harness: command line, machine information, timing, tables.

Every benchmark script runs evosgd and its anchor library (DEAP, pycma, EvoTorch, a hand-written
torch loop) on the same problem in ONE process and prints the ratio, so that both sides meet the
same machine load, the same torch build and the same thread count.

Conventions

* ``--device cpu|cuda|auto`` (default cpu), ``--threads N`` (default 2: the reference machine has
  2 cores) limits torch's intra-op threads AND every BLAS/OpenMP pool of the process (numpy's
  OpenBLAS or MKL, through threadpoolctl), so that the anchor (pycma and DEAP compute with numpy)
  and evosgd run on the same threads; ``--quick`` (alias ``--smoke``: tiny sizes, checks the
  script runs, numbers mean nothing; CI runs it), ``--json PATH`` (also write the rows and the
  machine information as JSON).
* Every row carries ``load1``, the machine's 1-minute load average when the row was finished: on a
  shared machine it says how far to trust the row (a ratio is measured alternately, so load
  moves both sides, but a load above the core count still adds noise).
* ``--clock wall|cpu``: elapsed time (default) or the process's CPU time.  On a shared machine
  whose load exceeds its cores, wall time measures the scheduler as much as the code; with
  ``--threads 1`` the CPU time of the process is the work it did, and the ratio stays meaningful.
* Timing: :func:`measure` runs ``fn`` ``warmup`` times untimed (allocator, caches, lazy
  initialisation), then ``repeats`` timed calls, and reports the **median** (robust to the other
  processes of a shared machine) with the min and max; on CUDA it synchronises before reading
  the clock, so the asynchronous kernel queue is included.
* A *ratio* is always "how many times faster evosgd is" (anchor time / evosgd time, or evosgd
  throughput / anchor throughput), so > 1 is better for evosgd.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks run from a checkout, evosgd need not be installed
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


# ----------------------------------------------------------------------------- command line
def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--quick", "--smoke", dest="smoke", action="store_true",
                   help="tiny sizes: only checks that the script runs (CI); the figures mean nothing")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default: per script)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write machine info and rows as JSON")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time (default); cpu: this process's CPU time (time.process_time), which a "
                   "shared, oversubscribed machine disturbs far less — use it with --threads 1 (with more threads "
                   "it counts every thread's time, spinning included)")
    p.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                   help="tuned (default): glibc's mmap/trim thresholds raised as `evosgd run` does, so large "
                   "temporaries are reused instead of page-faulted in every step; default: glibc's own settings")
    return p


@dataclass
class Context:
    """What a benchmark needs from its command line: device, sizes mode and the output table."""

    args: argparse.Namespace
    device: torch.device
    smoke: bool
    rows: list[dict[str, Any]] = field(default_factory=list)

    def pick(self, full: Any, smoke: Any) -> Any:
        """``full`` normally, ``smoke`` under ``--smoke``."""
        return smoke if self.smoke else full

    def add(self, row: dict[str, Any]) -> None:
        """Record a table row and print it at once (a long benchmark shows its progress, and a
        run stopped by a timeout still leaves its finished rows in the log)."""
        row.setdefault("load1", load1())
        self.rows.append(row)
        print("row: " + ", ".join(f"{k}={fmt(v)}" for k, v in row.items()), flush=True)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


#: the threadpoolctl limiter of the process (kept alive: the limit holds while it exists)
_BLAS_LIMIT: Any = None


def limit_threads(n: int) -> str:
    """torch intra-op threads and every native thread pool (BLAS, OpenMP) of the process to ``n``;
    returns what was limited, for the machine line.  Without threadpoolctl only torch is limited
    (and the line says so), so an anchor computing with numpy may use more threads."""
    global _BLAS_LIMIT
    n = max(1, int(n))
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return "torch only (threadpoolctl not installed)"
    _BLAS_LIMIT = threadpool_limits(limits=n)
    pools = sorted({f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()})
    return ", ".join(pools) or "no native pools"


def load1() -> float:
    """The 1-minute load average (NaN where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def setup(args: argparse.Namespace) -> Context:
    """Apply ``--threads`` (torch and BLAS), resolve ``--device``, print the machine information."""
    args.native_threads = limit_threads(args.threads)
    from evosgd.core.device import resolve_device

    if args.malloc == "tuned":  # what `evosgd run` does in every run (see evosgd/core/hostmem.py)
        try:
            from evosgd.core.hostmem import tune_host_allocator
        except ImportError:
            args.malloc = "default (evosgd has no hostmem)"
        else:
            args.malloc = "tuned" if tune_host_allocator() else "default (not glibc)"

    device = resolve_device(args.device)
    machine_info.args = args  # type: ignore[attr-defined]  # so every info line names the clock
    ctx = Context(args=args, device=device, smoke=bool(args.smoke))
    info = machine_info(device)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    if ctx.smoke:
        print("(smoke mode: tiny sizes, the figures below are not measurements)")
    return ctx


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    args = getattr(machine_info, "args", None)
    if args is not None:
        info["clock"] = args.clock
        info["malloc"] = args.malloc
        info["native_threads"] = getattr(args, "native_threads", "?")
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        load = os.getloadavg()
        info["load1"] = f"{load[0]:.2f}"  # the machine is shared: the load says how noisy the figures are
    except OSError:
        pass
    return info


def version(module: str) -> str:
    try:
        mod = __import__(module)
        return str(getattr(mod, "__version__", "?"))
    except Exception:  # an anchor that is not installed
        return "not installed"


# ----------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Seconds per call: median of the repeats, with min and max."""

    median: float
    low: float
    high: float
    repeats: int

    def per(self, n: int) -> float:
        """Median seconds per unit when one call does ``n`` units (generations, steps)."""
        return self.median / n


def clock_of(ctx: Context | None) -> Callable[[], float]:
    """The clock ``--clock`` asks for (wall on CUDA: GPU time is not this process's CPU time)."""
    if ctx is not None and ctx.args.clock == "cpu" and ctx.device.type != "cuda":
        return time.process_time
    return time.perf_counter


def measure(fn: Callable[[], Any], *, ctx: Context | None = None, warmup: int = 1, repeats: int = 5) -> Timing:
    """Median wall time of ``fn()`` over ``repeats`` timed calls after ``warmup`` untimed ones."""
    return _alternate((fn,), ctx, warmup, repeats)[0]


def measure_pair(fn_a: Callable[[], Any], fn_b: Callable[[], Any], *, ctx: Context | None = None, warmup: int = 1,
                 repeats: int = 5) -> tuple[Timing, Timing]:
    """Median times of ``fn_a`` and ``fn_b`` measured alternately (a, b, a, b, ...), so that a
    change of the machine's load during the measurement hits both sides alike and their ratio
    stays meaningful on a shared machine."""
    a, b = _alternate((fn_a, fn_b), ctx, warmup, repeats)
    return a, b


def measure_all(fns: Sequence[Callable[[], Any]], *, ctx: Context | None = None, warmup: int = 1,
                repeats: int = 5) -> list[Timing]:
    """Median times of several functions measured in turn (a, b, c, a, b, c, ...)."""
    return _alternate(tuple(fns), ctx, warmup, repeats)


def _alternate(fns: tuple[Callable[[], Any], ...], ctx: Context | None, warmup: int, repeats: int) -> list[Timing]:
    """Each of ``fns`` timed ``repeats`` times, in turn, after ``warmup`` untimed rounds."""
    if ctx is not None and ctx.args.repeats is not None:
        repeats = max(1, ctx.args.repeats)
    if ctx is not None and ctx.smoke:
        warmup, repeats = min(warmup, 1), 1
    sync = ctx.sync if ctx is not None else (lambda: None)
    clock = clock_of(ctx)
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            t0 = clock()
            fn()
            sync()
            out.append(clock() - t0)
    return [Timing(statistics.median(t), min(t), max(t), repeats) for t in times]


# ----------------------------------------------------------------------------- output
def fmt(x: Any) -> str:
    if isinstance(x, float):
        if x == 0 or x != x:
            return str(x)
        if abs(x) >= 1e4 or abs(x) < 1e-3:
            return f"{x:.3g}"
        return f"{x:.4g}"
    return str(x)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table (readable in a terminal too)."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())
    for r in rows:
        for c in r:
            if c not in cols:
                cols.append(c)
    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    width = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, width)) + " |"  # noqa: E731
    out = [line(cols), "|" + "|".join("-" * (w + 2) for w in width) + "|"]
    out += [line(row) for row in cells]
    return "\n".join(out)


def verdict(ratio: float, goal: float) -> str:
    """'met' / 'NOT met' for a ratio against its goal (both: higher is better for evosgd)."""
    return "met" if ratio >= goal else "NOT met"


def finish(ctx: Context, title: str, columns: Sequence[str] | None = None, notes: Sequence[str] = ()) -> None:
    """Print the table of ``ctx.rows`` (and write JSON when asked)."""
    print(f"\n## {title}\n")
    print(table(ctx.rows, columns))
    for n in notes:
        print(f"- {n}")
    if ctx.args.json:
        path = Path(ctx.args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"title": title, "machine": machine_info(ctx.device), "argv": sys.argv, "rows": ctx.rows}
        path.write_text(json.dumps(payload, indent=1, default=str))
        print(f"(wrote {path})")
    sys.stdout.flush()
