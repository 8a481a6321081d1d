#!/usr/bin/env python3
"""Convert the published PyTorch weights of the reference into resflow's safetensors checkpoints.

Classifiers (`classifier`): a `.pth` holding either a state dict (the ResNets, the SVHN DenseNet;
a `module.` prefix from DataParallel is removed) or a whole pickled module (the CIFAR DenseNets,
pickled by PyTorch 0.3). Whole modules are unpickled without the reference's source: every class
outside `torch` (and every `torch.nn` module class) is replaced by a stand-in that keeps only the
pickled attributes, and the weights are read from the `_parameters`/`_buffers` of the module tree.
BatchNorm counters missing in old files (`num_batches_tracked`) are filled with 0. The result is
checked against the reference module definition (scripts/reference_models.py) with strict
`load_state_dict`, then written as float32 safetensors plus the JSON sidecar that resflow reads
(architecture, width, classes, the reference's input normalisation of that network, dataset).

Flows (`flow`): the per-class flow state dicts of one layer (names in
`docs/method.md#flow-checkpoints`), one `.pth` per class in class order, written as a flow folder
that rf-score reads: `flow_<c>.safetensors` (names and dtypes unchanged) plus `flow.json` (classes,
k, length_hidden, layer, network, data set; resflow derives log |det A_inv| from `A_`). Put it at
output/<net>_<dataset>/flow/layer_<L>.

Usage:
  convert_weights.py classifier --net-type resnet --dataset cifar10 IN.pth OUT.safetensors
  convert_weights.py flow --net-type resnet --dataset cifar10 --layer 2 OUT_DIR CLASS0.pth CLASS1.pth ...
"""
import argparse
import collections
import json
import os
import pickle
import sys
import types
import warnings

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_models  # noqa: E402

NORMALIZATION = {
    "resnet": {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010]},
    "densenet": {
        "mean": [125.3 / 255, 123.0 / 255, 113.9 / 255],
        "std": [63.0 / 255, 62.1 / 255, 66.7 / 255],
    },
}


class StandIn:
    """Takes the place of a pickled class whose source is unavailable; keeps the pickled state."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


def _stand_in_for(module, name):
    return type(name, (StandIn,), {"__module__": "stand_in." + module})


class StandInUnpickler(pickle.Unpickler):
    """Resolves torch's own tensor/storage machinery; every module class becomes a stand-in."""

    def find_class(self, module, name):
        keep = (module.startswith("torch") and not module.startswith("torch.nn.modules")) or module in (
            "collections",
            "builtins",
            "__builtin__",
            "copyreg",
            "_codecs",
            "numpy",
            "numpy.core.multiarray",
        )
        if keep:
            return super().find_class(module, name)
        return _stand_in_for(module, name)


STAND_IN_PICKLE = types.ModuleType("stand_in_pickle")
STAND_IN_PICKLE.Unpickler = StandInUnpickler
STAND_IN_PICKLE.load = pickle.load
STAND_IN_PICKLE.__name__ = "pickle"


