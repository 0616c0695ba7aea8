"""scaled_mm vs torch._scaled_mm (GPU): ``python bench/bench_scaled_mm.py [--quick] [--json PATH]``."""
import argparse
import json

from fastdispatch.kernels.scaled_mm.bench import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    results = main(quick=args.quick)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
