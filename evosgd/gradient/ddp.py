"""Real synchronous data-parallel SGD with ``torch.distributed`` (``sgd_ddp``).

K processes each hold a replica of the iterate ``theta [R, D]`` and of the transform state.  One
step, on every rank at once::

    global batch  <- sampler (the same seeded generator on every rank: the same b examples)
    shard k       <- examples [k b/K, (k+1) b/K) of it              (rank k's own data)
    g_k, loss_k   <- mini-batch autograd gradient of shard k        (timed: worker time T_k)
    g, loss       <- all_reduce(SUM) / K                            (gloo on CPU, nccl on GPU)
    theta         <- theta + transforms(g)                           (identical on every rank)

Equal shards make the average of the K shard means the mean over the union of the shards, so the
iterates equal those of single-process ``sgd`` on the global batch and those of the simulated
``sgd_sync`` (which computes exactly that gradient) up to floating-point rounding, for the same
generator seed.  The budget ledger is charged as theirs: ``batch_size * accumulation_steps``
per-example gradients per replicate and step.

Wall-clock time is measured per step (seconds): every worker's compute time ``T_k`` (gathered by
the same all-reduce) and the step time (slowest rank's compute + the all-reduce, agreed by an
all-reduce MAX so every rank advances the same clock).  With ``sim_time = "measured"`` the
budget's simulated time advances by the measured step time, so ``max_sim_time`` budgets and the
``sim_time`` axis are real seconds, comparable with ``sgd_sync``'s simulated clock.  The worker
times feed the straggler model: :meth:`DataParallelSGD.worker_times` returns them all ``[steps,
K]`` and :func:`fit_worker_times` fits the ``compute_time`` distributions of ``sgd_sync``
(maximum likelihood: shifted exponential shift = min T, mean = mean T - min T; lognormal
mu, sigma = mean and standard deviation of log T).  The metrics carry the running
``worker_time_mean/min/std`` so the fit can also be made from a results store, and
:func:`straggler_check` compares the measured slowest-worker time with the model's ``E[max of K]``.

Two ways to get K processes:

* **spawned** (the default, one machine): rank 0 is the run's own process (the runner's worker);
  it starts K-1 helper Python processes on this machine, hands them the landscape, a fresh copy
  of the budget and the generator's state, and drives them with a one-number broadcast before
  each step (``step`` or ``stop``).  Backend: gloo (tensors go through host
  memory when the landscape is on a GPU).
* **torchrun** (one machine or a cluster): ``torchrun --nproc-per-node K -m evosgd.run.ddp
  SCENARIO ...`` (see :mod:`evosgd.run.ddp`).  Every rank runs the scenario's ``sgd_ddp`` runs
  in the same order through the engine loop, in lockstep (the loop's decisions only depend on quantities that
  are identical on every rank); rank 0 runs the whole scenario with the runner and writes the
  results store.  Backend: nccl when the device is CUDA (rank k on ``cuda:LOCAL_RANK``), else gloo.

Not supported: per-example statistics (``gradient_noise``, ``confidence``, ``adaptive_batch``),
which need every example's gradient in one place.
"""

from __future__ import annotations

import copy
import datetime
import importlib
import math
import os
import pickle
import select
import subprocess
import sys
import time
import weakref
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from evosgd.core.errors import EvosgdError, ParameterError
from evosgd.core.registry import OPTIMIZERS
from evosgd.gradient.estimators import GradientInfo, accumulated_gradient
from evosgd.gradient.sgd import GradientOptimizer, SGDParams

_STEP, _STOP = 1.0, 0.0


