"""Declarations of the optimizer metrics the report draws: a human label and a unit per metric
name (the ``m_<name>`` columns of the run table, contract 3).

A component may declare its own: a ``METRICS = {"name": ("label", "unit")}`` class attribute on
the registered optimizer factory is read through the registry and wins over this table; a metric
declared nowhere is drawn with its name in words.
"""

from __future__ import annotations

METRICS: dict[str, tuple[str, str]] = {
    "lr": ("learning rate η", ""),
    "grad_norm": ("mini-batch gradient norm ‖g‖", ""),
    "grad_noise": ("per-example gradient noise tr(Σ̂)", ""),
    "snr": ("gradient signal-to-noise ratio", ""),
    "batch_size": ("batch size b", "examples"),
    "clip_fraction": ("fraction of clipped steps", ""),
    "confidence": ("confidence factor of the lr", ""),
    "restarts": ("restarts so far", ""),
    "sigma": ("step size σ", ""),
    "condition": ("condition number of C", ""),
    "popsize": ("population size λ", "individuals"),
    "best_loss": ("best mini-batch loss in the population", ""),
    "mean_loss": ("mean mini-batch loss of the population", ""),
    "diversity": ("population diversity (mean distance to the centroid)", ""),
    "mean_fitness": ("mean fitness", ""),
    "genetic_variance": ("genetic variance", ""),
    "heterozygosity": ("heterozygosity", ""),
    "fixations": ("fixations so far", ""),
    "extinctions": ("extinctions so far", ""),
    "staleness": ("gradient staleness", "updates"),
    "staleness_max": ("largest gradient staleness", "updates"),
    "idle_fraction": ("idle fraction of the workers", ""),
    "step_time": ("simulated time per step", "time units"),
    "worker_time_mean": ("mean worker time", "time units"),
    "worker_time_min": ("smallest worker time", "time units"),
    "worker_time_std": ("standard deviation of worker time", "time units"),
}


def declared(kinds: list[str]) -> dict[str, tuple[str, str]]:
    """The METRICS class attributes of the optimizer kinds ``kinds`` (through the registry)."""
    from evosgd.core.registry import OPTIMIZERS

    out: dict[str, tuple[str, str]] = {}
    for k in kinds:
        if k in OPTIMIZERS:
            out.update(getattr(OPTIMIZERS.get(k).factory, "METRICS", None) or {})
    return out


def metric_label(name: str, kinds: list[str] | None = None) -> str:
    """``"step size σ"``, with ``" [unit]"`` when the metric has one."""
    label, unit = {**METRICS, **declared(kinds or [])}.get(name, (name.replace("_", " "), ""))
    return f"{label} [{unit}]" if unit else label


def family_of(kind: str) -> str:
    """``"gradient"`` or ``"evolution"`` (the registry's family of the optimizer kind), else ``"other"``."""
    from evosgd.core.registry import OPTIMIZERS

    return (OPTIMIZERS.get(kind).family or "other") if kind in OPTIMIZERS else "other"
