"""Device-kernel operator calls of ONE flow-training optimisation step, counted on the CPU.

Reference side: one class's step of `benches/reference_flow_train.py` (the tests' RealNVP
transcription, tests/it/flow_ref/realnvp.py; torch.optim.Adam, lr 1e-5): forward of a batch,
loss = -sum log p, zero_grad, backward, Adam step, with foreach=False (what torch picks for CPU
tensors) and foreach=True (what torch picks when every parameter is on CUDA).
Our side (cross-check of the count read off the Rust code): the same ATen calls as
src/detect/flow/model.rs (`FlowModel::latent`, `log_prob_centred`, `flatten_parameters`), train.rs
(`train_iteration`, one step with every class active and full batches: `Tensor::run_backward`, i.e.
autograd.grad, no AccumulateGrad) and adam.rs (`ClassAdam::step`: `FlatState::step` on the flat
buffers, always on CUDA and on the CPU below CPU_LOOP_MIN parameters; from CPU_LOOP_MIN on the CPU
takes adam_cpu.rs's loop, whose only operator calls are the contiguous copies of the
non-contiguous gradients), written out in Python; tch calls
the same ATen operators, so the autograd graph and the operator calls are the same. Variants
counted: "cuda" (flat step, every class with the same step count: scalar coefficients), "cuda-
unequal" (flat step, step counts differing between classes, as after an epoch in which some class
had fewer batches: per-row coefficient tensors), "cpu" (only when the layer has at least
CPU_LOOP_MIN parameters: the loop; one libtorch thread, as in the trainer's lanes, lowers the threshold
to CPU_LOOP_MIN_ONE_THREAD, not modelled here). --adam-5f523cd: the whole step as at commit 5f523cd
(separate parameter tensors, `loss.backward()` accumulating into zeroed .grad tensors, per-tensor
Adam with two coefficient uploads per tensor and a `zero_` of every gradient).

Counting rule (torch.profiler, CPU activities, steady state: profiled after two warm-up steps):
  walk the profiler's call tree top-down; at each `aten::` event
  - view / metadata / allocation-only ops (VIEW_META below: view, _reshape_alias, t, transpose,
    expand, as_strided, select, slice, narrow, unsqueeze, detach, empty*, item, ...) count 0 and
    are not entered (reshape is entered: a view costs 0, a copying reshape its clone's copy_);
  - an op with its own CUDA kernel (torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")
    for some overload), or copy_, counts 1 and is not entered (what it calls inside on the CPU,
    e.g. addmm's bias copy_ or sum's fill_, is that kernel's business);
  - any other op (a composite: linear, matmul, to, zeros, ones_like, repeat, stack, ...) counts 0
    and its children are counted (of repeat only its copy_: the arange/add/cat it also calls
    build a dimension permutation on small CPU tensors, whatever the input's device).
  - repeat_interleave.self_Tensor (a composite sharing its name with the kernel overload
    repeat_interleave.Tensor) is entered: it counts that kernel (1, though on CUDA it also runs a
    cumsum) and an index_select.
  Non-aten events (autograd engine nodes, AccumulateGrad, record_function ranges) are entered.
  In the reference's optimizer step, ops whose tensor inputs are all 0-dim are excluded: they act
  on Adam's `step` counters, which stay on the CPU for CUDA parameters unless capturable=True (not
  applied to ours: the profiler records a TensorList argument, e.g. cat's, as 0-dim too).
  A `_foreach_*` op counts 1 dispatch; its CUDA launches are simulated with multi_tensor_apply's
  limits (kChunkSize 65536, the CUDA >= 13 table of this cu130 wheel: max tensors per launch
  770/448/336/252/210 by depth, 2240 blocks) from the per-tensor calls the CPU slow path records.
  In the transcription of our side, `host` ranges (tensors built on the CPU from Rust slices)
  count 0 and `transfer` ranges (a host<->device copy on a GPU) count 1.
The counts do not depend on the batch size (only on k through adam.rs's CPU-only paths).

Usage: count_kernels.py [--classes C] [--batch B] [--verbose] [--adam-5f523cd] [K ...]
(default K = 16 64 512; --adam-5f523cd: our step as at commit 5f523cd instead of the working tree)
"""
import math
import os
import sys
from collections import Counter

