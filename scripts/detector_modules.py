"""The fitted detectors of a resflow bundle as PyTorch modules: one transcription of each detector's
class scores, shared by the TorchScript (torch.jit.script) and the torch.export (.pt2) export of
scripts/export_detector.py. Every module here is scriptable and also runs eagerly (make_fx traces
the eager module for torch.export).

The arithmetic follows resflow's own scoring (`rf-detect score`, src/bundle/detector.rs) step by
step, in the same floating-point kinds: float32 class scores of the mean-pooled layer features,
then float64 for the regression, the percentile and the flag.
"""
import math
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_COUPLINGS = 10
NUM_PERMUTATIONS = NUM_COUPLINGS // 2


def mean_pool(activation: torch.Tensor) -> torch.Tensor:
    """Mean over the spatial positions of `[N, C, H, W]`; `[N, C]` features are kept."""
    if activation.dim() == 2:
        return activation
    return activation.flatten(2).mean(2)


class MahalanobisScorer(nn.Module):
    """Class scores -0.5 (f - mu_c)^T P (f - mu_c) of one layer (src/detect/gaussian.rs)."""

    def __init__(self, layer: int, means: torch.Tensor, precision: torch.Tensor):
        super().__init__()
        self.layer = layer
        self.register_buffer("means", means.float())
        self.register_buffer("precision", precision.float())

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        cols: List[torch.Tensor] = []
        for c in range(self.means.shape[0]):
            centred = f - self.means[c]
            cols.append((centred.matmul(self.precision) * centred).sum(1) * -0.5)
        return torch.stack(cols, 1)


