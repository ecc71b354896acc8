"""A study figure of parity.py that is not the paper's, redrawn from a finished run folder (its results.json).

    python docs/parity_extra.py out/parity/cpu-mlp-all     # probe_degrees.png: the probe at every degree

The figure is written into the run folder, next to parity.py's own; docs/parity.md shows a copy. (sweep.png, the
width sweep's figure, is drawn by docs/parity_sweep.py.)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import parity  # noqa: E402  (first: it pins MKL before torch loads)
import common  # noqa: E402


def probe_degrees(results, out):
    """Fig. 3 middle for every degree 1..k-1, not just the one of the strongest signal."""
    probe = results["probe"]
    chosen = results.get("two_shot_ckpt", probe["auto_ckpt"])
    degrees = sorted(int(d) for d in probe["degrees"])
    fig, axes = common.plt().subplots(1, len(degrees), figsize=(4 * len(degrees), 3.5), squeeze=False)
    for ax, d in zip(axes[0], degrees):
        parity.plot_degree(ax, probe, d, chosen)
    parity.save(fig, out, "probe_degrees.png")


def main(argv=None):
    for out in sys.argv[1:] if argv is None else argv:
        results = common.read_json(os.path.join(out, "results.json"))
        if "probe" in results:
            probe_degrees(results, out)


if __name__ == "__main__":
    main()
