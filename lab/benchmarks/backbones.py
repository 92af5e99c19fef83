"""Benchmark every backbone in ``conf/backbone``: parameters, MACs, CPU inference time and peak memory.

``python -m lab.benchmarks.backbones [--sizes 256x256 1280x720] [--repeats 3] [names ...]``

Each (backbone, size) is measured in a fresh Python process, so the peak resident memory
(``ru_maxrss``) of one forward pass is not polluted by earlier ones; it is reported as the growth
over the process's resident size once the model is built. MACs come from
``torch.utils.flop_counter`` (convolutions and matrix products; FLOPs / 2) at the first size.
Time is the median of ``repeats`` forward passes under ``torch.inference_mode`` after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from lab import ROOT
from lab.benchmarks.common import machine, peak_rss_mb
from neurmap.config import CONFIG_DIR, backbone_node
from neurmap.nets.backbones import DeblurNet

__all__ = ["main", "measure"]


def _build(name: str) -> DeblurNet:
    node = backbone_node(name)
    return DeblurNet(instantiate(node.net), pad_multiple=int(node.pad_multiple)).eval()


def measure(name: str, height: int, width: int, repeats: int, macs: bool) -> dict:
    """One backbone at one size, in this process."""
    torch.manual_seed(0)
    net = _build(name)
    x = torch.rand(1, 3, height, width)
    result = {"name": name, "size": f"{width}x{height}", "params_m": sum(p.numel() for p in net.parameters()) / 1e6}
    base = peak_rss_mb()
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - start)
    result["seconds"] = statistics.median(times[1:])
    result["peak_mb"] = max(0.0, peak_rss_mb() - base)
    if macs:  # after the timing, so its extra bookkeeping does not count towards the peak
        from torch.utils.flop_counter import FlopCounterMode

        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            net(x)
        result["gmacs"] = counter.get_total_flops() / 2e9
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="backbone yaml names (default: all)")
    parser.add_argument("--sizes", nargs="+", default=["256x256", "1280x720"], help="WxH")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=3, metavar=("NAME", "SIZE", "MACS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        name, size, with_macs = args.one
        w, h = map(int, size.split("x"))
        print(json.dumps(measure(name, h, w, args.repeats, with_macs == "1")))
        return
    names = args.names or sorted(p.stem for p in (Path(CONFIG_DIR) / "backbone").glob("*.yaml"))
    rows: dict[str, dict] = {}
    for name in names:
        for i, size in enumerate(args.sizes):
            cmd = [
                sys.executable,
                "-m",
                "lab.benchmarks.backbones",
                "--repeats",
                str(args.repeats),
                "--one",
                name,
                size,
                "1" if i == 0 else "0",
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)  # where python -m finds lab
            if out.returncode:
                print(f"{name} {size}: failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            row = rows.setdefault(name, {"params_m": r["params_m"]})
            row.update({k: v for k, v in r.items() if k == "gmacs"})
            row[size] = (r["seconds"], r["peak_mb"])
            print(f"  measured {name} at {size}: {r['seconds']:.2f} s", file=sys.stderr, flush=True)
    print(f"machine: {machine()}")
    head = " | ".join(f"{s} s | {s} peak MB" for s in args.sizes)
    print(f"| backbone | params (M) | GMACs @{args.sizes[0]} | {head} |")
    print("|---" * (3 + 2 * len(args.sizes)) + "|")
    for name, row in rows.items():
        cells = " | ".join(f"{row[s][0]:.2f} | {row[s][1]:.0f}" if s in row else "- | -" for s in args.sizes)
        print(f"| {name} | {row['params_m']:.2f} | {row.get('gmacs', float('nan')):.1f} | {cells} |")


if __name__ == "__main__":
    main()