import torch
import torch.nn.functional as F
from torch.optim.optimizer import _default_to_fused_or_foreach
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_flow_train import new_flow  # noqa: E402  (also puts realnvp.py on the path)

VIEW_META = {
    "aten::" + n
    for n in (
        "view view_as _unsafe_view _reshape_alias as_strided t transpose permute expand "
        "expand_as unsqueeze squeeze select slice narrow split split_with_sizes unbind chunk alias "
        "detach detach_ lift_fresh empty empty_like empty_strided new_empty new_empty_strided "
        "resize_ resolve_conj resolve_neg result_type item _local_scalar_dense is_nonzero set_ "
        "unfold diagonal"
    ).split()
}
ALWAYS_KERNEL = {"aten::copy_"}
# Composites whose other children work on small CPU tensors even for CUDA inputs (repeat builds a
# dimension permutation with arange/add/cat on the CPU): only these children count.
DEVICE_WORK_ONLY = {"aten::repeat": ("aten::copy_",)}
# Names shared by a composite overload and a kernel overload: entered when the event calls the same
# name (repeat_interleave.self_Tensor calls repeat_interleave.Tensor, then index_select).
SHARED_NAMES = {"aten::repeat_interleave"}
MTA_MAX_TENSORS = (770, 448, 336, 252, 210)  # CUDA >= 13 builds (MultiTensorApply.cuh)
MTA_MAX_BLOCKS = 2240
MTA_CHUNK = 65536

_kernel_cache = {}


def has_cuda_kernel(name):
    if name not in _kernel_cache:
        base = name[len("aten::"):]
        found = False
        try:
            packet = getattr(torch.ops.aten, base)
            for ov in packet.overloads():
                full = name if ov == "default" else "%s.%s" % (name, ov)
                try:
                    if torch._C._dispatch_has_kernel_for_dispatch_key(full, "CUDA"):
                        found = True
                        break
                except RuntimeError:
                    pass
        except AttributeError:
            pass
        _kernel_cache[name] = found
    return _kernel_cache[name]


def all_scalar(shapes):
    return all(s == [] for s in shapes)


def mta_launches(event):
    """CUDA launches of a _foreach_ op, from the per-tensor calls of its CPU slow path."""
    calls = event.cpu_children
    if not calls:
        return 1
    depth = sum(1 for s in calls[0].input_shapes if s != [])
    if not event.name.endswith("_"):
        depth += 1  # out-of-place: the output list
    max_tensors = MTA_MAX_TENSORS[min(depth, 5) - 1]
    launches, tensors, blocks = 0, 0, 0
    for c in calls:
        numel = math.prod(c.input_shapes[0]) if c.input_shapes and c.input_shapes[0] else 1
        tensors += 1
        chunks = -(-numel // MTA_CHUNK)
        for chunk in range(chunks):
            blocks += 1
            if (tensors == max_tensors and chunk == chunks - 1) or blocks == MTA_MAX_BLOCKS:
                launches += 1
                blocks = 0
                tensors = 0 if chunk == chunks - 1 else 1
    return launches + (1 if blocks else 0)


def count(prof, step_counters):
    """{phase: (Counter of kernel ops, CUDA launches)} for the record_function phases.
    step_counters: leave out the optimizer's ops on 0-dim tensors (torch.optim.Adam's `step`
    counters; the profiler also records a TensorList argument, e.g. cat's, as 0-dim, so this is
    only for the reference, whose Adam has no such op)."""
    out = {}

    def walk(e, phase, tally):
        name = e.name
        if not name.startswith("aten::"):
            if name == "host":
                return
            if name == "transfer":
                tally[0]["<host-device copy>"] += 1
                tally[1] += 1
                return
            for c in e.cpu_children:
                walk(c, phase, tally)
            return
        if name in VIEW_META:
            return
        if name.startswith("aten::_foreach_"):
            if step_counters and phase == "adam" and e.cpu_children and all(
                    all_scalar(c.input_shapes) for c in e.cpu_children):
                return
            tally[0][name] += 1
            tally[1] += mta_launches(e)
            return
        if name in DEVICE_WORK_ONLY:
            for c in e.cpu_children:
                if c.name in DEVICE_WORK_ONLY[name]:
                    tally[0][c.name] += 1
                    tally[1] += 1
            return
        if name in SHARED_NAMES and any(c.name == name for c in e.cpu_children):
            for c in e.cpu_children:
                walk(c, phase, tally)
            return
        if name in ALWAYS_KERNEL or has_cuda_kernel(name):
            if step_counters and phase == "adam" and all_scalar(e.input_shapes):
                return
            tally[0][name] += 1
            tally[1] += 1
            return
        for c in e.cpu_children:
            walk(c, phase, tally)

    for e in prof.events():
        if e.cpu_parent is None and e.name in ("forward", "backward", "adam"):
            tally = out.setdefault(e.name, [Counter(), 0])
            walk(e, e.name, tally)
    return out


def profiled(step, step_counters=False):
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    return count(prof, step_counters)


def reference_counts(k, batch, foreach):
    torch.manual_seed(0)
    a_inv = torch.linalg.qr(torch.randn(k, k))[0]
    perms = [torch.randperm(k) for _ in range(5)]
    flow = new_flow(a_inv, perms)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-5, foreach=foreach)
    x = torch.randn(batch, k)

    def step():
        with record_function("forward"):
            loss = -flow.log_prob(x).sum()
            opt.zero_grad()
        with record_function("backward"):
            loss.backward()
        with record_function("adam"):
            opt.step()

    step()
    step()
    return profiled(step, step_counters=True)


