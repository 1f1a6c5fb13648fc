"""Benchmark: R replicates of an MLP trained by SGD, evosgd against the two ways a researcher
vectorizes replicates in torch, at the same shapes, on the same threads, timed alternately.

Problem: the ``teacher_student`` MLP (default 100-256-256-1, ReLU, n examples per replicate,
squared loss), SGD with momentum 0.9, batch b drawn with replacement from each replicate's own
data.  The three sides draw their batches the same way (``torch.randint`` per replicate) and
update R independent networks per step:

* **evosgd**: the ``sgd`` optimizer over ``[R, D]`` (its closed-form batched backward);
* **vmap**: ``torch.func.vmap(torch.func.grad(loss))`` over ``functional_call`` of one
  ``nn.Sequential`` with the R parameter sets stacked (``stack_module_state``), then a momentum
  update with ``torch._foreach`` ops -- the JAX-style idiom;
* **bmm**: the R networks written as batched weights ``[R, i, o]`` (``baddbmm`` + ReLU), autograd
  ``backward`` and ``torch.optim.SGD`` (foreach) on the stacked tensors -- the plain idiom;
* at R = 1, also **torch.optim**: one ``nn.Sequential`` and ``torch.optim.SGD``, a practitioner's loop.

Each ratio is anchor time / evosgd time per step (> 1: evosgd is faster), measured alternately
(evosgd, anchor, evosgd, anchor, ...) in blocks of about ``--block`` seconds.  A "scaling" row
per R gives evosgd's replicate-steps per second against R x its own 1-replicate rate (how much
vectorizing R replicates gains).

    python benchmarks/bench_replicates.py --threads 1                      # R = 16, 64; b = 32, 256
    python benchmarks/bench_replicates.py --device cuda --replicates 1,16,256,1024 --batches 32,256,1024,4096
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import torch  # noqa: E402

from evosgd.core.budget import Budget  # noqa: E402
from evosgd.core.registry import OPTIMIZERS, load_all  # noqa: E402
from evosgd.core.seeding import make_generator  # noqa: E402
from evosgd.landscapes import build_landscape  # noqa: E402

MOMENTUM, LR = 0.9, 1e-3


def landscape(R: int, n: int, widths: list[int], inputs: int, device: torch.device):
    load_all()
    params = {"n_examples": n, "inputs": inputs, "widths": widths, "activation": "relu"}
    return build_landscape("teacher_student", params, replicates=R, seed=0, device=device, dtype=torch.float32)


def evosgd_side(ls, b: int, device: torch.device):
    opt = OPTIMIZERS.build("sgd", {"batch_size": b, "lr": LR, "momentum": MOMENTUM}, landscape=ls,
                           budget=Budget(ls.replicates), generator=make_generator(0, device))

    def run(steps: int) -> None:
        for _ in range(steps):
            opt.step()
    return run


def _data(ls):
    full = ls.full_batch()
    return full["x"].contiguous(), full["y"].contiguous()  # [R, n, i], [R, n, o]


def _batch(x, y, b, g):
    R, n = x.shape[:2]
    idx = torch.randint(0, n, (R, b), generator=g, device=x.device)
    return (torch.gather(x, 1, idx.unsqueeze(-1).expand(R, b, x.shape[-1])),
            torch.gather(y, 1, idx.unsqueeze(-1).expand(R, b, y.shape[-1])))


def _net(ls) -> torch.nn.Sequential:
    dims = [s[0] for s in ls.sizes] + [ls.sizes[-1][1]]
    layers: list[torch.nn.Module] = []
    for i, (a, c) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(torch.nn.Linear(a, c))
        if i < len(dims) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def vmap_side(ls, b: int, device: torch.device):
    from torch.func import functional_call, grad, stack_module_state, vmap

    x, y = _data(ls)
    R = x.shape[0]
    base = _net(ls).to(device)
    params, _ = stack_module_state([_net(ls).to(device) for _ in range(R)])
    params = {k: v.detach() for k, v in params.items()}  # torch.func.grad differentiates without autograd leaves
    names = list(params)
    momentum = [torch.zeros_like(params[k]) for k in names]
    g = torch.Generator(device=device)
    g.manual_seed(0)
    meta = base.to("meta")

    def loss(p, xb, yb):
        r = functional_call(meta, p, (xb,)) - yb
        return 0.5 * (r * r).sum(-1).mean()

    grad_fn = vmap(grad(loss))

    def run(steps: int) -> None:
        for _ in range(steps):
            xb, yb = _batch(x, y, b, g)
            grads = grad_fn(params, xb, yb)
            p_list = [params[k] for k in names]
            g_list = [grads[k] for k in names]
            torch._foreach_mul_(momentum, MOMENTUM)
            torch._foreach_add_(momentum, g_list)
            torch._foreach_add_(p_list, momentum, alpha=-LR)
    return run


def bmm_side(ls, b: int, device: torch.device):
    x, y = _data(ls)
    R = x.shape[0]
    gen = torch.Generator(device=device)
    gen.manual_seed(1)
    Ws, bs = [], []
    for i, o in ls.sizes:
        Ws.append((torch.randn(R, i, o, generator=gen, device=device) / i**0.5).requires_grad_())
        bs.append(torch.zeros(R, 1, o, device=device, requires_grad=True))
    opt = torch.optim.SGD([*Ws, *bs], lr=LR, momentum=MOMENTUM, foreach=True)
    g = torch.Generator(device=device)
    g.manual_seed(0)
    last = len(Ws) - 1

    def run(steps: int) -> None:
        for _ in range(steps):
            xb, yb = _batch(x, y, b, g)
            h = xb
            for j, (W, c) in enumerate(zip(Ws, bs)):
                h = torch.baddbmm(c, h, W)
                if j < last:
                    h = torch.relu(h)
            r = h - yb
            loss = 0.5 * (r * r).sum(-1).mean(-1).sum()  # the sum over replicates keeps them independent
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return run


def optim_side(ls, b: int, device: torch.device):
    x, y = _data(ls)
    x, y = x[0], y[0]
    net = _net(ls).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    g = torch.Generator(device=device)
    g.manual_seed(0)
    n = x.shape[0]

    def run(steps: int) -> None:
        for _ in range(steps):
            idx = torch.randint(0, n, (b,), generator=g, device=device)
            r = net(x[idx]) - y[idx]
            loss = 0.5 * (r * r).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return run


def steps_for(ctx: harness.Context, run, block_s: float) -> int:
    """Steps per timed call so that one call lasts about ``block_s`` (after a one-step warm-up)."""
    if ctx.smoke:
        return 2
    clock = harness.clock_of(ctx)
    run(1)
    ctx.sync()
    t0 = clock()
    run(2)
    ctx.sync()
    per = max((clock() - t0) / 2, 1e-6)
    return int(min(500, max(2, block_s / per)))


def main(argv=None) -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--replicates", default="16,64", help="comma-separated R (default 16,64)")
    p.add_argument("--batches", default="32,256", help="comma-separated batch sizes (default 32,256)")
    p.add_argument("--examples", type=int, default=10_000, help="examples per replicate (default 10,000)")
    p.add_argument("--widths", default="256,256", help="hidden widths (default 256,256)")
    p.add_argument("--block", type=float, default=0.3, help="seconds per timed call (default 0.3)")
    p.add_argument("--anchors", default="vmap,bmm,optim", help="which anchors: vmap, bmm, optim (R = 1 only)")
    args = p.parse_args(argv)
    ctx = harness.setup(args)
    dev = ctx.device
    Rs = ctx.pick([int(v) for v in args.replicates.split(",")], [1, 2])
    bs = ctx.pick([int(v) for v in args.batches.split(",")], [4])
    n = ctx.pick(args.examples, 64)
    widths = ctx.pick([int(v) for v in args.widths.split(",")], [8, 8])
    inputs = ctx.pick(100, 5)
    anchors = args.anchors.split(",")
    single: dict[int, float] = {}
    makers = {"vmap": ("torch.func.vmap(grad(functional_call)) + foreach momentum", vmap_side),
              "bmm": ("batched-matmul model, autograd, torch.optim.SGD(foreach)", bmm_side),
              "optim": ("nn.Sequential + torch.optim.SGD loop", optim_side)}
    for R in Rs:
        ls = landscape(R, n, widths, inputs, dev)
        for b in bs:
            evo = evosgd_side(ls, b, dev)
            steps = steps_for(ctx, evo, args.block)
            t_evo = t_bmm = None
            for name in anchors:
                if name == "optim" and R != 1:
                    continue
                label, make = makers[name]
                try:
                    ref = make(ls, b, dev)
                except Exception as e:  # an anchor that does not build here is reported, not fatal
                    ctx.add({"comparison": f"MLP R={R} b={b}", "anchor": f"{label}: {type(e).__name__}: {e}"})
                    continue
                te, tr = harness.measure_pair(lambda e=evo, n=steps: e(n), lambda r=ref, n=steps: r(n), ctx=ctx, warmup=1, repeats=5)
                t_evo, t_ref = te.per(steps), tr.per(steps)
                if name == "bmm":
                    t_bmm = t_ref
                goal = {"vmap": 1.2, "bmm": 1.2, "optim": 0.9}[name]
                ctx.add({"comparison": f"MLP {inputs}-{'-'.join(map(str, widths))}-1 R={R} b={b}: SGD step",
                         "evosgd_steps_s": R / t_evo, "anchor": label, "anchor_steps_s": R / t_ref,
                         "ratio": t_ref / t_evo, "goal": f">= {goal}", "verdict": harness.verdict(t_ref / t_evo, goal)})
            if t_bmm is not None and not ctx.smoke:
                # the step's batched GEMMs alone (forward, weight and input gradients at these
                # shapes): no implementation is faster than its arithmetic, so anchor / GEMM time
                # is the largest ratio any vectorized step could show against that anchor
                from bench_sgd import mlp_gemm_floor

                t_gemm, gflops = mlp_gemm_floor(ls, R, b, dev, ctx)
                ctx.add({"comparison": f"MLP R={R} b={b}: the step's batched GEMMs alone ({gflops:.0f} GFLOP/s)",
                         "evosgd_steps_s": R / t_gemm, "anchor": makers["bmm"][0], "anchor_steps_s": R / t_bmm,
                         "ratio": t_bmm / t_gemm, "goal": "(bound)", "verdict": ""})
            if t_evo is not None and R == 1:
                single[b] = t_evo
            if t_evo is not None and R > 1 and b in single:
                gain = R * single[b] / t_evo
                goal = ">= 50" if R >= 1024 else "(scaling)"  # issue 24: 1024 replicates >= 50x one on a GPU
                ctx.add({"comparison": f"MLP R={R} b={b}: vectorized vs R x 1 replicate (evosgd)",
                         "evosgd_steps_s": R / t_evo, "anchor": "R x evosgd 1 replicate", "anchor_steps_s": 1 / single[b],
                         "ratio": gain, "goal": goal, "verdict": harness.verdict(gain, 50) if R >= 1024 else ""})
        del ls
    harness.finish(ctx, "MLP replicates: evosgd vs vmap / batched matmul / torch.optim (replicate-steps per second; "
                        "ratio = anchor time / evosgd time)",
                   ["comparison", "evosgd_steps_s", "anchor", "anchor_steps_s", "ratio", "goal", "verdict", "load1"])


if __name__ == "__main__":
    main()
