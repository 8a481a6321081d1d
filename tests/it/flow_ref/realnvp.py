"""The reference's residual flow (RealNVP with weight-normalised rescale), written out in PyTorch
for the tests: loads one class's flow_<c>.safetensors in the reference's state-dict names."""
import math

import torch
from torch import nn
import torch.nn.functional as F
from safetensors.torch import load_file


class Net(nn.Module):
    def __init__(self, k, h, with_rescale):
        super().__init__()
        self.fc1 = nn.Linear(k, h)
        self.fc2 = nn.Linear(h, h)
        self.fc3 = nn.Linear(h, k)
        if with_rescale:
            self.rescale = Rescale(k)

    def forward(self, x):
        x = F.leaky_relu(self.fc1(x))
        x = F.leaky_relu(self.fc2(x))
        x = self.fc3(x)
        return self.rescale(torch.tanh(x)) if hasattr(self, "rescale") else x


class Rescale(nn.Module):
    """nn.utils.weight_norm(Rescale) with dim=0: weight = g * v / ||v|| over all but dim 0."""

    def __init__(self, k):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1))
        self.weight_v = nn.Parameter(torch.ones(1, k))

    def forward(self, x):
        return torch._weight_norm(self.weight_v, self.weight_g, 0) * x


class Perm(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.register_buffer("perm", torch.zeros(k, dtype=torch.long))
        self.register_buffer("inv_perm", torch.zeros(k, dtype=torch.long))
        self.register_buffer("W", torch.zeros(k, k))


class RealNVP(nn.Module):
    def __init__(self, meta):
        super().__init__()
        k, h = meta["k"], int(meta["length_hidden"] * meta["k"])
        self.log_abs_det_a_inv = meta["log_abs_det_a_inv"]
        self.mask = nn.Parameter(torch.zeros(10, k), requires_grad=False)
        self.t = nn.ModuleList([Net(k, h, False) for _ in range(10)])
        self.s = nn.ModuleList([Net(k, h, True) for _ in range(10)])
        self.perm = nn.ModuleList([Perm(k) for _ in range(5)])
        self.A_ = nn.Parameter(torch.zeros(k, meta["dim"]), requires_grad=False)
        self.A = nn.Parameter(torch.zeros(meta["dim"], k), requires_grad=False)

    def log_prob(self, x):
        z = torch.mm(self.A_, x.t()).t()
        ld = torch.zeros(x.shape[0], dtype=x.dtype) + self.log_abs_det_a_inv
        for i in reversed(range(10)):
            z_ = self.mask[i] * z
            s = self.s[i](z_) * (1 - self.mask[i])
            t = self.t[i](z_) * (1 - self.mask[i])
            z = (1 - self.mask[i]) * (z - t) * torch.exp(-s) + z_
            ld -= s.sum(dim=1)
            if i % 2 == 0:
                z = z[:, self.perm[i // 2].perm]
        return -0.5 * z.size(1) * math.log(2 * math.pi) - 0.5 * (z**2).sum(dim=1) + ld


def load_flows(folder, meta, dtype=torch.float64):
    """One RealNVP per class from `folder`/flow_<c>.safetensors, converted to `dtype`."""
    flows = []
    for c in range(meta["num_classes"]):
        flow = RealNVP(meta)
        sd = {
            n: t.to(dtype) if t.is_floating_point() else t
            for n, t in load_file("%s/flow_%d.safetensors" % (folder, c)).items()
        }
        flow.load_state_dict(sd, strict=True)
        flows.append(flow.to(dtype))
    return flows
