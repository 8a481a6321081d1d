#!/usr/bin/env python3
"""The benchmark's final table, laid out like the paper's, next to the published Mahalanobis numbers.

Reads {outf}/{net}_{dataset}/results.json (written by rf-regress; metrics as fractions, see
src/report.rs `ResultsFile`) and writes {outf}/benchmark.md (also printed).

Rows: network / in-distribution / OOD set. Columns: TNR at TPR 95%, AUROC and detection accuracy,
for validation on OOD samples (IO) and on FGSM adversarial samples. Each cell reads
"published Mahalanobis / our Mahalanobis / our Residual Flow", in percent with one decimal;
"-" where there is no number (yet).

Usage: benchmark_table.py [--outf output] [--nets resnet,densenet] [--datasets cifar10,cifar100,svhn]
                          [--output FILE]
Standard library only.
"""
import argparse
import json
import os
import sys

NET_NAMES = {"resnet": "ResNet", "densenet": "DenseNet"}
SET_NAMES = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "svhn": "SVHN",
    "imagenet_resize": "TinyImageNet",
    "lsun_resize": "LSUN",
}
# The registry's OOD sets per in-distribution set (`rf-data list`), in the paper's row order.
OOD_SETS = {
    "cifar10": ["svhn", "imagenet_resize", "lsun_resize"],
    "cifar100": ["svhn", "imagenet_resize", "lsun_resize"],
    "svhn": ["cifar10", "imagenet_resize", "lsun_resize"],
}
METRICS = [("tnr_at_tpr95", "TNR at TPR 95%"), ("auroc", "AUROC"), ("dtacc", "Detection acc.")]
VALIDATIONS = [("ood", "validation on OOD samples"), ("fgsm", "validation on FGSM samples")]

# Lee et al. 2018, Table 2, the Mahalanobis detector (percent): (net, dataset, ood) ->
# {validation: (TNR at TPR 95, AUROC, detection accuracy)}.
PUBLISHED = {
    ("densenet", "cifar10", "svhn"): {"ood": (90.8, 98.1, 93.9), "fgsm": (89.6, 97.6, 92.6)},
    ("densenet", "cifar10", "imagenet_resize"): {"ood": (95.0, 98.8, 95.0), "fgsm": (94.9, 98.8, 95.0)},
    ("densenet", "cifar10", "lsun_resize"): {"ood": (97.2, 99.3, 96.3), "fgsm": (97.2, 99.2, 96.2)},
    ("densenet", "cifar100", "svhn"): {"ood": (82.5, 97.2, 91.5), "fgsm": (62.2, 91.8, 84.6)},
    ("densenet", "cifar100", "imagenet_resize"): {"ood": (86.6, 97.4, 92.2), "fgsm": (87.2, 97.0, 91.8)},
    ("densenet", "cifar100", "lsun_resize"): {"ood": (91.4, 98.0, 93.9), "fgsm": (91.4, 97.9, 93.8)},
    ("densenet", "svhn", "cifar10"): {"ood": (96.8, 98.9, 95.9), "fgsm": (97.5, 98.8, 96.3)},
    ("densenet", "svhn", "imagenet_resize"): {"ood": (99.9, 99.9, 98.9), "fgsm": (99.9, 99.8, 98.9)},
    ("densenet", "svhn", "lsun_resize"): {"ood": (100.0, 99.9, 99.3), "fgsm": (100.0, 99.9, 99.2)},
    ("resnet", "cifar10", "svhn"): {"ood": (96.4, 99.1, 95.8), "fgsm": (75.8, 95.5, 89.1)},
    ("resnet", "cifar10", "imagenet_resize"): {"ood": (97.1, 99.5, 96.3), "fgsm": (95.5, 99.0, 95.4)},
    ("resnet", "cifar10", "lsun_resize"): {"ood": (98.9, 99.7, 97.7), "fgsm": (98.1, 99.5, 97.2)},
    ("resnet", "cifar100", "svhn"): {"ood": (91.9, 98.4, 93.7), "fgsm": (41.9, 84.4, 76.5)},
    ("resnet", "cifar100", "imagenet_resize"): {"ood": (90.9, 98.2, 93.3), "fgsm": (70.3, 87.9, 84.6)},
    ("resnet", "cifar100", "lsun_resize"): {"ood": (90.9, 98.2, 93.5), "fgsm": (56.6, 82.3, 79.7)},
    ("resnet", "svhn", "cifar10"): {"ood": (98.4, 99.3, 96.9), "fgsm": (94.1, 97.6, 94.6)},
    ("resnet", "svhn", "imagenet_resize"): {"ood": (99.9, 99.9, 99.1), "fgsm": (99.2, 99.3, 98.8)},
    ("resnet", "svhn", "lsun_resize"): {"ood": (99.9, 99.9, 99.5), "fgsm": (99.9, 99.9, 99.5)},
}


def load_results(outf, net, dataset):
    """(detector, validation, ood) -> record, from the run's results.json ({} when absent)."""
    path = os.path.join(outf, f"{net}_{dataset}", "results.json")
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    return {(r["detector"], r["validation"], r["ood"]): r for r in data.get("results", [])}


def fmt(v):
    return "-" if v is None else f"{v:.1f}"


def table(outf, nets, datasets):
    header = ["Network", "In-dist", "OOD"]
    for _, vname in VALIDATIONS:
        for _, mname in METRICS:
            header.append(f"{mname} ({vname.replace('validation on ', '')})")
    lines = [
        "# Benchmark: Mahalanobis vs Residual Flow",
        "",
        "Each cell: **published Mahalanobis** (Lee et al. 2018, Table 2) / our Mahalanobis / our "
        "Residual Flow, in percent; `-` = no result. IO = validation on OOD samples, FGSM = "
        "validation on FGSM adversarial samples (no OOD data).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|",
    ]
    missing = []
    for net in nets:
        for ds in datasets:
            found = load_results(outf, net, ds)
            if not found:
                missing.append(f"{net}_{ds}")
            oods = list(OOD_SETS.get(ds, []))
            oods += sorted({k[2] for k in found} - set(oods))
            for ood in oods:
                row = [NET_NAMES.get(net, net), SET_NAMES.get(ds, ds), SET_NAMES.get(ood, ood)]
                pub = PUBLISHED.get((net, ds, ood), {})
                for v, _ in VALIDATIONS:
                    for mi, (m, _) in enumerate(METRICS):
                        p = pub[v][mi] if v in pub else None
                        ours = []
                        for det in ("mahalanobis", "resflow"):
                            r = found.get((det, v, ood))
                            ours.append(None if r is None else 100.0 * r[m])
                        row.append(f"**{fmt(p)}** / {fmt(ours[0])} / {fmt(ours[1])}")
                lines.append("| " + " | ".join(row) + " |")
    if missing:
        lines += ["", "No results.json yet for: " + ", ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--outf", default="output")
    ap.add_argument("--nets", default="resnet,densenet")
    ap.add_argument("--datasets", default="cifar10,cifar100,svhn")
    ap.add_argument("--output", help="default: {outf}/benchmark.md")
    a = ap.parse_args(argv)
    text = table(a.outf, [n for n in a.nets.split(",") if n], [d for d in a.datasets.split(",") if d])
    out = a.output or os.path.join(a.outf, "benchmark.md")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
