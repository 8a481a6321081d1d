#!/usr/bin/env python3
"""Export a PyTorch classifier as a TorchScript model for resflow, with its JSON sidecar.

resflow reads `OUT.pt` (torch.jit.save) and `OUT.json` (same path, extension .json). The module
has `forward(x)` -> logits and `feature_list(x)` -> (logits, [feature maps of the tapped layers]),
x being normalised images [N,3,S,S]. The sidecar records the input size S, the normalisation, the
class names, the tapped layers' names, the final linear layer (when the logits are that layer
applied to the mean-pooled last tapped layer, which the baselines MSP, ODIN, Energy, MaxLogit and
ViM rely on; checked here on random inputs) and, optionally, the training set's name.

Layers are tapped by module name with torchvision's create_feature_extractor, so any torchvision
classifier works; resflow's own two networks (scripts/reference_models.py) use their own
feature_list. The module is compiled with torch.jit.script, or traced where scripting fails (it
says so); the exported module is checked against the original on random inputs.

Usage:
  # a torchvision classifier, weights from a state dict (torch.save(model.state_dict(), ...)):
  export_torchscript.py --model torchvision:resnet18 --weights resnet18_flowers.pth \\
      --class-names daisy,rose,tulip --input-size 224 \\
      --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --dataset flowers pre_trained/flowers.pt
  # resflow's own checkpoint (architecture, classes, normalisation from its sidecar):
  export_torchscript.py --model resflow --weights pre_trained/resnet_cifar10.safetensors OUT.pt

  --layers a,b,c   the modules to tap (default for torchvision ResNets: relu,layer1,...,layer4,
                   as the paper taps ResNet-34; required for other architectures)

From Python (as the tests do): `export(model, out_path, layers, input_size, mean, std,
class_names, dataset=None, name=None)`.
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Tuple

import torch
import torch.nn as nn

SIDECAR_FORMAT = "resflow-torchscript-1"
RESNET_LAYERS = ["relu", "layer1", "layer2", "layer3", "layer4"]


class TappedModel(nn.Module):
    """A torchvision-style classifier with named layers tapped by create_feature_extractor."""

    def __init__(self, model: nn.Module, layers: List[str]):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

        model.eval()
        output_node = get_graph_node_names(model)[1][-1]
        nodes = {layer: "feature_%d" % i for i, layer in enumerate(layers)}
        nodes[output_node] = "logits"
        self.extractor = create_feature_extractor(model, return_nodes=nodes)
        self.keys: List[str] = ["feature_%d" % i for i in range(len(layers))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x)["logits"]

    @torch.jit.export
    def feature_list(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        out: Dict[str, torch.Tensor] = self.extractor(x)
        return out["logits"], [out[k] for k in self.keys]


class OwnFeatureList(nn.Module):
    """A model that already has the reference's feature_list (resflow's ResNet and DenseNet)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.feature_list(x)[0]

    def feature_list(self, x):
        return self.net.feature_list(x)


def compile_module(wrapper: nn.Module, example: torch.Tensor):
    """torch.jit.script, or tracing of forward and feature_list where scripting fails."""
    try:
        return torch.jit.script(wrapper)
    except Exception as error:  # noqa: BLE001 - any scripting failure falls back to tracing
        print("note: torch.jit.script failed (%s); tracing instead" % str(error).splitlines()[0],
              file=sys.stderr)
        return torch.jit.trace_module(
            wrapper, {"forward": example, "feature_list": example}, strict=False)


def find_linear_head(logits, features, prefix_modules):
    """The module path of a Linear layer with logits == mean_pool(last feature) W^T + b, or None."""
    last = features[-1]
    pooled = last.flatten(2).mean(2) if last.dim() == 4 else last
    for name, module in prefix_modules:
        if not isinstance(module, nn.Linear):
            continue
        if module.weight.shape != (logits.shape[1], pooled.shape[1]):
            continue
        predicted = pooled @ module.weight.t() + module.bias
        if torch.allclose(predicted, logits, rtol=1e-4, atol=1e-4):
            return name
    return None


