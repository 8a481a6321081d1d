#!/usr/bin/env python3
"""Export a resflow bundle's classifier and fitted detector as one model: TorchScript (`.pt`),
torch.export (`.pt2`) and, on request, an AOTInductor package (`.aoti.pt2`).

Run by `rf-detect export`, which checks the bundle first (format, classifier SHA-256, detector
kind); it can also be run by hand with the same arguments:

  export_detector.py --bundle B --detector resflow --classifier C.safetensors \\
      --format both [--aoti] [--device cpu|cuda] [--class-names '["a", ...]'] OUT_DIR

OUT_DIR receives detector.pt and/or detector.pt2 (and detector.aoti.pt2), detector.json (the
metadata, also inside each model file as the extra file `resflow.json`) and config.pbtxt (Triton,
for detector.pt). Each model's `forward(x)`: raw pixels in [0, 1], float32 [N, 3, S, S] ->
(logits, score, percentile, is_ood); see detector_modules.ExportedDetector.

The detectors' arithmetic lives once, in detector_modules.py. TorchScript scripts that module
(the input gradient of pre-processing is torch.autograd.grad inside forward); torch.export cannot
capture torch.autograd.grad inside forward (torch 2.13), so the eager module is first traced with
make_fx, which writes the backward pass out as plain aten operators, and that graph is exported.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detector_modules as dm  # noqa: E402

SIDECAR_FORMAT = "resflow-export-1"
SUPPORTED = ["resflow", "mahalanobis", "msp", "energy", "maxlogit"]
MAX_BATCH = 1024


def fail(message):
    print("error: " + message, file=sys.stderr)
    sys.exit(2)


class FeatureList(nn.Module):
    """forward(x) = (logits, [layer features]) of a classifier with `feature_list`."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.feature_list(x)


def load_classifier(identity, path):
    """The eager classifier (as FeatureList) and its sidecar."""
    sidecar_path = os.path.splitext(path)[0] + ".json"
    with open(sidecar_path) as f:
        sidecar = json.load(f)
    if identity["net_type"] == "torchscript":
        return FeatureList(torch.jit.load(path, map_location="cpu").eval()), sidecar
    import reference_models as rm
    from safetensors.torch import load_file

    net = rm.build(identity["net_type"], sidecar["width"], sidecar["num_classes"])
    net.load_state_dict(load_file(path), strict=True)
    return FeatureList(net.eval()), sidecar


def scorers_of(kind, entry, saved, tensors):
    """One scorer module per layer the bundle's detector uses, in the order of its `coef`."""
    out = []
    for layer in entry["layers"]:
        if kind == "mahalanobis":
            out.append(dm.MahalanobisScorer(layer, tensors["layer_%d.means" % layer],
                                            tensors["layer_%d.precision" % layer]))
        elif kind == "resflow":
            meta = saved["meta"]["flows"][saved["layers"].index(layer)]
            out.append(dm.FlowScorer(layer, meta, tensors, tensors["layer_%d.means" % layer]))
        else:
            out.append(dm.LogitScorer(layer, kind, tensors["head.weight"], tensors["head.bias"]))
    return out


def atomic_save(path, save):
    tmp = os.path.join(os.path.dirname(path), "partial." + os.path.basename(path))
    save(tmp)
    os.replace(tmp, path)


def triton_config(name, side, classes, max_batch):
    return """# Triton (PyTorch backend): put detector.pt at <repository>/%(name)s/1/model.pt
name: "%(name)s"
platform: "pytorch_libtorch"
max_batch_size: %(max_batch)d
input [
  { name: "INPUT__0", data_type: TYPE_FP32, dims: [ 3, %(side)d, %(side)d ] }
]
output [
  { name: "OUTPUT__0", data_type: TYPE_FP32, dims: [ %(classes)d ] },
  { name: "OUTPUT__1", data_type: TYPE_FP64, dims: [ 1 ], reshape: { shape: [ ] } },
  { name: "OUTPUT__2", data_type: TYPE_FP64, dims: [ 1 ], reshape: { shape: [ ] } },
  { name: "OUTPUT__3", data_type: TYPE_BOOL, dims: [ 1 ], reshape: { shape: [ ] } }
]
dynamic_batching { }
# INPUT__0: raw pixels in [0, 1]. OUTPUT__0 logits, __1 detector score (higher = more
# in-distribution), __2 in-distribution percentile, __3 OOD flag at the bundle's threshold.
# Scoring takes an input gradient inside the model: keep the backend's inference mode off
# (parameters { key: "INFERENCE_MODE" value: { string_value: "false" } }).
parameters { key: "INFERENCE_MODE" value: { string_value: "false" } }
""" % dict(name=name, side=side, classes=classes, max_batch=max_batch)


