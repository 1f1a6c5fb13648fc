"""Deterministic seeding.

Every random stream of a run is a :class:`torch.Generator` seeded by :func:`derive_seed` from the
scenario seed and a path of keys, e.g. ``derive_seed(seed, "landscape", r)`` for the landscape
instance of replicate ``r`` (the same for every optimizer of a scenario: common random numbers)
and ``derive_seed(seed, run_id, "optimizer")`` for the optimizer's own noise.  The derivation is a
cryptographic hash, so streams for different keys are independent for practical purposes and do
not depend on the order in which they are created.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(base: int, *keys: object) -> int:
    """A 63-bit seed from a base seed and a path of keys (ints or strings), stable across runs,
    platforms and Python versions (no use of ``hash()``)."""
    text = "/".join([str(int(base))] + [repr(k) if not isinstance(k, str) else k for k in keys])
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed))
    return g
