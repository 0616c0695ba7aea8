"""scaled_mm vs torch._scaled_mm (GPU): ``python bench/bench_scaled_mm.py [--quick] [--json PATH]``.

``--recipe blockwise``: the DeepSeek-V3 blockwise table instead (ours vs torch's blockwise vs
DeepGEMM when ``DGANCHOR_DIR`` names the anchor bundle, with the rowwise pair beside it)."""
import argparse
import json

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--recipe", choices=["rowwise", "blockwise"], default="rowwise")
    args = parser.parse_args()
    if args.recipe == "blockwise":
        from fastdispatch.kernels.scaled_mm.bench_blockwise import main
    else:
        from fastdispatch.kernels.scaled_mm.bench import main
    results = main(quick=args.quick)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
