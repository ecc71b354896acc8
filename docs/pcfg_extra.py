"""The curriculum and probe figures of a pcfg.py run, drawn from its results.json (moved out of pcfg.py, issue 20).
Curriculum (Fig. 4): the teacher's loss with its three phases, the 3-gram M_robust, and (2,T) accuracy against the
stage-1 checkpoint. Probes: the median M_robust and M_close of every n-gram window, the non-terminal probe per depth
against its majority floor, and M_robust read against the teacher's loss (the docs' "Where the M_robust maximum
falls").

    python docs/pcfg_extra.py out/pcfg/cpu-mlm-all   # writes fig_curriculum.png and fig_probes.png there
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402
import pcfg  # noqa: E402


def curriculum_figure(res, budgets, path):
    """Fig. 4 of one level: teacher loss and phases, the first window's M_robust, (2,T) against its stage-1 step."""
    plt = common.plt()
    t, ph, probe, sweep = res["teacher"], res.get("phases"), res.get("probe"), res.get("two_shot_sweep")
    mrobust = bool(probe and probe.get("m_robust"))
    panels = 1 + mrobust + bool(sweep)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    axes = iter(axes[0])
    ax = next(axes)  # teacher steps on a log axis, as in the paper's Fig. 4 (step 0 left out)
    ax.plot(t["steps"][1:], t["val_loss"][1:], "k-", lw=1.2)
    if ph:
        first, last, top = t["steps"][min(1, len(t["steps"]) - 1)], t["steps"][-1], max(t["val_loss"][1:])
        spans = [(first, ph["drop_start"], "tab:gray", "1"), (ph["drop_start"], ph["drop_end"], "tab:red", "2"),
                 (ph["drop_end"], last, "tab:blue", "3")]
        for a, b, c, lab in spans:
            ax.axvspan(a, b, color=c, alpha=0.12, lw=0)
            ax.text((a * b) ** 0.5, top * 0.97, lab, ha="center", fontsize=10)
        ax.axvline(ph["inflection"], color="tab:red", ls="--", lw=1, label=f"inflection {ph['inflection']}")
    for b in budgets:
        ax.plot(b, t["val_loss"][t["steps"].index(max(s for s in t["steps"] if s <= b))], "v", color="tab:green")
    ax.plot(t["steps"][1:], t["val_loss"][1:], "|", color="gray", ms=4, label="checkpoints")
    ax.set(xscale="log", xlabel="teacher steps", ylabel="validation loss", title="teacher's loss, three phases")
    ax.legend(fontsize=8)
    if mrobust:
        ax = next(axes)
        name, q = next(iter(probe["m_robust"].items()))
        q = q["l1"]
        ax.plot(probe["steps"][1:], q["median"][1:], "-", color="tab:purple", label=f"median M_robust ({name})")
        ax.fill_between(probe["steps"][1:], q["q25"][1:], q["q75"][1:], color="tab:purple", alpha=0.2, lw=0,
                        label="quartiles")
        peak = int(np.nanargmax(q["median"]))
        ax.plot(probe["steps"][peak], q["median"][peak], "*", color="tab:purple", ms=10,
                label=f"maximum, step {probe['steps'][peak]}")
        ax.set(xscale="log", xlabel="teacher steps", ylabel="L1 distance", yscale="log", title=f"M_robust, {name}")
        if ph:
            ax.axvspan(ph["drop_start"], ph["drop_end"], color="tab:red", alpha=0.12, lw=0, label="drop (phase 2)")
            ax.axvline(ph["inflection"], color="tab:red", ls="--", lw=1)
        ax.legend(fontsize=8)
    if sweep:
        ax, b0 = next(axes), budgets[0]
        pts = {}
        for e in sweep + [e for e in res["students"].get("two_shot", []) if e["budget"] == b0]:
            pts.setdefault(e["stage1"], []).append(e["acc"])
        pcfg.minmax_bars(ax, sorted(pts), [pts[x] for x in sorted(pts)], color="tab:red", label="(2,T)-progressive")
        if res["students"].get("oneshot"):
            ax.axhline(pcfg.mean_at(res["students"]["oneshot"], b0), color="tab:orange", ls=":", label="one-shot")
        ax.set(xlabel="stage-1 teacher checkpoint", ylabel="final accuracy",
               title=f"(2,T)-progressive, budget {b0}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    budgets = sorted({int(b) for b in str(res["config"]["budgets"]).split(",")})
    levels = res["levels"] if "levels" in res else {"mlm": res}  # --objective boundary: figures per level
    if not any(r.get("teacher") for r in levels.values()):
        common.fail("run", f"{run}/results.json holds no teacher (use a run of a --mode other than ce)")
    for lk, r in levels.items():
        tail = ".png" if lk == "mlm" else f"_level{lk}.png"
        if r.get("teacher"):
            curriculum_figure(r, budgets, os.path.join(run, "fig_curriculum" + tail))
        if r.get("probe"):
            probe_figure(r["probe"], r.get("teacher"), r.get("phases"), os.path.join(run, "fig_probes" + tail))


if __name__ == "__main__":
    main()
