"""The n-gram probe for every window (docs/lm_pretrain.md): median M_robust and M_close against teacher steps, for
the 2-, 3-, 4- and 5-gram windows, from the probe of a finished lm_pretrain.py run (--mode all or probe).

    python docs/lm_pretrain_extra.py out/lm_pretrain/cpu-b500       # writes <run>/probe_windows.png
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lm_pretrain as lm  # noqa: E402  (first: it pins MKL before torch loads)
import common  # noqa: E402


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit(__doc__)
    run = argv[0]
    probe = common.read_json(os.path.join(run, "results.json"))["probe"]
    plt = common.plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = [p["step"] for p in probe][1:]  # step 0 off the log axis
    for w in lm.WINDOWS:
        axes[0].plot(steps, lm.probe_series(probe, w, "robust")[1:], label=w)
        axes[1].plot(steps, lm.probe_series(probe, w, "close")[1:], label=w)
    for ax, name in zip(axes, ["M_robust", "M_close"]):
        ax.set(xscale="log", yscale="log", xlabel="teacher steps", ylabel=f"median {name}", title=name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(run, "probe_windows.png"), dpi=120)
    plt.close(fig)
    print(f"wrote {os.path.join(run, 'probe_windows.png')}")


if __name__ == "__main__":
    main()