def load_any(path):
    """The object stored in a `.pth` file (zip or legacy format), module classes as stand-ins."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=STAND_IN_PICKLE)


def flatten_module(obj, prefix=""):
    """Parameters and buffers of a (stand-in or real) module tree, by state-dict name."""
    state = obj.__dict__ if hasattr(obj, "__dict__") else {}
    out = collections.OrderedDict()
    for key in ("_parameters", "_buffers"):
        for name, value in (state.get(key) or {}).items():
            if value is not None:
                out[prefix + name] = value.detach() if hasattr(value, "detach") else value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(flatten_module(child, prefix + name + "."))
    return out


def to_state_dict(obj, path):
    """A name -> tensor mapping from a loaded state dict or whole module."""
    if isinstance(obj, dict):
        if "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        items = obj.items()
    elif "_modules" in getattr(obj, "__dict__", {}):
        items = flatten_module(obj).items()
    else:
        raise SystemExit("%s: neither a state dict nor a pickled module (found %s)" % (path, type(obj).__name__))
    out = collections.OrderedDict()
    for name, value in items:
        if not torch.is_tensor(value):
            raise SystemExit("%s: entry %s is not a tensor (%s)" % (path, name, type(value).__name__))
        out[name[len("module."):] if name.startswith("module.") else name] = value
    return out


def fill_batch_counters(sd):
    """Adds `num_batches_tracked` = 0 to every BatchNorm that lacks it."""
    for name in [n for n in sd if n.endswith(".running_mean") or n == "running_mean"]:
        counter = name[: -len("running_mean")] + "num_batches_tracked"
        sd.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return sd


def infer_shape(net_type, sd, path):
    """(width, num_classes) of a classifier state dict."""
    head = "linear.weight" if net_type == "resnet" else "fc.weight"
    if head not in sd or "conv1.weight" not in sd:
        raise SystemExit("%s: no %s / conv1.weight: not a %s state dict" % (path, head, net_type))
    stem = sd["conv1.weight"].shape[0]
    width = stem if net_type == "resnet" else stem // 2
    return width, sd[head].shape[0]


def convert_classifier(args):
    sd = fill_batch_counters(to_state_dict(load_any(args.input), args.input))
    width, num_classes = infer_shape(args.net_type, sd, args.input)
    model = reference_models.build(args.net_type, width, num_classes)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise SystemExit("%s: does not match the reference %s: %s" % (args.input, args.net_type, e))
    tensors = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    write(args.output, tensors)
    meta = {
        "architecture": args.net_type,
        "width": int(width),
        "num_classes": int(num_classes),
        "normalization": NORMALIZATION[args.net_type],
        "dataset": args.dataset,
        "test_accuracy": None,
        "library_version": "convert_weights.py (from %s)" % os.path.basename(args.input),
    }
    sidecar = os.path.splitext(args.output)[0] + ".json"
    with open(sidecar + ".tmp", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    os.replace(sidecar + ".tmp", sidecar)
    print("%s: %s width %d, %d classes, %d tensors -> %s" % (args.input, args.net_type, width, num_classes, len(tensors), args.output))


FLOW_REQUIRED = ("A", "A_", "mask", "s.0.fc1.weight")


def convert_flow(args):
    dicts = []
    for path in args.inputs:
        if not os.path.exists(path):
            raise SystemExit("%s: no such file" % path)
        sd = to_state_dict(load_any(path), path)
        for required in FLOW_REQUIRED:
            if required not in sd:
                raise SystemExit("%s: no `%s`: not a residual-flow state dict" % (path, required))
        dicts.append((path, sd))
    first_path, first = dicts[0]
    k, dim = first["A_"].shape[0], first["A_"].shape[1]
    hidden = first["s.0.fc1.weight"].shape[0]
    for path, sd in dicts[1:]:
        got = (sd["A_"].shape[0], sd["A_"].shape[1], sd["s.0.fc1.weight"].shape[0])
        if got != (k, dim, hidden):
            raise SystemExit(
                "%s: k, dimension and hidden width %s differ from %s's %s"
                % (path, got, first_path, (k, dim, hidden))
            )
    os.makedirs(args.output, exist_ok=True)
    for c, (path, sd) in enumerate(dicts):
        write(os.path.join(args.output, "flow_%d.safetensors" % c), {n: v.contiguous() for n, v in sd.items()})
    meta = {
        "num_classes": len(dicts),
        "k": k,
        "length_hidden": hidden / k,
        "layer": args.layer,
        "net": args.net_type,
        "dataset": args.dataset,
    }
    meta_path = os.path.join(args.output, "flow.json")
    with open(meta_path + ".tmp", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    os.replace(meta_path + ".tmp", meta_path)
    print("%d class flows (k %d, dimension %d, hidden %d) -> %s" % (len(dicts), k, dim, hidden, args.output))


def write(path, tensors):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(tensors, path + ".tmp")
    os.replace(path + ".tmp", path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    c = sub.add_parser("classifier", help="a published ResNet or DenseNet")
    c.add_argument("--net-type", "--net_type", choices=["resnet", "densenet"], required=True)
    c.add_argument("--dataset", required=True, help="training set of the network (for the sidecar)")
    c.add_argument("input")
    c.add_argument("output")
    f = sub.add_parser("flow", help="the published per-class residual flows of one layer")
    f.add_argument("--net-type", "--net_type", choices=["resnet", "densenet"], required=True)
    f.add_argument("--dataset", required=True, help="in-distribution data set of the flows")
    f.add_argument("--layer", type=int, required=True, help="feature layer of the flows")
    f.add_argument("output", help="flow folder to write")
    f.add_argument("inputs", nargs="+", help="one .pth per class, in class order")
    args = parser.parse_args()
    if args.kind == "classifier" and not os.path.exists(args.input):
        raise SystemExit("%s: no such file" % args.input)
    (convert_classifier if args.kind == "classifier" else convert_flow)(args)


if __name__ == "__main__":
    main()
