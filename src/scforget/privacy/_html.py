"""One self-contained HTML file of an audit: verdict, tables, figures embedded as PNG, versions."""

from __future__ import annotations

import base64
import html
import io
import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from ._report import AuditReport

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f4f4f4; } .verdict p { margin: 0.3em 0; } .note { color: #8a5a00; }
img { max-width: 100%; } .small { color: #666; font-size: 0.85em; }
"""


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages behind an audit."""
    out = {"python": platform.python_version()}
    for name in ("scforget", "scvi-tools", "torch", "lightning", "anndata", "numpy", "scikit-learn", "scipy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _figure(draw) -> str:
    """Run ``draw()`` (which returns a figure) and return it as an embedded PNG ``<img>``."""
    import matplotlib.pyplot as plt

    fig = draw()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame) -> str:
    return df.to_html(float_format=lambda x: f"{x:.3f}", na_rep="NaN", border=0, escape=True)


def _roc_figure(report: AuditReport) -> str:
    import matplotlib.pyplot as plt

    def draw():
        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        report.plot_roc(ax=axes[0], ci=True, show=False, title="ROC (95% bands)")
        report.plot_roc(log=True, ax=axes[1], ci=True, show=False, title="ROC, log-log")
        return fig

    return _figure(draw)


def _score_figure(report: AuditReport) -> str:
    import matplotlib.pyplot as plt

    def draw():
        n = len(report.attacks)
        cols = min(n, 3)
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
        for ax, a in zip(axes.ravel(), report.attacks, strict=False):
            report.plot_scores(a, ax=ax, show=False, title=a)
        for ax in axes.ravel()[n:]:
            ax.set_visible(False)
        fig.tight_layout()
        return fig

    return _figure(draw)


def _info_rows(report: AuditReport) -> pd.DataFrame:
    keep = ("model", "adata", "design_checks", "classifier", "n_folds", "k", "lira_references", "n_reference")
    rows = {k: str(report.info[k]) for k in keep if k in report.info}
    if "composition" in report.info and report.info["composition"]:
        c = report.info["composition"]
        rows["composition"] = f"{c['key']}: total variation {c['total_variation']:.3f}, chi-square p {c['chi2_p']:.2g}"
    if "matched" in report.info:
        m = report.info["matched"]
        rows["matched non-members"] = f"{m['n_distinct']} distinct of {m['n_requested']} requested"
    rows["unlearned model"] = str(report.unlearned)
    rows["bootstrap resamples"] = str(report.n_bootstrap)
    rows["seed"] = str(report.seed)
    for k, v in report.info.get("timings", {}).items():
        rows[f"time {k}"] = f"{v:.2f}"
    return pd.DataFrame({"value": rows})


def write_html(report: AuditReport, path: Path) -> Path:
    """Write ``report`` as a single HTML file at ``path`` and return the path."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>scforget audit: {esc(str(report.info.get('model', 'model')))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Membership audit: {esc(str(report.info.get('model', 'model')))}</h1>",
        f"<p class='small'>Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by scforget. "
        "Cells appear only as counts and scores.</p>",
        "<h2>Verdict</h2><div class='verdict'>",
        *(f"<p>{esc(line)}</p>" for line in report.verdict().splitlines()),
        "</div>",
    ]
    notes = report.notes()
    if notes:
        parts += ["<h2>Notes</h2>", *(f"<p class='note'>{esc(n)}</p>" for n in notes)]
    parts += ["<h2>Summary</h2>", _table(report.summary(full=True))]
    parts += ["<h2>Design and checks</h2>", _table(_info_rows(report))]
    parts += ["<h2>ROC curves</h2>", _roc_figure(report)]
    parts += ["<h2>Score distributions</h2>", _score_figure(report)]
    for key in report.groupby:
        parts += [f"<h2>By {esc(str(key))}</h2>", _table(report.by_group(key))]
    if report.donor_key is not None:
        parts += [
            f"<h2>Donors ({esc(report.donor_key)})</h2>",
            _table(report.donor_summary()),
            _table(report.by_donor()),
        ]
    parts += ["<h2>Versions</h2>", _table(pd.DataFrame({"version": package_versions()}))]
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