class DDPParams(SGDParams):
    """Data-parallel SGD on K real processes (the SGD options apply to the averaged gradient)."""

    workers: int = Field(2, ge=1, le=256, description="processes K, each computing the gradient of its shard of "
                         "batch_size / K examples (2: the smallest real data-parallel run; under torchrun it must "
                         "equal WORLD_SIZE)")
    sim_time: Literal["measured", "none"] = Field(
        "measured", description="measured: the budget's simulated time advances by the measured step time (seconds); "
                                "none: it stays 0")
    timeout_s: float = Field(600.0, gt=0.0, description="seconds a collective (or the start of the helper processes) "
                             "may wait before the run fails (600: ample for a slow machine, finite for a dead peer)")

    @model_validator(mode="after")
    def _ddp(self) -> DDPParams:
        if self.batch_size % self.workers:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of workers ({self.workers}): each process gets a shard")
        if self.adaptive_batch or self.gradient_noise or self.confidence != "off":
            raise ValueError("adaptive_batch, gradient_noise and confidence need every per-example gradient in one "
                             "process; sgd_ddp does not support them")
        return self


# ----------------------------------------------------------------------------- process group
def _dist() -> Any:
    import torch.distributed as dist

    if not dist.is_available():
        raise EvosgdError("this torch build has no torch.distributed; sgd_ddp cannot run")
    return dist


class _Session:
    """The process group of one ``sgd_ddp`` run as seen from one rank.

    ``owner`` ranks created the group (spawned mode) and destroy it on close; in torchrun mode
    the group belongs to the launcher.  Rank 0 of a spawned group also owns the helper processes
    and sends them the step/stop commands."""

    def __init__(self, rank: int, world: int, *, spawned: bool, owner: bool, backend: str,
                 helpers: list[Any] | None = None) -> None:
        self.rank, self.world, self.spawned, self.owner, self.backend = rank, world, spawned, owner, backend
        self.helpers = helpers or []
        self.closed = world == 1
        #: True while a step's collectives are under way: a step cut short (Ctrl-C, an error on
        #: this rank alone) leaves the helpers inside a collective, where a stop command would
        #: not match; they are terminated instead
        self.in_step = False

    @property
    def driver(self) -> bool:
        return self.spawned and self.rank == 0

    def command(self, value: float) -> float:
        """Spawned mode: rank 0 broadcasts a command, the helpers receive it."""
        dist = _dist()
        buf = torch.tensor([value], dtype=torch.float64)
        dist.broadcast(buf, src=0)
        return float(buf.item())

    def close(self) -> None:
        """Tell the helpers to stop, wait for them and leave the group (idempotent)."""
        if self.closed:
            return
        self.closed = True
        dist = _dist()
        if self.in_step:
            _terminate(self.helpers)
        try:
            if self.driver and not self.in_step and dist.is_initialized():
                self.command(_STOP)
        except Exception:
            pass  # a helper already gone: nothing to stop
        for p in self.helpers:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        if self.owner and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:
                pass  # a group broken by a dead peer: nothing left to release

    def helper_failure(self) -> str | None:
        dead = [(k + 1, p.exitcode) for k, p in enumerate(self.helpers) if p.exitcode not in (None, 0)]
        if not dead:
            return None
        return ", ".join(f"rank {r} exited with status {c}" for r, c in dead)


