"""CUDA smoke check: every registered optimizer on a few landscapes, on the GPU, against the CPU.

The unit tests run on the CPU; this script checks the CUDA path of every engine end to end:
for each (landscape, optimizer) pair it builds the same run on ``cpu`` and on ``--device``
(default ``cuda``), takes a few steps, and checks that

* every tensor the protocol returns (``recommend()``, metrics) lives on the run's device and is
  finite;
* the budget ledger (cost, evaluations, gradient evaluations, steps) is identical on both devices
  (accounting does not depend on the device);
* the landscape is the same instance on both devices: its true loss at the common starting point
  agrees to float32 round-off (the instances are drawn on the CPU and moved).

The random streams of CPU and CUDA generators differ, so trajectories are not compared.
Exit status 1 if any pair fails; one line per pair either way.

    python benchmarks/cuda_smoke.py [--device cuda] [--steps 5]
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from evosgd.core.budget import Budget  # noqa: E402
from evosgd.core.registry import OPTIMIZERS, load_all  # noqa: E402
from evosgd.core.seeding import make_generator  # noqa: E402
from evosgd.landscapes import build_landscape  # noqa: E402

LANDSCAPES = [
    ("sphere", {"dim": 8}),
    ("rastrigin", {"dim": 8, "rotate": True, "noise_std": 0.1}),
    ("logistic_regression", {"n_examples": 256, "features": 8}),
    ("teacher_student", {"n_examples": 128, "inputs": 4, "widths": [8]}),
    ("ellipsoid", {"dim": 8, "noise_std": 0.1, "drift": {"kind": "linear", "speed": 1e-3}}),
]
#: optimizers that need something a landscape may not offer, with the parameters that make them run
OPTIMIZER_PARAMS: dict[str, dict] = {
    "ga": {"population_size": 16},
    "ga_deap": {"population_size": 16},
    "wright_fisher": {"population_size": 16, "init_std": 0.1},
    "sgd": {"batch_size": 8, "lr": 0.01, "momentum": 0.9},
    "adam": {"batch_size": 8},
}


def run_pair(kind: str, lparams: dict, opt_kind: str, device: torch.device, steps: int, R: int = 3) -> dict:
    out = {}
    for dev in (torch.device("cpu"), device):
        lp = dict(lparams)
        drift = lp.pop("drift", None)
        ls = build_landscape(kind, lp, replicates=R, seed=3, device=dev, dtype=torch.float32, drift=drift)
        budget = Budget(R)
        opt = OPTIMIZERS.build(opt_kind, OPTIMIZER_PARAMS.get(opt_kind, {}), landscape=ls, budget=budget,
                               generator=make_generator(7, dev))
        for _ in range(steps):
            opt.step()
        x = opt.recommend()
        if x.device.type != dev.type:
            raise AssertionError(f"recommend() on {x.device}, run on {dev}")
        if not bool(torch.isfinite(x).all()):
            raise AssertionError("recommend() not finite")
        for name, v in (opt.metrics() or {}).items():
            if isinstance(v, torch.Tensor) and v.device.type != dev.type:
                raise AssertionError(f"metric {name} on {v.device}, run on {dev}")
        f0 = ls.true_loss(ls.initial_point, None if drift is None else budget.time(dev)).double().cpu().numpy()
        out[dev.type] = (budget.snapshot(), f0)
    (b_cpu, f_cpu), (b_dev, f_dev) = out["cpu"], out[device.type]
    for key in ("cost", "evaluations", "gradient_evaluations", "steps"):
        if not np.array_equal(b_cpu[key], b_dev[key]):
            raise AssertionError(f"budget {key} differs: cpu {b_cpu[key]} vs {device} {b_dev[key]}")
    if not np.allclose(f_cpu, f_dev, rtol=1e-4, atol=1e-5):
        raise AssertionError(f"true loss at the start differs: cpu {f_cpu} vs {device} {f_dev}")
    return {"cost": float(b_dev["cost"][0])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    load_all()
    from evosgd.core.device import resolve_device

    device = resolve_device(args.device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), torch {torch.__version__}")
    failures = 0
    for opt_kind in OPTIMIZERS.names():
        for kind, lparams in LANDSCAPES:
            label = kind + ("+drift" if "drift" in lparams else "")
            if opt_kind in ("sgd_sync", "sgd_async", "sgd", "adam") and kind in ("rastrigin",):
                lparams = dict(lparams, noise_std=0.1)
            try:
                info = run_pair(kind, lparams, opt_kind, device, args.steps)
                print(f"ok    {opt_kind:16s} {label:20s} cost {info['cost']:.0f}")
            except Exception as e:  # report every pair, then fail at the end
                # an optimizer refusing a landscape with a clear parameter error is not a CUDA failure
                from evosgd.core.errors import EvosgdError

                if isinstance(e, EvosgdError):
                    print(f"skip  {opt_kind:16s} {label:20s} {type(e).__name__}: {str(e)[:100]}")
                    continue
                failures += 1
                print(f"FAIL  {opt_kind:16s} {label:20s} {type(e).__name__}: {e}")
                traceback.print_exc(limit=3)
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
