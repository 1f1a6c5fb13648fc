"""The ``evosgd`` command line (also ``python -m evosgd``).

    evosgd run SCENARIO... [--out DIR] [--workers N] [--device D] [--replicates N] [--quick] [--force]
                           [--report] [--report-dir DIR] [--executor local|ray [--address A]] [--threads N]
                           [--plugin FILE.py|package.module]... [--max-runs N] [--no-wait]
    evosgd report RESULTS [-o DIR]
    evosgd validate FILE... [--quick] [--max-runs N] [--plugin ...]
    evosgd list landscapes|optimizers|analyses|drifts|scenarios [--plugin ...]
    evosgd show RESULTS
    evosgd export RESULTS --format ioh|coco [-o DIR] [--x-axis evaluations|cost]

Every error that is the user's to fix is printed as a message (no traceback) with exit status 2;
Ctrl-C exits with 130 after saying what was kept; a sweep with failed runs exits with 1.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

from evosgd.core.errors import ConfigError, EvosgdError


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {v}")
    return v


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit status is 2 as well
        self.print_usage(sys.stderr)
        self.exit(2, f"evosgd: error: {message}\n")


def _add_plugin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                        help="load your own landscapes/optimizers/analyses from a Python file or an importable module "
                             "(repeatable); installed 'evosgd.plugins' entry points load by themselves")


#: the categories of ``evosgd list`` and what each holds
LIST_CATEGORIES = {
    "landscapes": "loss landscapes: analytic functions, BBOB, data models, real data sets",
    "optimizers": "gradient methods, evolution strategies, genetic algorithms, populations",
    "analyses": "[[analysis]] measurements: theory beside measurement, with a verdict",
    "drifts": "[landscape.drift] kinds that move a landscape over time",
    "scenarios": "the scenario files shipped in ./scenarios",
}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="evosgd", description="Mini-batch gradient descent and population-based evolution, side by "
                                           "side on the same landscapes under one budget.")
    from evosgd import __version__

    p.add_argument("--version", action="version", version=f"evosgd {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("run", help="run scenario files into a results store")
    r.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario TOML file(s)")
    r.add_argument("--out", default="results", metavar="DIR", help="results folder (default: results/); "
                   "each scenario goes to DIR/<name>/")
    r.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="parallel worker processes (default: one per CPU core; 1: run in this process)")
    r.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: a process pool on this machine (default); ray: Ray tasks (pip install \"evosgd[ray]\")")
    r.add_argument("--address", default=None, metavar="ADDR",
                   help="with --executor ray: 'auto', 'ray://host:10001' or host:port (default: a local Ray instance)")
    r.add_argument("--threads", type=_positive_int, default=1, metavar="N",
                   help="torch threads per run (default 1: parallelism comes from the workers)")
    r.add_argument("--device", default=None, help="override the scenario's device: auto, cpu, cuda, cuda:N")
    r.add_argument("--replicates", type=_positive_int, default=None, metavar="N", help="override the replicates")
    r.add_argument("--quick", action="store_true", help="apply the file's [quick] overrides (seconds, not minutes)")
    r.add_argument("--force", action="store_true", help="redo runs that are already finished")
    r.add_argument("--report", action="store_true", help="write the report after the run")
    r.add_argument("--report-dir", default="reports", metavar="DIR",
                   help="where --report writes (default: reports/); each report goes to DIR/<name>/")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_plugin_option(r)
    r.add_argument("--max-runs", type=_positive_int, default=None, metavar="N",
                   help="refuse a sweep that expands to more than N runs (default 10000)")
    r.add_argument("--no-wait", action="store_true",
                   help="when another evosgd run writes the same results store, stop at once instead of waiting")

    rep = sub.add_parser("report", help="write the HTML/Markdown report of a results store")
    rep.add_argument("results", metavar="RESULTS", help="results folder of one scenario (e.g. results/quickstart)")
    rep.add_argument("--report-dir", default="reports", metavar="DIR",
                     help="where the report goes: DIR/<name>/ (default: reports/), as for run --report")
    rep.add_argument("-o", "--output", default=None, metavar="DIR",
                     help="write the report into exactly this folder instead of REPORT_DIR/<name>/")

    v = sub.add_parser("validate", help="check scenario files without running them")
    v.add_argument("files", nargs="+", metavar="FILE")
    v.add_argument("--quick", action="store_true", help="validate with the [quick] overrides applied")
    _add_plugin_option(v)
    v.add_argument("--max-runs", type=_positive_int, default=None, metavar="N",
                   help="refuse a sweep that expands to more than N runs (default 10000)")

    ls = sub.add_parser("list", help="list registered components or shipped scenarios")
    ls.add_argument("what", nargs="?", choices=list(LIST_CATEGORIES),
                    help="what to list (without it: the categories)")
    ls.add_argument("--brief", action="store_true", help="names and descriptions only")
    _add_plugin_option(ls)

    sh = sub.add_parser("show", help="print a summary table of a results store")
    sh.add_argument("results", metavar="RESULTS", help="results folder (or the scenario file that produced it)")
    sh.add_argument("--out", default="results", metavar="DIR", help="results folder used when RESULTS is a scenario file")

    ex = sub.add_parser("export", help="write a results store in the IOHprofiler (ioh) or COCO (coco) format")
    ex.add_argument("results", metavar="RESULTS", help="results folder of one scenario (e.g. results/suite_bbob)")
    ex.add_argument("--format", required=True, choices=["ioh", "coco"],
                    help="ioh: IOHanalyzer / iohinspector (json + .dat); coco: cocopp (.info + .dat + .tdat, BBOB only)")
    ex.add_argument("-o", "--output", default=None, metavar="DIR", help="output folder, one subfolder per algorithm "
                    "(default: RESULTS-<format> beside the store)")
    ex.add_argument("--x-axis", default="evaluations", choices=["evaluations", "cost"],
                    help="evaluations: calls of the loss or its gradient on one example (default); "
                         "cost: the budget ledger's cost, a gradient counting grad_cost evaluations")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = "evosgd " + " ".join(argv)
    if args.command is None:
        build_parser().print_help()
        return 2
    try:
        if getattr(args, "plugin", None):
            from evosgd.core.plugins import load_plugins
            from evosgd.core.registry import load_all

            load_all()  # the built-ins first: a plugin may not take a built-in's name
            load_plugins(args.plugin)
        return {"run": cmd_run, "report": cmd_report, "validate": cmd_validate, "list": cmd_list,
                "show": cmd_show, "export": cmd_export}[args.command](args)
    except EvosgdError as e:
        print(f"evosgd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nevosgd: interrupted; every finished run is kept. Run the same command again to resume.",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`evosgd list scenarios | head`): not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# ----------------------------------------------------------------------------- commands
def cmd_run(args: argparse.Namespace) -> int:
    from evosgd.run.runner import execute_scenario
    from evosgd.run.store import load_store
    from evosgd.run.summary import format_summary
    from evosgd.scenario import load_scenario

    # Validate every file first: a typo in the third file should not wait for the first two to run.
    scenarios, problems = [], []
    for f in args.scenarios:
        try:
            scenarios.append(load_scenario(f, quick=args.quick, replicates=args.replicates, device=args.device,
                                           **_max_runs(args)))
        except ConfigError as e:
            problems.append(str(e))
    names = [sc.name for sc in scenarios]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        problems.append(f"several files name the scenario {', '.join(map(repr, dup))}: their results would share "
                        f"{args.out}/<name>/; give each [scenario] a distinct name")
    if problems:
        raise ConfigError("\n".join(problems))
    status = 0
    command = args.command_line
    for sc in scenarios:
        t0 = time.perf_counter()
        view = ProgressView(bars=not args.no_progress)
        store = execute_scenario(sc, args.out, workers=args.workers, force=args.force, progress=not args.no_progress,
                                 command=command, threads=args.threads, executor=_executor(args),
                                 wait=not args.no_wait, notify=lambda msg: print(f"evosgd: {msg}", file=sys.stderr),
                                 events=view)
        data = load_store(store.root)
        runs = data.manifest.get("runs", {})
        n_failed = sum(1 for e in runs.values() if e.get("status") == "failed")
        print(format_summary(data))
        print(f"\n{sc.name}: {len(runs)} runs in {store.root} ({time.perf_counter() - t0:.1f} s)")
        if n_failed:
            print(f"evosgd: {n_failed} run(s) failed; their errors are in {store.manifest_path}", file=sys.stderr)
            status = 1
        if args.report:
            path = _report(store.root, Path(args.report_dir) / sc.name)
            print(f"report: {path}")
    return status


class ProgressView:
    """Renders the runner's events (:mod:`evosgd.run.events`) on the terminal: the work to do, a
    bar of finished runs with the runs in flight as its postfix, failures as they happen, and a time
    estimate once the first run has finished."""

    def __init__(self, bars: bool = True) -> None:
        self.bars, self.bar, self.started = bars, None, None
        self.in_flight: dict[str, tuple[str, float]] = {}
        self.finished = 0

    def __call__(self, event) -> None:
        from evosgd.run import events as ev

        if isinstance(event, ev.SweepStarted):
            self.started, self.workers, self.pending = time.perf_counter(), event.workers, event.pending
            done = event.total - event.pending
            print(f"{event.scenario}: {event.pending} run(s) to do" + (f" ({done} already finished)" if done else "")
                  + f" x {event.replicates} replicate(s) x budget {event.budget}, on {event.workers} "
                  f"process(es)", file=sys.stderr)
            if self.bars and event.pending:
                from tqdm import tqdm

                self.bar = tqdm(total=event.total, initial=done, desc=event.scenario, unit="run", dynamic_ncols=True)
        elif isinstance(event, ev.RunProgress):
            self.in_flight[event.run_id] = (event.label, event.fraction)
            self._postfix()
        elif isinstance(event, ev.RunFinished):
            self.in_flight.pop(event.run_id, None)
            self.finished += 1
            if event.status == "failed":
                self._say(f"run {event.label} {event.sweep} failed: {event.error}")
            if self.finished == 1 and self.pending > 1:
                left = (time.perf_counter() - self.started) * (self.pending - 1) / max(1, self.workers)
                self._say(f"first run finished: about {left:.0f} s for the other {self.pending - 1}")
            if self.bar is not None:
                self.bar.update(1)
                self._postfix()
        elif isinstance(event, ev.SweepFinished) and self.bar is not None:
            self.bar.close()
            self.bar = None

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join(f"{label} {100 * f:.0f}%" for label, f in self.in_flight.values()),
                                     refresh=True)

    def _say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)


def _max_runs(args: argparse.Namespace) -> dict:
    return {} if args.max_runs is None else {"max_runs": args.max_runs}


def _executor(args: argparse.Namespace):
    if args.executor == "local":
        if args.address:
            raise EvosgdError("--address is for --executor ray")
        return None  # the runner picks serial or a local process pool from --workers
    try:
        from evosgd.run.ray_executor import make_ray_executor
    except ImportError as e:
        raise EvosgdError(f"the Ray executor is not available in this installation ({e})") from None
    return make_ray_executor(args.address, args.workers)


def _report(results: Path, out: Path | None) -> Path:
    try:
        import evosgd.report as rep

        fn = getattr(rep, "report_from_store", None)
        if fn is None:
            from evosgd.report.build import report_from_store as fn  # type: ignore[no-redef]
    except ImportError as e:
        raise EvosgdError(f"the report module is not available in this installation ({e})") from None
    path = fn(results, out)
    return Path(path) if path is not None else Path(out or "reports")


def _store_name(root: Path) -> str:
    """The scenario name of a results store (its manifest's, checked as the loader checks names)."""
    import json
    import re

    from evosgd.scenario.schema import NAME_PATTERN

    try:
        name = json.loads((Path(root) / "manifest.json").read_text(encoding="utf-8")).get("scenario")
    except (OSError, ValueError, AttributeError, RecursionError):  # load_store says what is wrong with it
        name = None
    for candidate in (name, Path(root).name):
        if isinstance(candidate, str) and re.fullmatch(NAME_PATTERN, candidate) and len(candidate) <= 100:
            return candidate
    raise ConfigError(f"{root}: no valid scenario name in its manifest.json; give the report folder with -o DIR")


def cmd_report(args: argparse.Namespace) -> int:
    from evosgd.run.store import find_store

    root = find_store(args.results)
    out = Path(args.output) if args.output else Path(args.report_dir) / _store_name(root)
    path = _report(root, out)
    print(f"report: {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from evosgd.scenario import load_scenario

    bad = 0
    for f in args.files:
        try:
            sc = load_scenario(f, quick=args.quick, **_max_runs(args))
        except ConfigError as e:
            print(str(e), file=sys.stderr)
            bad += 1
            continue
        print(f"{f}: ok — scenario {sc.name!r}: {len(sc.optimizers)} optimizer(s), {len(sc.runs)} run(s), "
              f"{len(sc.analyses)} analysis(es), {sc.settings.replicates} replicates")
    return 2 if bad else 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.what is None:
        width = max(map(len, LIST_CATEGORIES))
        print("evosgd list CATEGORY, one of:")
        for name, what in LIST_CATEGORIES.items():
            print(f"  {name:<{width}}  {what}")
        return 0
    from evosgd.core.registry import ANALYSES, LANDSCAPES, OPTIMIZERS, load_all

    load_all()
    if args.what == "scenarios":
        return _list_scenarios()
    if args.what == "drifts":
        from evosgd.scenario.loader import drift_registry

        reg = drift_registry()
        if reg is None:
            print("(no drift models in this installation)")
            return 0
    else:
        reg = {"landscapes": LANDSCAPES, "optimizers": OPTIMIZERS, "analyses": ANALYSES}[args.what]
    entries = reg.entries()
    if not entries:
        print(f"(no {args.what} registered)")
    width = max((len(e.name) for e in entries), default=0)
    for e in entries:
        fam = f" [{e.family}]" if e.family else ""
        origin = f"[plugin: {e.origin.get('plugin')}]" if e.origin is not None else ""
        print(f"{e.name:<{width}}  {e.description}{fam}" + (f" {origin}" if origin and args.brief else ""))
        if args.brief:
            continue
        if origin:
            print(f"{'':<{width}}    {origin}")
        for name, ann, default, desc in e.fields():
            d = "required" if default == "required" else f"= {_short(default)}"
            print(f"{'':<{width}}    {name} ({_short(ann, 40, quote=False)}) {d}: {desc}")
    return 0


def _short(v: object, n: int = 50, quote: bool = True) -> str:
    s = repr(v) if quote else str(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def scenario_dirs() -> list[Path]:
    """./scenarios and the scenarios/ folder next to the installed package (a source checkout)."""
    here = Path("scenarios")
    shipped = Path(__file__).resolve().parent.parent / "scenarios"
    dirs = [here] + ([shipped] if shipped.resolve() != here.resolve() else [])
    return [d for d in dirs if d.is_dir()]


def _list_scenarios() -> int:
    from evosgd.scenario.reading import parse_toml, read_text_bounded

    files = [f for d in scenario_dirs() for f in sorted(d.glob("*.toml"))]
    if not files:
        print("(no scenario files found in ./scenarios)")
    for f in files:
        try:  # bounded like any scenario file: a FIFO or /dev/zero link among them must not hang the listing
            doc = parse_toml(read_text_bounded(f, str(f)), str(f))
            desc = str((doc.get("scenario") or {}).get("description", "")).strip().replace("\n", " ")
        except Exception as e:  # listing must not stop at one broken file
            desc = f"(unreadable: {e})"
        print(f"{f}  {textwrap.shorten(desc, 150, placeholder=' ...')}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from evosgd.run.store import load_store
    from evosgd.run.summary import format_summary

    target = Path(args.results)
    if target.suffix == ".toml" and target.is_file():
        from evosgd.scenario.loader import read_document

        doc, _, _ = read_document(target)
        name = (doc.get("scenario") or {}).get("name") if isinstance(doc.get("scenario"), dict) else None
        if not isinstance(name, str):
            raise ConfigError(f"{target}: has no [scenario] name")
        from evosgd.scenario.schema import NAME_PATTERN

        if not re.fullmatch(NAME_PATTERN, name):
            raise ConfigError(f"{target}: scenario.name {name[:80]!r} is not a scenario name; run evosgd validate {target}")
        target = Path(args.out) / name
    data = load_store(target)
    print(format_summary(data))
    others = data.manifest.get("other_runs") or {}
    if others:
        labels = sorted({str(e.get("label")) for e in others.values()})
        print(f"\nalso in this store: {len(others)} finished run(s) of other options ({', '.join(labels)}), "
              f"not in the table above; they are listed under other_runs in {data.path / 'manifest.json'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from evosgd.run.export import export_store

    folders = export_store(args.results, args.format, args.output, x_axis=args.x_axis)
    where = folders[0].parent if folders else args.output
    print(f"export ({args.format}, x-axis {args.x_axis}): {len(folders)} algorithm folder(s) in {where}")
    if args.format == "coco":
        print(f"  post-process: python -m cocopp {where}/*")
    else:
        print(f"  load: iohinspector.DataManager().add_folder('{where}'), or upload the folder to IOHanalyzer")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