def _spawn_group(world: int, payload: bytes, timeout_s: float) -> _Session:
    """Rank 0 (this process) starts a TCP store on a free port, starts ranks 1..K-1 as fresh
    Python processes (``python -c ...``: nothing of the parent's main
    module is re-imported, and it works from any process, a pool worker or a Ray task alike),
    sends each its replica on stdin, waits until each has unpacked it, then joins the gloo group."""
    dist = _dist()
    store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, timeout=datetime.timedelta(seconds=timeout_s),
                          wait_for_workers=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([p for p in sys.path if p] + [os.environ.get("PYTHONPATH", "")])}
    helpers = []
    for rank in range(1, world):
        code = "import sys; from evosgd.gradient.ddp import _helper_main; _helper_main(*sys.argv[1:])"
        cmd = [sys.executable, "-c", code, str(rank), str(world), str(store.port), repr(float(timeout_s))]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        helpers.append(_Helper(p))
        p.stdin.write(payload)
        p.stdin.close()
    session = _Session(0, world, spawned=True, owner=True, backend="gloo", helpers=helpers)
    deadline = time.monotonic() + timeout_s
    waiting = {h.proc.stdout: h for h in helpers}
    while waiting:
        ready, _, _ = select.select(list(waiting), [], [], 0.2)
        for fh in ready:
            line = fh.readline()
            if line.strip() == b"ready":
                del waiting[fh]
        failure = session.helper_failure()
        if failure or time.monotonic() > deadline:
            session.closed = True
            _terminate(helpers)
            raise EvosgdError(f"sgd_ddp: helper processes did not start ({failure or f'timeout after {timeout_s:g} s'}); "
                              "their error is printed above")
    dist.init_process_group("gloo", store=store, rank=0, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    session._store = store  # the store must live as long as the group
    return session


class _Helper:
    """A helper rank's process, with the few ``multiprocessing.Process`` methods the session uses."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    @property
    def exitcode(self) -> int | None:
        return self.proc.poll()

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    def join(self, timeout: float | None = None) -> None:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()


def _terminate(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)


def _helper_main(rank: Any, world: Any, port: Any, timeout_s: Any) -> None:
    """A spawned rank: read the replica from stdin, join the group, step when told, until told to stop."""
    rank, world, port, timeout_s = int(rank), int(world), int(port), float(timeout_s)
    torch.set_num_threads(1)
    # Unpickling imports the landscape's module; nothing else of evosgd is needed here (no
    # load_all(): importing the analysis layer would double the start-up time of a helper).
    state = pickle.loads(sys.stdin.buffer.read())
    for m in state["modules"]:
        importlib.import_module(m)
    landscape = state["landscape"]
    generator = torch.Generator(device=landscape.device)
    generator.set_state(state["generator_state"])
    dist = _dist()
    store = dist.TCPStore("127.0.0.1", port, world, is_master=False, timeout=datetime.timedelta(seconds=timeout_s))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    session = _Session(rank, world, spawned=True, owner=True, backend="gloo")
    status = 0
    try:
        opt = DataParallelSGD(state["params"], landscape=landscape, budget=state["budget"], generator=generator,
                              session=session)
        while session.command(0.0) == _STEP:
            opt.step()
    except Exception as e:  # rank 0 gone (killed, Ctrl-C) or a failing step: one line, not a traceback
        print(f"sgd_ddp helper rank {rank}: stopped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr)
        status = 1
    finally:
        session.closed = True
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:
                pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # skip the interpreter's slow teardown of torch: rank 0 waits for this exit


# ----------------------------------------------------------------------------- the optimizer
@OPTIMIZERS.register("sgd_ddp", DDPParams, "real synchronous data-parallel SGD: K processes (spawned, or torchrun) "
                     "all-reduce their shard gradients with torch.distributed; measured step times", family="gradient")
class DataParallelSGD(GradientOptimizer):
    """See the module docstring.  Metrics (seconds): ``step_time`` (last step), ``worker_time_mean``,
    ``worker_time_min``, ``worker_time_std`` (all worker times so far), ``idle_fraction``
    (worker-time spent waiting for the slowest worker / K x elapsed step time, as ``sgd_sync``)."""

    kind = "sgd_ddp"
    #: the scenario preflight must not build it: construction starts the helper processes
    preflight = False

    def __init__(self, params: DDPParams, *, landscape: Any, budget: Any, generator: torch.Generator,
                 session: _Session | None = None) -> None:
        generator_state = generator.get_state()  # before anything draws: the helpers start from here
        fresh_budget = copy.deepcopy(budget)
        super().__init__(params, landscape=landscape, budget=budget, generator=generator)
        if self.stats:
            raise ParameterError("transforms", "needs per-example gradient statistics",
                                 "transforms that use the mini-batch gradient only", where="optimizer 'sgd_ddp'")
        K = params.workers
        self.shard = params.batch_size // K
        R = self.replicates
        self.step_time = torch.full((R,), math.nan, dtype=torch.float64, device=self.device)
        self._times: list[np.ndarray] = []  # worker compute times per step [K]
        self._sum = self._sum2 = self._idle = self._elapsed = 0.0
        self._min = math.inf
        self._count = 0
        if session is None:
            session = self._connect(params, landscape, fresh_budget, generator_state)
        self.session = session
        if session.world != K:
            raise ParameterError("workers", K, f"the size of the process group ({session.world})", where="optimizer 'sgd_ddp'")
        self.rank = session.rank
        # Leave the group (and stop the helpers) when the run is over and the optimizer is dropped.
        self._finalizer = weakref.finalize(self, session.close)

    @staticmethod
    def _connect(params: DDPParams, landscape: Any, budget: Any, generator_state: torch.Tensor) -> _Session:
        dist = _dist()
        K = params.workers
        if dist.is_initialized():  # torchrun (or a caller's own group): join in lockstep
            return _Session(dist.get_rank(), dist.get_world_size(), spawned=False, owner=False,
                            backend=str(dist.get_backend()))
        if K == 1:
            return _Session(0, 1, spawned=False, owner=False, backend="none")
        modules = sorted({type(landscape).__module__} - {"__main__"})
        payload = pickle.dumps({"landscape": landscape, "params": params, "budget": budget,
                                "generator_state": generator_state,
                                "modules": [m for m in modules if not m.startswith("evosgd")]})
        return _spawn_group(K, payload, params.timeout_s)

    def close(self) -> None:
        """Stop the helper processes and leave the process group (also done automatically when
        the optimizer is garbage-collected or the interpreter exits)."""
        self._finalizer()

    # -- the step -----------------------------------------------------------------------
    def step(self) -> None:
        self.session.in_step = True
        if self.session.driver and not self.session.closed:
            self.session.command(_STEP)
        super().step()
        self.session.in_step = False

    def _all_reduce(self, buf: torch.Tensor, op: Any = None) -> torch.Tensor:
        dist = _dist()
        op = dist.ReduceOp.SUM if op is None else op
        host = self.session.backend == "gloo" and buf.device.type != "cpu"
        work = buf.cpu() if host else buf
        try:
            dist.all_reduce(work, op=op)
        except Exception as e:
            failure = self.session.helper_failure()
            raise EvosgdError(f"sgd_ddp: all-reduce failed on rank {self.rank}"
                              f"{' (' + failure + ')' if failure else ''}: {e}") from None
        return work.to(buf.device) if host else work

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def gradient(self, active: torch.Tensor, t: Any) -> GradientInfo:
        p, K = self.params, self.params.workers
        R, D = self.theta.shape
        # Every rank draws the same global batch(es) (same generator): rank k keeps its shard.
        batches = [self.sampler.draw(p.batch_size, t) for _ in range(p.accumulation_steps)]
        lo, hi = self.rank * self.shard, (self.rank + 1) * self.shard
        shards = [{k: v[:, lo:hi] for k, v in b.items()} for b in batches]
        self._sync()
        start = time.perf_counter()
        local = accumulated_gradient(self.landscape, self.theta, shards, t)
        self._sync()
        compute = time.perf_counter() - start
        if K == 1:
            grads, loss = local.grads, local.loss
            worker = np.array([compute])
            step = compute
        else:
            # One all-reduce carries the gradient sums, the loss sums and every worker's time
            # (rank k's time in slot k, zeros elsewhere).
            times = torch.zeros(K, dtype=self.dtype, device=self.device)
            times[self.rank] = compute
            buf = torch.cat([local.grads.reshape(-1), local.loss.reshape(-1), times])
            buf = self._all_reduce(buf)
            grads = buf[: R * D].reshape(R, D) / K
            loss = buf[R * D: R * D + R] / K
            worker = buf[R * D + R:].detach().to("cpu", torch.float64).numpy()
            # The step time every rank agrees on: the slowest rank's compute + all-reduce.
            wall = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=self.device)
            step = float(self._all_reduce(wall, _dist().ReduceOp.MAX).item())
        self._record_times(worker, step, active)
        batch = p.batch_size * p.accumulation_steps
        return GradientInfo(grads, loss, batch)

    def _record_times(self, worker: np.ndarray, step: float, active: torch.Tensor) -> None:
        self._times.append(worker)
        self._sum += float(worker.sum())
        self._sum2 += float((worker**2).sum())
        self._min = min(self._min, float(worker.min()))
        self._count += worker.size
        self._idle += float((worker.max() - worker).sum())
        self._elapsed += step
        self.step_time = torch.where(active, torch.as_tensor(step, dtype=torch.float64, device=self.device), self.step_time)
        if self.params.sim_time == "measured":
            self.budget.advance_time(step, mask=active.cpu().numpy())

    # -- measurements -------------------------------------------------------------------
    def worker_times(self) -> np.ndarray:
        """Every worker's measured compute time per step, ``[steps, K]`` seconds."""
        K = self.params.workers
        return np.stack(self._times) if self._times else np.zeros((0, K))

    def metrics(self) -> dict[str, Any]:
        out = super().metrics()
        R, n = self.replicates, max(self._count, 1)
        mean = self._sum / n if self._count else math.nan
        var = max(self._sum2 / n - mean * mean, 0.0) * n / max(n - 1, 1) if self._count else math.nan
        out["step_time"] = self.step_time
        out["worker_time_mean"] = np.full(R, mean)
        out["worker_time_min"] = np.full(R, self._min if self._count else math.nan)
        out["worker_time_std"] = np.full(R, math.sqrt(var) if self._count else math.nan)
        out["idle_fraction"] = np.full(R, self._idle / (self.params.workers * self._elapsed) if self._elapsed > 0 else math.nan)
        return out


# ----------------------------------------------------------------------------- straggler model
def fit_worker_times(times: Any) -> dict[str, dict[str, Any]]:
    """Fit ``sgd_sync``'s ``compute_time`` distributions to measured worker times (seconds).

    * ``exponential``: MLE ``mean_time = mean(T)``;
    * ``shifted_exponential``: MLE ``shift = min(T)``, ``mean_time = mean(T) - min(T)``;
    * ``lognormal``: MLE ``mu = mean(log T)``, ``sigma = std(log T)`` (divisor n).

    Each value is a dict usable as ``compute_time = {...}`` in a scenario file, so a simulation
    can be run with the worker-time distribution of the real machine.
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    t = t[np.isfinite(t) & (t > 0)]
    if t.size < 2:
        raise ParameterError("times", f"{t.size} positive values", "at least 2 positive measured times")
    log_t = np.log(t)
    shift = float(t.min())
    return {
        "exponential": {"kind": "exponential", "mean_time": float(t.mean())},
        "shifted_exponential": {"kind": "shifted_exponential", "shift": shift,
                                "mean_time": max(float(t.mean()) - shift, 1e-12)},
        "lognormal": {"kind": "lognormal", "mu": float(log_t.mean()), "sigma": max(float(log_t.std()), 1e-12)},
    }


def straggler_check(times: Any) -> dict[str, float]:
    """Measured against predicted synchronous step compute time, from worker times ``[steps, K]``.

    The step waits for the slowest of K workers, so its compute part is ``max_k T_k``.  With the
    worker times fitted by :func:`fit_worker_times` (all steps and workers pooled), the straggler
    model predicts ``E[max of K]``: ``shift + mean_time * H_K`` for a shifted exponential and
    ``mean_time * H_K`` for an exponential (Renyi's representation of exponential order
    statistics, as in ``sgd_sync``).  Returns ``measured`` (mean over steps of the slowest time),
    the two predictions, and ``mean_worker`` (mean of all times: the K = 1 step).
    """
    from evosgd.gradient.distributed import harmonic

    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise ParameterError("times", f"shape {t.shape}", "a [steps, K] array of measured worker times")
    K = t.shape[1]
    fit = fit_worker_times(t)
    shifted = fit["shifted_exponential"]
    return {
        "workers": float(K),
        "measured": float(t.max(axis=1).mean()),
        "mean_worker": float(t.mean()),
        "predicted_shifted_exponential": shifted["shift"] + shifted["mean_time"] * harmonic(K),
        "predicted_exponential": fit["exponential"]["mean_time"] * harmonic(K),
    }
