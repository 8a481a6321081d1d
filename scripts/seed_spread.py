#!/usr/bin/env python3
"""The spread of the demo's figures over classifier seeds: one results.json per seed in, one table out.

For every (OOD set, detector) and metric: the mean over seeds, the sample standard deviation, and
the smallest and largest value, in percent. Metrics: the paper's TNR at TPR 95% and AUROC
(in-distribution positive), OpenOOD's FPR at TPR 95% (OOD positive).

Usage: seed_spread.py SEED_0/results.json SEED_1/results.json ... > seed_spread.md
"""
import json
import statistics
import sys

METRICS = [("TNR@TPR95", lambda r: r["tnr_at_tpr95"]), ("AUROC", lambda r: r["auroc"]),
           ("FPR@95 (OpenOOD)", lambda r: r["openood"]["fpr_at_tpr95"] if r.get("openood") else None)]


def main(paths):
    if len(paths) < 2:
        sys.exit("seed_spread.py: give the results.json of two seeds or more")
    values = {}  # (ood, detector, metric) -> [value per seed]
    for path in paths:
        with open(path) as f:
            results = json.load(f)["results"]
        for record in results:
            if record["validation"] != "ood":
                continue
            for name, get in METRICS:
                v = get(record)
                if v is not None:
                    values.setdefault((record["ood"], record["detector"], name), []).append(100 * v)
    print("Spread over %d classifier seeds (%s): mean ± sample std [min, max], percent\n"
          % (len(paths), ", ".join(paths)))
    for name, _ in METRICS:
        print("### %s\n" % name)
        detectors = sorted({d for (_, d, m) in values if m == name})
        oods = sorted({o for (o, _, m) in values if m == name})
        print("| OOD set | " + " | ".join(detectors) + " |")
        print("|---|" + "---:|" * len(detectors))
        for ood in oods:
            cells = []
            for d in detectors:
                v = values.get((ood, d, name), [])
                if len(v) < len(paths):
                    cells.append("(%d seeds)" % len(v) if v else "-")
                    continue
                cells.append("%.1f ± %.1f [%.1f, %.1f]" % (statistics.mean(v), statistics.stdev(v), min(v), max(v)))
            print("| %s | %s |" % (ood, " | ".join(cells)))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