# ---- our side: src/detect/flow/{model,train,adam}.rs written out with the same ATen calls ----

ROW_CHUNK = 1 << 16
CPU_LOOP_MIN = 1 << 20


def transfer(make):
    with record_function("transfer"):
        return make()


def host(make):
    with record_function("host"):
        return make()


class Ours:
    """One optimisation step of our trainer with every class active (full batches).

    Default: the working tree. The parameters are views of one flat buffer
    (`FlowModel::flatten_parameters`), the gradients come from `Tensor::run_backward` (autograd.grad:
    no AccumulateGrad, nothing to zero), m and v are flat buffers, and `ClassAdam::step` takes
    `FlatState::step` when `flat` (always on CUDA; on the CPU below CPU_LOOP_MIN parameters), else
    (`cpu_loop`) adam_cpu.rs's loop on the host, after `contiguous()` of each gradient. at_5f523cd:
    the step as at commit 5f523cd: separate parameter tensors,
    `loss.backward()` accumulating into zeroed .grad tensors, per-tensor Adam with two coefficient
    uploads per parameter tensor and a `zero_` of each gradient."""

    def __init__(self, k, classes, batch, at_5f523cd=False):
        torch.manual_seed(0)
        self.at_5f523cd = at_5f523cd
        self.flat = not at_5f523cd
        self.cpu_loop = False
        c, h, half = classes, k, k // 2
        self.k, self.c, self.batch = k, classes, batch
        self.a_inv = torch.linalg.qr(torch.randn(k, k))[0]
        self.perms = torch.stack([torch.stack([torch.randperm(k) for _ in range(c)]) for _ in range(5)])

        def p(*shape, scale=0.1):
            return torch.randn(*shape) * scale

        # CouplingParams: w1 [2C,h,k/2], b1 [2C,1,h], w2 [2C,h,h], b2 [2C,1,h], w3 [2C,k/2,h],
        # b3 [2C,1,k/2], g [C,1,1], v [C,1,k]
        params = [
            t
            for _ in range(10)
            for t in (p(2 * c, h, half), p(2 * c, 1, h), p(2 * c, h, h), p(2 * c, 1, h), p(2 * c, half, h),
                      p(2 * c, 1, half), p(c, 1, 1, scale=1.0), p(c, 1, k, scale=1.0))
        ]
        shapes = [list(t.shape) for t in params]
        self.numel = sum(t.numel() for t in params)
        if at_5f523cd:
            self.params = [t.requires_grad_(True) for t in params]
            self.m = [torch.zeros_like(t) for t in params]
            self.v = [torch.zeros_like(t) for t in params]
        else:
            # flatten_parameters, ClassAdam::new + with_flat_parameters
            self.p_flat = torch.cat([t.reshape(-1) for t in params], 0)
            self.params = [t.requires_grad_(True) for t in flat_views(self.p_flat, shapes)]
            self.m_flat = torch.zeros(self.numel)
            self.v_flat = torch.zeros(self.numel)
            self.m = flat_views(self.m_flat, shapes)
            self.v = flat_views(self.v_flat, shapes)
            self.row_classes = [r % c for s in shapes for r in range(s[0])]
            self.row_lengths = torch.tensor([math.prod(s[1:]) for s in shapes for _ in range(s[0])])
        self.couplings = [self.params[8 * i: 8 * i + 8] for i in range(10)]
        self.steps = [0] * c
        self.train = [torch.randn(4 * batch, k) for _ in range(c)]
        self.train_rows = torch.cat(self.train + [torch.zeros(1, k)], 0)

    def latent(self, centred):
        if self.at_5f523cd:
            return self.latent_5f523cd(centred)
        c, b, k, half = self.c, centred.shape[1], self.k, self.k // 2
        z = self.a_inv.matmul(centred.transpose(1, 2))
        logdet = torch.full([c, b], 0.0)
        v = torch.stack([cp[7] for cp in self.couplings], 0)
        v_used = v.view([5, 2, c, 1, 2, half]).diagonal(0, 1, 4).permute([0, 4, 1, 2, 3]).reshape([10, c, 1, half])
        g = torch.stack([cp[6] for cp in self.couplings], 0)
        neg_scales = (-(g * v_used / torch.ops.aten.norm.ScalarOpt_dim(v, 2.0, [3], True))).transpose(2, 3).unbind(0)
        for j in reversed(range(5)):
            halves = list(z.split(half, 1))
            for i in (2 * j + 1, 2 * j):
                w1, b1, w2, b2, w3, b3, _, _ = self.couplings[i]
                in_first = i % 2 == 1
                x_in, z_out = (halves[0], halves[1]) if in_first else (halves[1], halves[0])
                x2 = x_in.repeat([2, 1, 1])
                h1 = F.leaky_relu(b1.transpose(1, 2).baddbmm(w1, x2, beta=1.0, alpha=1.0))
                h2 = F.leaky_relu(b2.transpose(1, 2).baddbmm(w2, h1, beta=1.0, alpha=1.0))
                out = b3.transpose(1, 2).baddbmm(w3, h2, beta=1.0, alpha=1.0)
                s_raw, t = out.split(c, 0)
                neg_s = s_raw.tanh() * neg_scales[i]
                new_out = (z_out - t) * neg_s.exp()
                logdet += neg_s.sum([1], False, dtype=torch.float32)
                halves[1 if in_first else 0] = new_out
            joined = torch.cat(halves, 1)
            perm = self.perms.select(0, j)
            z = joined.gather(1, perm.unsqueeze(2).expand([c, k, b]))
        return z.transpose(1, 2), logdet

    def latent_5f523cd(self, centred):
        c, b, k, half = self.c, centred.shape[1], self.k, self.k // 2
        z = centred.matmul(self.a_inv.t())
        logdet = torch.full([c, b], 0.0)
        for i in reversed(range(10)):
            w1, b1, w2, b2, w3, b3, g, v = self.couplings[i]
            in_lo, out_lo = (half, 0) if i % 2 == 0 else (0, half)
            x_in = z.narrow(2, in_lo, half)
            z_out = z.narrow(2, out_lo, half)
            x2 = x_in.repeat([2, 1, 1])
            h1 = F.leaky_relu(b1.baddbmm(x2, w1.transpose(1, 2), beta=1.0, alpha=1.0))
            h2 = F.leaky_relu(b2.baddbmm(h1, w2.transpose(1, 2), beta=1.0, alpha=1.0))
            out = b3.baddbmm(h2, w3.transpose(1, 2), beta=1.0, alpha=1.0)
            s_raw = out.narrow(0, 0, c)
            t = out.narrow(0, c, c)
            scale = g * v / torch.ops.aten.norm.ScalarOpt_dim(v, 2.0, [2], True)
            s = s_raw.tanh() * scale.narrow(2, out_lo, half)
            new_out = (z_out - t) * (-s).exp()
            logdet -= s.sum([2], False, dtype=torch.float32)
            z = torch.cat([x_in, new_out] if in_lo < out_lo else [new_out, x_in], 2)
            if i % 2 == 0:
                perm = self.perms.select(0, i // 2)
                z = z.gather(2, perm.unsqueeze(1).expand([c, b, k]))
        return z, logdet

    def log_prob_centred(self, centred):
        z, logdet = self.latent(centred)
        const = -0.5 * self.k * math.log(2 * math.pi)
        return logdet - z.square().sum([2], False, dtype=torch.float32) * 0.5 + const

    def adam_step(self, grads):
        """ClassAdam::step with every class active."""
        b1, b2, eps, lr = 0.9, 0.999, 1e-8, 1e-5
        c = self.c
        self.steps = [s + 1 for s in self.steps]
        coef = [(lr / (1 - b1 ** s), math.sqrt(1 - b2 ** s)) for s in self.steps]
        with torch.no_grad():
            if self.cpu_loop:
                # adam_cpu::step: contiguous gradients, then the loop on the host (no operators).
                contiguous = [g.contiguous() for g in grads]
                host(lambda: contiguous)
                return
            if self.flat:
                self.flat_step(grads, coef, b1, b2, eps)
                return
            shared = {}

            def upload(vals, shape):
                return transfer(lambda: host(lambda: torch.tensor(vals, dtype=torch.float64).view(shape).to(torch.float32)).clone())

            for p, grad, m, v in zip(self.params, grads, self.m, self.v):
                reps = p.shape[0] // c
                rows = [r * c + cls for r in range(reps) for cls in range(c)]
                ss = [coef[r % c][0] for r in rows]
                b2s = [coef[r % c][1] for r in rows]
                shape = [len(rows)] + [1] * (p.dim() - 1)
                sc = [-1.0 / (q * s_) for s_, q in zip(ss, b2s)]
                off = [-eps / s_ for s_ in ss]
                if not self.at_5f523cd and (reps, p.dim()) not in shared:
                    shared[(reps, p.dim())] = (upload(sc, shape), upload(off, shape))
                if p.numel() // p.shape[0] >= ROW_CHUNK:
                    for r, s_, q in zip(rows, ss, b2s):
                        pr, gr, mr, vr = p.select(0, r), grad.select(0, r), m.select(0, r), v.select(0, r)
                        mr.lerp_(gr, 1.0 - b1)
                        vr.mul_(b2)
                        vr.addcmul_(gr * (1.0 - b2), gr)
                        denom = vr.sqrt()
                        denom.mul_(-1.0 / (q * s_))
                        denom.add_(-eps / s_)
                        pr.addcdiv_(mr, denom)
                elif self.at_5f523cd:
                    scale, offset = upload(sc, shape), upload(off, shape)
                    m.lerp_(grad, 1.0 - b1)
                    v.mul_(b2)
                    v.addcmul_(grad * (1.0 - b2), grad)
                    denom = v.sqrt()
                    denom.mul_(scale)
                    denom.add_(offset)
                    p.addcdiv_(m, denom)
                else:
                    scale, offset = shared[(reps, p.dim())]
                    m.lerp_(grad, 1.0 - b1)
                    v.mul_(b2)
                    v.addcmul_(grad * (1.0 - b2), grad)
                    denom = offset.addcmul(v.sqrt(), scale)
                    p.addcdiv_(m, denom)
                if self.at_5f523cd:
                    grad.zero_()

    def flat_step(self, grads, per_class, b1, b2, eps):
        """FlatState::step."""
        g = torch.cat([t.reshape(-1) for t in grads], 0)
        m, v, params = self.m_flat, self.v_flat, self.p_flat
        m.lerp_(g, 1.0 - b1)
        v.mul_(b2)
        v.addcmul_(g * (1.0 - b2), g)

        def scale(sb):
            return -1.0 / (sb[1] * sb[0])

        def offset(sb):
            return -eps / sb[0]

        if all(a == b for a, b in zip(per_class, per_class[1:])):
            denom = v.sqrt()
            denom.mul_(scale(per_class[0]))
            denom.add_(offset(per_class[0]))
        else:
            def per_element(f):
                rows = [f(per_class[cls]) for cls in self.row_classes]
                t = transfer(lambda: host(lambda: torch.tensor(rows, dtype=torch.float64).to(torch.float32)).clone())
                return t.repeat_interleave(self.row_lengths, 0, output_size=v.numel())

            denom = per_element(offset).addcmul(v.sqrt(), per_element(scale))
        params.addcdiv_(m, denom)

    def step(self):
        with record_function("forward"):
            if self.at_5f523cd:
                batches = []
                for cls in range(self.c):
                    order = host(lambda: torch.randperm(self.train[cls].shape[0])[: self.batch])
                    idx = transfer(lambda: order.clone())
                    batches.append(self.train[cls].index_select(0, idx))
                x = torch.stack(batches, 0)
            else:
                # One index_select of all classes' rows (Trainer::train_rows).
                n = self.train_rows.shape[0] - 1
                rows = host(lambda: torch.randperm(n)[: self.c * self.batch])
                idx = transfer(lambda: rows.clone())
                x = self.train_rows.index_select(0, idx).view([self.c, self.batch, -1])
            log_p = self.log_prob_centred(x)
            class_loss = -log_p.sum([1], False, dtype=torch.float32)
            values = class_loss.detach().to(torch.float64)  # to_kind(Double) on the device
            transfer(lambda: values.clone())  # Vec::<f64>::try_from: device -> host copy
            total = class_loss.sum(dtype=torch.float32)
        with record_function("backward"):
            if self.at_5f523cd:
                total.backward()  # AccumulateGrad into .grad (zeroed by the last Adam step)
                grads = [p.grad for p in self.params]
            else:
                grads = torch.autograd.grad([total], self.params)  # Tensor::run_backward
        with record_function("adam"):
            self.adam_step(grads)
        return grads


def flat_views(flat, shapes):
    """adam.rs flat_views: consecutive views of a 1-D tensor."""
    out, offset = [], 0
    for s in shapes:
        n = math.prod(s)
        out.append(flat.narrow(0, offset, n).view(s))
        offset += n
    return out


def ours_counts(k, classes, batch, at_5f523cd):
    """{variant: profiled phases}. at_5f523cd: {"5f523cd": ...}. Otherwise "cuda" (flat Adam, every
    class with the same step count), "cuda-unequal" (flat Adam, step counts differing between
    classes) and, when the layer has at least CPU_LOOP_MIN parameters, "cpu" (the loop)."""
    model = Ours(k, classes, batch, at_5f523cd)
    model.step()
    model.step()
    if at_5f523cd:
        return {"5f523cd": profiled(model.step)}, model
    out = {"cuda": profiled(model.step)}
    grads = model.step()
    model.noncontiguous = [i for i, g in enumerate(grads) if not g.is_contiguous()]
    model.steps[0] -= 1  # class 0 one step behind from now on
    model.step()
    out["cuda-unequal"] = profiled(model.step)
    if model.numel >= CPU_LOOP_MIN:
        model.cpu_loop = True
        model.step()
        out["cpu"] = profiled(model.step)
    return out, model


def ops(phases, phase):
    return sum(phases[phase][0].values()) if phase in phases else 0


def launches(phases, phase):
    return phases[phase][1] if phase in phases else 0


def main():
    args = sys.argv[1:]
    classes, batch, verbose, ks = 10, 256, False, []
    at_5f523cd = False
    i = 0
    while i < len(args):
        if args[i] == "--classes":
            classes = int(args[i + 1])
            i += 1
        elif args[i] == "--batch":
            batch = int(args[i + 1])
            i += 1
        elif args[i] == "--verbose":
            verbose = True
        elif args[i] == "--adam-5f523cd":
            at_5f523cd = True
        else:
            ks.append(int(args[i]))
        i += 1
    ks = ks or [16, 64, 512]
    torch.set_num_threads(1)
    probe = [torch.nn.Parameter(torch.zeros(1))]
    print("torch %s; torch.optim.Adam default for CPU parameters: foreach=%s (for CUDA ones: True)"
          % (torch.__version__, _default_to_fused_or_foreach(probe, False, False)[1]))
    print("ops = device-kernel operator calls per optimisation step (rule in the docstring); batch %d; ours: %s"
          % (batch, "as at commit 5f523cd" if at_5f523cd else "working tree"))
    print()
    head = ("| k | ref fwd+loss | ref bwd | ref Adam foreach=False | ref Adam foreach=True (dispatches / launches) "
            "| ref per class (foreach=True) | ref x %d classes | ours fwd+loss | ours bwd " % classes)
    if at_5f523cd:
        print(head + "| ours Adam | ours per step (%d classes) |" % classes)
        print("|---:" * 11 + "|")
    else:
        print(head + "| ours Adam, flat (CUDA): equal (unequal) step counts | ours per step, CUDA: equal (unequal) "
              "| layer parameters | ours Adam, CPU | ours per step, CPU |")
        print("|---:" * 14 + "|")
    notes = []
    for k in ks:
        single = reference_counts(k, batch, foreach=False)
        multi = reference_counts(k, batch, foreach=True)
        ours, model = ours_counts(k, classes, batch, at_5f523cd)
        numel = model.numel
        names = ("w1", "b1", "w2", "b2", "w3", "b3", "g", "v")
        nc = getattr(model, "noncontiguous", [])
        if nc:
            notes.append("k=%d: %d of %d gradients from autograd.grad are non-contiguous (%s): the flat "
                         "step's reshape(-1) copies each" % (k, len(nc), len(model.params),
                                                             " ".join(sorted({names[i % 8] for i in nc}))))
        del model
        ref_class = launches(multi, "forward") + launches(multi, "backward") + launches(multi, "adam")
        main_variant = ours["5f523cd" if at_5f523cd else "cuda"]
        fwd, bwd = ops(main_variant, "forward"), ops(main_variant, "backward")
        for variant, phases in ours.items():
            assert (ops(phases, "forward"), ops(phases, "backward")) == (fwd, bwd), variant
            assert sum(launches(phases, p) for p in ("forward", "backward", "adam")) == fwd + bwd + ops(phases, "adam")
        row = "| %d | %d | %d | %d | %d / %d | %d | %d | %d | %d " % (
            k, ops(single, "forward"), ops(single, "backward"), ops(single, "adam"),
            ops(multi, "adam"), launches(multi, "adam"), ref_class, classes * ref_class, fwd, bwd)
        if at_5f523cd:
            adam = ops(main_variant, "adam")
            print(row + "| %d | %d |" % (adam, fwd + bwd + adam))
        else:
            eq, uneq = ops(ours["cuda"], "adam"), ops(ours["cuda-unequal"], "adam")
            cpu = ops(ours["cpu"], "adam") if "cpu" in ours else eq
            print(row + "| %d (%d) | %d (%d) | %d (%s CPU_LOOP_MIN) | %d%s | %d |" % (
                eq, uneq, fwd + bwd + eq, fwd + bwd + uneq, numel, ">=" if numel >= CPU_LOOP_MIN else "<",
                cpu, " (loop)" if "cpu" in ours else " (flat)", fwd + bwd + cpu))
        if verbose:
            listing = [("reference foreach=False", single), ("reference foreach=True", multi)]
            listing += [("ours " + v, p) for v, p in ours.items()]
            for label, phases in listing:
                for phase in ("forward", "backward", "adam"):
                    if phase in phases:
                        items = ", ".join("%s %d" % (n.replace("aten::", ""), v) for n, v in sorted(phases[phase][0].items()))
                        print("    k=%d %s %s: %s" % (k, label, phase, items))
        sys.stdout.flush()
    for note in notes:
        print("note: " + note)


if __name__ == "__main__":
    main()
