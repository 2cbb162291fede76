"""The distillation report's pictures: cAcc per round (distilled and control), learning curve."""

from pathlib import Path

from dpsnet.utils.io import atomic_path

__all__ = ["plot_curve", "plot_rounds"]

#: Levels of the report and their figure names (as ``report.LEVELS``, not imported: no cycle).
LEVELS = ("averaged", "easy", "medium", "hard")


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_rounds(summary: dict, path: Path) -> None:
    """Averaged and per-level cAcc per round: distilled (solid) and control (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    mode = (summary.get("headline") or {}).get("mode")
    keys = dict(zip(LEVELS, ("cAcc", "easy/cAcc", "medium/cAcc", "hard/cAcc"), strict=True))
    for lv, key in keys.items():
        for arm, style in (("distilled", "-"), ("control", "--")):
            pts = []
            for e in summary["rounds"]:
                a = e if arm == "distilled" or e["round"] == 0 else e.get("control")
                v = ((a or {}).get("figures") or {}).get(mode, {}).get(key)
                if v is not None:
                    pts.append((e["round"], v))
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, style, marker="o", label=f"{lv} ({arm})")
    ax.set_xlabel("round (0 = synthesized only)")
    ax.set_ylabel("cAcc (%)")
    ax.set_title(f"Distillation vs same-budget control ({mode})")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    _save(fig, path)


def plot_curve(summary: dict, path: Path) -> None:
    """Averaged cAcc and mAP50 against training iterations, for both arms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    for ax, key in zip(axes, ("cAcc", "mAP50"), strict=True):
        for arm, style in (("distilled", "-"), ("control", "--")):
            pts = [(p["iteration"], p[key]) for p in summary["curve"][arm] if p[key] is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, style, marker=".", label=arm)
        ax.set_xlabel("training iterations (all rounds)")
        ax.set_ylabel(f"{key} (%)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    _save(fig, path)
