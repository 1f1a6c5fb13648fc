"""Your own problem: fit the Michaelis-Menten law v = Vmax c / (K + c) to measured enzyme kinetics
(Treloar 1974, the "Puromycin" data: rate v in counts/min/min at substrate concentration c in ppm).
Load it with --plugin examples/michaelis_menten.py, or import it before evosgd.load_scenario."""
from typing import Literal

import numpy as np
import scipy.optimize
import torch
from pydantic import BaseModel, ConfigDict, Field

import evosgd
from evosgd.landscapes.data import DataLandscape

CONC = [0.02, 0.02, 0.06, 0.06, 0.11, 0.11, 0.22, 0.22, 0.56, 0.56, 1.10, 1.10]
RATE = {"treated": [76, 47, 97, 107, 123, 139, 159, 152, 191, 201, 207, 200],
        "untreated": [67, 51, 84, 86, 98, 115, 131, 124, 144, 158, 160]}


class KineticsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cells: Literal["treated", "untreated"] = Field("treated", description="whose measurements to fit")


@evosgd.register_landscape("michaelis_menten", KineticsParams, "least-squares fit of v = Vmax c / (K + c) to the "
                           "Puromycin enzyme data; theta = (Vmax / 100, log K)", family="data")
class MichaelisMenten(DataLandscape):
    kind = "michaelis_menten"

    def __init__(self, params, *, replicates, seed, device, dtype=torch.float32):
        self.v = np.array(RATE[params.cells]) / 100.0  # in 100 counts/min/min: a loss of order 1
        self.c = np.array(CONC[: len(self.v)])
        super().__init__(dim=2, n_examples=len(self.v), replicates=replicates, device=device, dtype=dtype)
        self.params = params
        self.data = {"c": torch.tensor(self.c).expand(replicates, -1), "v": torch.tensor(self.v).expand(replicates, -1)}
        self.data = {k: x.to(self.device, dtype).contiguous() for k, x in self.data.items()}
        # replicate r starts from its own guess (from seed and r alone): Vmax in [50, 300], K in [0.01, 1]
        u = torch.stack([torch.rand(2, generator=g, dtype=torch.float64) for g in self.replicate_generators(seed, replicates)])
        self.initial_point = torch.stack([0.5 + 2.5 * u[:, 0], np.log(0.01) + np.log(100) * u[:, 1]], 1).to(self.device, dtype)

    def labelled(self, examples, concept):  # measured data: no hidden concept to apply
        return examples

    def example_losses(self, theta, batch, t=None):  # 0.5 (v_i - Vmax c_i / (K + c_i))^2, shape [R, *S, n]
        th = theta.reshape(theta.shape[0], -1, 2)
        c, v = batch["c"].unsqueeze(1), batch["v"].unsqueeze(1)
        pred = th[..., :1] * c / (th[..., 1:].exp() + c)
        return (0.5 * (pred - v) ** 2).reshape(theta.shape[:-1] + (c.shape[-1],))

    def optimum_for(self, concept):  # the best fit, by Levenberg-Marquardt in float64
        fit = scipy.optimize.least_squares(lambda p: p[0] * self.c / (np.exp(p[1]) + self.c) - self.v, [1.0, -2.0],
                                           method="lm", xtol=1e-15, ftol=1e-15)
        return torch.tensor(fit.x, dtype=self.dtype, device=self.device).expand(self.replicates, 2)

    def optimal_loss_for(self, concept):
        return self.true_loss(self.optimum_for(concept))