def script_module(module, example, torchscript_classifier):
    """The TorchScript of `module` (an ExportedDetector): its classifier traced (a user's TorchScript
    classifier kept as it is), the detector around it scripted."""
    features = module.features
    if torchscript_classifier:
        scripted_features = torch.jit.script(features)
    else:
        scripted_features = torch.jit.trace(features, (example * 0.5,), strict=False, check_trace=False)
    module.features = scripted_features
    try:
        return torch.jit.script(module)
    finally:
        module.features = features


def export_pt2(module, example, path, device):
    """make_fx of the eager module (autograd.grad written out as aten ops), then torch.export with
    a dynamic batch; refuses a program holding fake constants."""
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch._subclasses.fake_tensor import FakeTensor

    gm = make_fx(lambda x: module(x), tracing_mode="symbolic", _allow_non_fake_inputs=True)(example)

    class Traced(nn.Module):
        def __init__(self, gm):
            super().__init__()
            self.gm = gm

        def forward(self, x):
            return tuple(self.gm(x))

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    ep = torch.export.export(Traced(gm), (example,), strict=False, dynamic_shapes={"x": {0: batch}})
    fake = [k for k, v in ep.constants.items() if isinstance(v, FakeTensor)]
    if fake:
        fail("torch.export produced a program with fake constants %s; export --format torchscript" % fake)
    return ep


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--detector", required=True)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--format", choices=["torchscript", "pt2", "both"], default="both")
    ap.add_argument("--aoti", action="store_true", help="also compile an AOTInductor package")
    ap.add_argument("--device", default="cpu", help="device of the .pt2 / AOTInductor package")
    ap.add_argument("--class-names", default=None, help="JSON list (default: the sidecar's)")
    ap.add_argument("--name", default="resflow_detector")
    ap.add_argument("out")
    a = ap.parse_args()

    with open(os.path.join(a.bundle, "bundle.json")) as f:
        bundle = json.load(f)
    entry = next((d for d in bundle["detectors"] if d["kind"] == a.detector), None)
    if entry is None:
        fail("the bundle %s has no %s detector" % (a.bundle, a.detector))
    if a.detector not in SUPPORTED:
        fail("the %s detector cannot be exported; exportable: %s" % (a.detector, ", ".join(SUPPORTED)))
    from safetensors.torch import load_file

    weights = os.path.join(a.bundle, entry["file"])
    with open(os.path.splitext(weights)[0] + ".json") as f:
        saved = json.load(f)
    tensors = load_file(weights)
    identity = bundle["classifier"]
    features, sidecar = load_classifier(identity, a.classifier)
    norm = identity["normalization"]
    side, classes = int(identity["input_side"]), int(identity["num_classes"])
    module = dm.ExportedDetector(
        features, scorers_of(a.detector, entry, saved, tensors), entry["eps"],
        a.detector in ("resflow", "mahalanobis"), entry["coef"],
        entry["intercept"], entry["threshold"], entry["id_quantiles"], norm["mean"], norm["std"],
    ).eval()
    class_names = json.loads(a.class_names) if a.class_names else sidecar.get("class_names")
    meta = {
        "format": SIDECAR_FORMAT,
        "bundle_format": bundle["format"],
        "name": a.name,
        "detector": a.detector,
        "detector_label": entry["kind"],
        "eps": entry["eps"],
        "layers": entry["layers"],
        "threshold": entry["threshold"],
        "tpr": entry["tpr"],
        "validation": bundle["validation"],
        "ood_set": bundle.get("ood_set"),
        "record_ood": entry["record_ood"],
        "record_metrics": {"tnr_at_tpr95": entry["record_metrics"][0], "auroc": entry["record_metrics"][1]},
        "dataset": bundle["dataset"],
        "classifier": {"net_type": identity["net_type"], "sha256": identity["sha256"],
                       "num_classes": classes, "class_names": class_names},
        "input": {"name": "x", "shape": ["N", 3, side, side], "dtype": "float32", "range": [0.0, 1.0],
                  "normalization_inside": norm},
        "outputs": ["logits [N, C] float32", "score [N] float64 (higher = more in-distribution)",
                    "percentile [N] float64", "is_ood [N] bool (score < threshold)"],
        "input_gradient": entry["eps"] != 0.0,
        "torch_version": torch.__version__,
        "files": {},
    }
    os.makedirs(a.out, exist_ok=True)
    example = torch.rand(4, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = module(example)
    timings = {}
    if a.format in ("torchscript", "both"):
        t0 = time.time()
        scripted = script_module(module, example, identity["net_type"] == "torchscript")
        extra = {"resflow.json": json.dumps(meta)}
        atomic_save(os.path.join(a.out, "detector.pt"), lambda p: torch.jit.save(scripted, p, _extra_files=extra))
        check(torch.jit.load(os.path.join(a.out, "detector.pt"))(example), expected, "TorchScript")
        meta["files"]["torchscript"] = "detector.pt"
        timings["torchscript_s"] = round(time.time() - t0, 1)
        atomic_save(os.path.join(a.out, "config.pbtxt"),
                    lambda p: open(p, "w").write(triton_config(a.name, side, classes, MAX_BATCH)))
    if a.format in ("pt2", "both"):
        t0 = time.time()
        device = torch.device(a.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            fail("--device cuda compiles the .pt2 for a GPU and needs one; this machine has none")
        module.to(device)
        ep = export_pt2(module, example.to(device), None, device)
        p2 = os.path.join(a.out, "detector.pt2")
        atomic_save(p2, lambda p: torch.export.save(ep, p, extra_files={"resflow.json": json.dumps(meta)}))
        check(torch.export.load(p2).module()(example.to(device)), expected, "torch.export")
        meta["files"]["pt2"] = "detector.pt2"
        meta["pt2_device"] = device.type
        timings["pt2_s"] = round(time.time() - t0, 1)
        if a.aoti:
            t0 = time.time()
            pa = os.path.join(a.out, "detector.aoti.pt2")
            tmp = os.path.join(a.out, "partial.detector.aoti.pt2")
            torch._inductor.aoti_compile_and_package(ep, package_path=tmp)
            os.replace(tmp, pa)
            with torch.no_grad():
                check(torch._inductor.aoti_load_package(pa)(example.to(device)), expected, "AOTInductor")
            meta["files"]["aoti"] = "detector.aoti.pt2"
            timings["aoti_s"] = round(time.time() - t0, 1)
        module.to("cpu")
    atomic_save(os.path.join(a.out, "detector.json"), lambda p: open(p, "w").write(json.dumps(meta, indent=2)))
    print(json.dumps({"out": a.out, "files": meta["files"], "seconds": timings}))


def check(got, expected, what):
    """The exported model scores the example batch as the eager module does: within 1e-5 of each
    value or of the output's largest magnitude (AOTInductor's fused kernels move a logit near zero
    by ~3e-6 when the largest is ~10)."""
    got = [t.cpu() for t in got]
    for name, g, e in zip(["logits", "score", "percentile"], got, expected):
        atol = max(1e-6, 1e-5 * float(e.abs().max()))
        if not torch.allclose(g.to(e.dtype), e, rtol=1e-5, atol=atol):
            fail("the %s export's %s differ from the eager module's (max %g)"
                 % (what, name, (g.to(e.dtype) - e).abs().max().item()))
    if not torch.equal(got[3], expected[3]):
        fail("the %s export's OOD flags differ from the eager module's" % what)


if __name__ == "__main__":
    main()
