"""The probe figure of a pcfg.py run, redrawn from its results.json (moved out of pcfg.py, issue 20): the median
M_robust and M_close of every n-gram window, the non-terminal probe per depth against its majority floor, and
M_robust read against the teacher's loss (the docs' "Where the M_robust maximum falls").

    python docs/pcfg_extra.py out/pcfg/cpu-mlm-all        # writes out/pcfg/cpu-mlm-all/fig_probes.png
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402


def probe_figure(probe, teacher, phases, path):
    plt = common.plt()
    keys = [k for k in ("m_robust", "m_close") if probe.get(k)]
    against_loss = bool(probe.get("m_robust") and teacher)
    panels = len(keys) + 1 + against_loss
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, q in probe[key].items():
            ax.plot(probe["steps"][1:], q["l1"]["median"][1:], label=name)
        ax.set(xscale="log", xlabel="teacher steps", ylabel="median L1", yscale="log", title=key.replace("m_", "M_"))
        ax.legend(fontsize=8)
    ax, acc = axes[0][len(keys)], np.array(probe["nt"]["acc"])
    for d in range(1, acc.shape[1] - 1):  # depth 0 is always s, depth 6 is read off the token itself
        line, = ax.plot(probe["steps"][1:], acc[1:, d], label=f"depth {d}")
        ax.axhline(probe["nt"]["majority"][d], color=line.get_color(), ls=":", lw=0.8)
    ax.set(xscale="log", xlabel="teacher steps", ylabel="probe accuracy", title="non-terminal probe (dotted: majority)")
    ax.legend(fontsize=8)
    if against_loss:  # the n-gram reliance against the teacher's loss, training running left to right
        ax = axes[0][-1]
        loss_at = dict(zip(teacher["steps"], teacher["val_loss"]))
        for name, q in probe["m_robust"].items():
            ax.plot([loss_at[s] for s in probe["steps"][1:]], q["l1"]["median"][1:], ".-", ms=3, label=name)
        if phases:
            ax.axvspan(loss_at[phases["drop_end"]], loss_at[phases["drop_start"]], color="tab:red", alpha=0.12, lw=0,
                       label="drop (phase 2)")
        ax.set(yscale="log", xlabel="teacher's validation loss", ylabel="median L1",
               title="M_robust against the teacher's loss")
        ax.invert_xaxis()
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    run = (sys.argv[1:] if argv is None else argv)[0]
    res = common.read_json(os.path.join(run, "results.json"))
    if "levels" in res:  # --objective boundary: one figure per level
        for lk, r in res["levels"].items():
            if r.get("probe"):
                path = os.path.join(run, f"fig_probes_level{lk}.png")
                probe_figure(r["probe"], r.get("teacher"), r.get("phases"), path)
    elif res.get("probe"):
        probe_figure(res["probe"], res.get("teacher"), res.get("phases"), os.path.join(run, "fig_probes.png"))
    else:
        common.fail("run", f"{run}/results.json holds no probe (use a run of --mode all or probe)")


if __name__ == "__main__":
    main()