class LogitScorer(nn.Module):
    """MSP, Energy or MaxLogit of the classifier's final linear layer (src/detect/logit.rs)."""

    def __init__(self, layer: int, kind: str, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.layer = layer
        self.kind = kind
        self.register_buffer("weight", weight.float())
        self.register_buffer("bias", bias.float())

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        logits = phi.matmul(self.weight.t()) + self.bias
        if self.kind == "msp":
            return logits.softmax(1)
        if self.kind == "energy":
            return logits.logsumexp(1, keepdim=True)
        return logits


class FlowScorer(nn.Module):
    """The log-densities log p_c(f) of one layer under the flows of all classes, batched over the
    classes in the layout of src/detect/flow/model.rs (s-nets rows 0..C, t-nets rows C..2C; only
    the halves of the weights a coupling uses)."""

    def __init__(self, layer: int, meta: Dict, tensors: Dict[str, torch.Tensor], means: torch.Tensor):
        super().__init__()
        self.layer = layer
        c, k = int(meta["num_classes"]), int(meta["k"])
        half = k // 2
        self.classes = c
        self.permutations = NUM_PERMUTATIONS
        self.half = half
        self.log_abs_det = float(meta["log_abs_det_a_inv"])
        self.const = -0.5 * k * math.log(2.0 * math.pi)

        def t(cls: int, name: str) -> torch.Tensor:
            return tensors["layer_%d.class_%d.%s" % (layer, cls, name)].float()

        w1, b1, w2, b2, w3, b3, neg = [], [], [], [], [], [], []
        for i in range(NUM_COUPLINGS):
            in_lo, out_lo = (half, 0) if i % 2 == 0 else (0, half)
            rows = [("s", cls) for cls in range(c)] + [("t", cls) for cls in range(c)]
            p = lambda net, cls, n: t(cls, "%s.%d.%s" % (net, i, n))
            w1.append(torch.stack([p(n, cl, "fc1.weight")[:, in_lo:in_lo + half] for n, cl in rows]))
            b1.append(torch.stack([p(n, cl, "fc1.bias").view(1, -1) for n, cl in rows]))
            w2.append(torch.stack([p(n, cl, "fc2.weight") for n, cl in rows]))
            b2.append(torch.stack([p(n, cl, "fc2.bias").view(1, -1) for n, cl in rows]))
            w3.append(torch.stack([p(n, cl, "fc3.weight")[out_lo:out_lo + half] for n, cl in rows]))
            b3.append(torch.stack([p(n, cl, "fc3.bias")[out_lo:out_lo + half].view(1, -1) for n, cl in rows]))
            g = torch.stack([p("s", cl, "rescale.weight_g") for cl in range(c)])  # [C, 1, 1]
            v = torch.stack([p("s", cl, "rescale.weight_v") for cl in range(c)])  # [C, 1, k]
            scale = g * v[:, :, out_lo:out_lo + half] / v.norm(2.0, 2, True)
            neg.append((-scale).transpose(1, 2))  # [C, half, 1]
        for name, parts in [("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2), ("w3", w3), ("b3", b3),
                            ("neg_scales", neg)]:
            self.register_buffer(name, torch.stack(parts).contiguous())
        perms = [torch.stack([tensors["layer_%d.class_%d.perm.%d.perm" % (layer, cl, j)] for cl in range(c)])
                 for j in range(NUM_PERMUTATIONS)]
        self.register_buffer("perms", torch.stack(perms).long())
        self.register_buffer("a_inv", t(0, "A_"))
        self.register_buffer("means", means.float())

    def _linear(self, i: int, bias: torch.Tensor, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == self.classes:
            x = x.repeat(2, 1, 1)
        return bias[i].transpose(1, 2).baddbmm(weight[i], x)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        centred = f.unsqueeze(0) - self.means.unsqueeze(1)
        z = self.a_inv.matmul(centred.transpose(1, 2))
        logdet = torch.full([self.classes, f.shape[0]], self.log_abs_det, dtype=f.dtype, device=f.device)
        size = z.shape
        for j in range(self.permutations - 1, -1, -1):
            halves = list(z.split(self.half, 1))
            for i in [2 * j + 1, 2 * j]:
                out_half = i % 2
                x_in, z_out = halves[1 - out_half], halves[out_half]
                h1 = F.leaky_relu(self._linear(i, self.b1, self.w1, x_in))
                h2 = F.leaky_relu(self._linear(i, self.b2, self.w2, h1))
                out = self._linear(i, self.b3, self.w3, h2)
                s_and_t = out.split(self.classes, 0)
                neg_s = s_and_t[0].tanh() * self.neg_scales[i]
                u = z_out - s_and_t[1]
                logdet = logdet + neg_s.sum(1)
                halves[out_half] = u * neg_s.exp()
            joined = torch.cat(halves, 1)
            z = joined.gather(1, self.perms[j].unsqueeze(2).expand(size[0], size[1], size[2]))
        return (logdet - z.square().sum(1) * 0.5 + self.const).transpose(0, 1)


def percentile(quantiles: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """The in-distribution percentile of each score among equally spaced quantiles, interpolated
    linearly: 0 below the smallest, 100 above the largest (src/bundle/mod.rs, `percentile`)."""
    n = quantiles.shape[0]
    above = torch.searchsorted(quantiles, score.contiguous(), right=True)
    lo = quantiles[(above - 1).clamp(0, n - 1)]
    hi = quantiles[above.clamp(0, n - 1)]
    one = torch.ones_like(score)
    within = torch.where(hi > lo, (score - lo) / torch.where(hi > lo, hi - lo, one), one)
    p = ((above - 1).to(score.dtype) + within) * (100.0 / (n - 1))
    p = torch.where(above == 0, torch.zeros_like(p), p)
    p = torch.where(above == n, torch.full_like(p, 100.0), p)
    return torch.where(torch.isnan(score), score, p)


class ExportedDetector(nn.Module):
    """Classifier and fitted detector as one module. `forward(x)` takes raw pixels in [0, 1],
    float32 `[N, 3, S, S]`, normalises them with the classifier's mean and std, and returns
    `(logits [N, C] float32, score [N] float64, percentile [N] float64, is_ood [N] bool)`.

    With a non-zero magnitude, each layer's input gradient is taken inside forward
    (torch.autograd.grad with grad mode switched on and back): call it plainly or under
    torch.no_grad(), not under torch.inference_mode()."""

    def __init__(self, features: nn.Module, scorers: List[nn.Module], eps: float, regression: bool,
                 coef: List[float], intercept: float, threshold: float, quantiles: List[float],
                 mean: List[float], std: List[float]):
        super().__init__()
        self.features = features
        self.scorers = nn.ModuleList(scorers)
        self.eps = float(eps)
        self.regression = regression
        f64 = torch.float64
        self.register_buffer("coef", torch.tensor(coef if regression else [1.0], dtype=f64))
        self.register_buffer("intercept", torch.tensor(intercept, dtype=f64))
        self.register_buffer("threshold", torch.tensor(threshold, dtype=f64))
        self.register_buffer("quantiles", torch.tensor(quantiles, dtype=f64))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        xn = (x - self.mean) / self.std
        with torch.no_grad():
            logits = self.features(xn)[0]
        cols: List[torch.Tensor] = []
        # Per layer: the best class score after input pre-processing at eps, in float64
        # (src/detect/preprocess.rs; a module cannot be passed to a scripted method, hence inline).
        for scorer in self.scorers:
            layer = scorer.layer
            xp = xn
            if self.eps != 0.0:
                prev = torch.is_grad_enabled()
                torch.set_grad_enabled(True)
                xg = xn.detach().requires_grad_(True)
                s = scorer(mean_pool(self.features(xg)[1][layer]))
                best = s.argmax(1, keepdim=True).detach()
                loss = -s.gather(1, best).mean()
                grad = torch.autograd.grad([loss], [xg])[0]
                torch.set_grad_enabled(prev)
                assert grad is not None
                step = ((grad >= 0).to(xn.dtype) * 2.0 - 1.0) / self.std
                xp = xn - step * self.eps
            with torch.no_grad():
                s = scorer(mean_pool(self.features(xp.detach())[1][layer]))
            cols.append(s.max(1)[0].to(torch.float64))
        if self.regression:
            z = torch.zeros_like(cols[0])
            for i, col in enumerate(cols):
                z = z + col * self.coef[i]
            score = -(z + self.intercept)
        else:
            score = cols[0]
        return logits, score, percentile(self.quantiles, score), score < self.threshold