def export(model, out_path, layers, input_size, mean, std, class_names, dataset=None, name=None,
           own_feature_list=False):
    """Exports `model` (eval mode) to `out_path` and its sidecar; returns the sidecar dict."""
    model = model.eval()
    example = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    if own_feature_list:
        wrapper = OwnFeatureList(model).eval()
        prefix = "net"
        layers = layers or ["layer_%d" % i for i in range(len(model.feature_list(example)[1]))]
    else:
        wrapper = TappedModel(model, layers).eval()
        prefix = "extractor"
    with torch.no_grad():
        logits, features = wrapper.feature_list(example)
        compiled = compile_module(wrapper, example)
        got_logits, got_features = compiled.feature_list(example)
        if not torch.allclose(got_logits, logits, atol=1e-5, rtol=1e-5) or any(
                not torch.allclose(a, b, atol=1e-5, rtol=1e-5) for a, b in zip(got_features, features)):
            raise SystemExit("error: the compiled module's outputs differ from the model's")
        if logits.shape[1] != len(class_names):
            raise SystemExit("error: the model has %d outputs but %d class names were given"
                             % (logits.shape[1], len(class_names)))
        modules = [("%s.%s" % (prefix, n), m) for n, m in getattr(wrapper, prefix).named_modules() if n]
        head = find_linear_head(logits, features, modules)
    if head is None:
        print("note: no linear layer maps the mean-pooled last tapped layer to the logits, so the "
              "sidecar names no linear_head and MSP, ODIN, Energy, MaxLogit and ViM are unavailable; "
              "tap the layer whose mean-pooled output feeds the final linear layer last", file=sys.stderr)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "name": name or type(model).__name__.lower(),
        "input_size": input_size,
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "class_names": list(class_names),
        "feature_layers": list(layers),
    }
    if head is not None:
        sidecar["linear_head"] = head
    if dataset:
        sidecar["dataset"] = dataset
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    sidecar_path = os.path.splitext(out_path)[0] + ".json"
    # Temporary files, then renames: a failed export leaves nothing half-written.
    torch.jit.save(compiled, out_path + ".partial")
    with open(sidecar_path + ".partial", "w") as f:
        json.dump(sidecar, f, indent=2)
        f.write("\n")
    os.replace(out_path + ".partial", out_path)
    os.replace(sidecar_path + ".partial", sidecar_path)
    return sidecar


def floats(text):
    values = [float(v) for v in text.split(",")]
    if len(values) != 3:
        raise argparse.ArgumentTypeError("expected three comma-separated numbers, got %r" % text)
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the TorchScript file to write (its sidecar: same path, .json)")
    parser.add_argument("--model", required=True,
                        help="torchvision:NAME (any torchvision classifier) or resflow (our checkpoint)")
    parser.add_argument("--weights", help="state dict (.pth/.safetensors) to load; resflow: the checkpoint")
    parser.add_argument("--layers", help="modules to tap, comma-separated (default for ResNets: %s)"
                        % ",".join(RESNET_LAYERS))
    parser.add_argument("--class-names", help="class names in logit order, comma-separated")
    parser.add_argument("--num-classes", type=int, help="instead of --class-names: classes 0..N-1")
    parser.add_argument("--input-size", type=int, help="side S of the square inputs")
    parser.add_argument("--mean", type=floats, help="normalisation mean, three values")
    parser.add_argument("--std", type=floats, help="normalisation std, three values")
    parser.add_argument("--dataset", help="name of the training set (checked against --dataset)")
    parser.add_argument("--name", help="a name for the model (default: the architecture)")
    args = parser.parse_args()

    if args.model == "resflow":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import reference_models
        from safetensors.torch import load_file
        if not args.weights:
            parser.error("--model resflow needs --weights CHECKPOINT.safetensors")
        with open(os.path.splitext(args.weights)[0] + ".json") as f:
            meta = json.load(f)
        model = reference_models.build(meta["architecture"], meta["width"], meta["num_classes"])
        result = model.load_state_dict(load_file(args.weights), strict=False)
        if result.unexpected_keys or [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]:
            raise SystemExit("error: %s does not match its sidecar's network: %s" % (args.weights, result))
        sidecar = export(model, args.out, None, 32, meta["normalization"]["mean"],
                         meta["normalization"]["std"],
                         args.class_names.split(",") if args.class_names
                         else [str(c) for c in range(meta["num_classes"])],
                         dataset=args.dataset or meta["dataset"], name=args.name or meta["architecture"],
                         own_feature_list=True)
    elif args.model.startswith("torchvision:"):
        import torchvision
        arch = args.model.split(":", 1)[1]
        if args.class_names:
            class_names = args.class_names.split(",")
        elif args.num_classes:
            class_names = [str(c) for c in range(args.num_classes)]
        else:
            parser.error("give --class-names or --num-classes")
        if args.input_size is None or args.mean is None or args.std is None:
            parser.error("torchvision models need --input-size, --mean and --std")
        model = torchvision.models.get_model(arch, weights=None, num_classes=len(class_names))
        if args.weights:
            if args.weights.endswith(".safetensors"):
                from safetensors.torch import load_file
                state = load_file(args.weights)
            else:
                state = torch.load(args.weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        layers = args.layers.split(",") if args.layers else (
            RESNET_LAYERS if hasattr(model, "layer4") else None)
        if layers is None:
            parser.error("--layers is required for %s (module names, see "
                         "torchvision.models.feature_extraction.get_graph_node_names)" % arch)
        sidecar = export(model, args.out, layers, args.input_size, args.mean, args.std, class_names,
                         dataset=args.dataset, name=args.name or arch)
    else:
        parser.error("--model must be torchvision:NAME or resflow")
    print("wrote %s and %s: %d classes, layers %s, linear head %s" % (
        args.out, os.path.splitext(args.out)[0] + ".json", len(sidecar["class_names"]),
        ",".join(sidecar["feature_layers"]), sidecar.get("linear_head", "none")))


if __name__ == "__main__":
    main()
