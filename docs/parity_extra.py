"""Study figures of parity.py that are not the paper's, redrawn from a finished run folder (its results.json).

    python docs/parity_extra.py out/parity/cpu-mlp-all     # probe_degrees.png: the probe at every degree
    python docs/parity_extra.py out/parity/cpu-mlp-sweep   # sweep.png: steps to 95% against teacher width

The figures are written into the run folder, next to parity.py's own; docs/parity.md shows copies of both.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402  first: it pins MKL before torch loads
import parity  # noqa: E402


def probe_degrees(results, out):
    """Fig. 3 middle for every degree 1..k-1, not just the one of the strongest signal."""
    probe = results["probe"]
    chosen = results.get("two_shot_ckpt", probe["auto_ckpt"])
    degrees = sorted(int(d) for d in probe["degrees"])
    fig, axes = common.plt().subplots(1, len(degrees), figsize=(4 * len(degrees), 3.5), squeeze=False)
    for ax, d in zip(axes[0], degrees):
        parity.plot_degree(ax, probe, d, chosen)
    parity.save(fig, out, "probe_degrees.png")


def sweep(results, out):
    """Wider learns faster (paper Fig. 2): mean steps to 95% over seeds, min..max as error bars."""
    sw, cfg = results["sweep"], results["config"]
    rows = [[sw["budget"] if v is None else v for v in row] for row in sw["steps_to_0.95"]]
    means = [sum(r) / len(r) for r in rows]
    fig, ax = common.plt().subplots(figsize=(5, 4))
    ax.errorbar(sw["sizes"], means, yerr=[[m - min(r) for m, r in zip(means, rows)],
                                          [max(r) - m for m, r in zip(means, rows)]], fmt="o-", capsize=3)
    ax.axhline(sw["budget"], color="gray", ls=":", lw=1, label="budget (not reached)")
    ax.set(xscale="log", yscale="log", xlabel=f"teacher {sw['kind']}", ylabel="steps to 95%",
           title=f"{cfg['arch'].upper()} on ({cfg['n']},{cfg['k']})-sparse parity")
    ax.legend(fontsize=8)
    parity.save(fig, out, "sweep.png")


def main(argv=None):
    for out in sys.argv[1:] if argv is None else argv:
        results = common.read_json(os.path.join(out, "results.json"))
        if "probe" in results:
            probe_degrees(results, out)
        if "sweep" in results:
            sweep(results, out)


if __name__ == "__main__":
    main()
