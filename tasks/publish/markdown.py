"""What the Prefect UI shows for a run: the summary markdown and the coefficient table, with user text
escaped so that it renders as exactly that text."""

from __future__ import annotations

import base64
import math
import re
import string
import unicodedata
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:  # only for annotations: the summary's readers (linreg show) need no torch
    from tasks.evaluate.compare import Comparison
from tasks.publish.schema import Coefficients, Drift
from tasks.storage import is_url
from tasks.wording import counted

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_PLAIN_NAME = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")


def escape_markdown(text: str) -> str:
    """User text (a column, file or folder name) as markdown that renders as exactly that text.

    The rule: `&`, `<` and `>` become HTML entities (no tag or entity can start); every other
    ASCII punctuation character gets a backslash (CommonMark lets any of them be escaped, so no
    emphasis, code, link, image, autolink, heading or table-cell syntax survives); control and
    line-separator characters are written as their Python escapes (a newline as the two
    characters \\n), so the text stays on its line and cannot end a table row.
    Prefect's UI renders the markdown artifact and the string cells of a table artifact with the
    same markdown renderer, so both get this escape.
    """
    visible = "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
        for c in text)
    return "".join(_ENTITIES.get(c) or ("\\" + c if c in string.punctuation else c) for c in visible)


def file_link(folder: str, name: str) -> str:
    """A markdown link to folder/name with a percent-encoded file:// URL.

    Prefect's UI shows a link's text verbatim (backslash escapes included), so a plain file name
    (alphanumeric runs joined by single '.', '_' or '-', which no markdown renderer reads as
    syntax) is the text as it is; any other name is escaped.
    """
    text = name if _PLAIN_NAME.fullmatch(name) else escape_markdown(name)
    if is_url(folder):  # a version on an object store: its object's URL
        return f"[{text}]({folder}/{quote(name)})"
    return f"[{text}](file://{quote(f'{folder}/{name}')})"


def data_uri(png: bytes) -> str:
    """PNG bytes as a data URI: Prefect's image artifact takes only a URL, and a markdown artifact
    with an inline image needs no file server. The same bytes as the version's file (30-90 KB)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _fmt(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.10g}"


def _flat(doc: Coefficients, field: str) -> list:
    """An exact-fit {"intercept", "coefficients"} field as one list in parameter order (None where
    absent, e.g. a document written before the field existed)."""
    values = doc.values(doc.exact.get(field))
    return [(None, None) if field == "conf_int" and v is None else v for v in values]


def summary_markdown(doc: Coefficients, comparison: Comparison, version_path: str, moved: Drift,
                     images: dict[str, bytes], files: list[str], alerts: tuple[str, ...] = ()) -> str:
    """The run's summary: coefficients side by side, verdict, fit statistics, drift, plots, files.

    images: file name -> PNG bytes, shown inline; alerts: their messages, which fill the first line.
    """
    exact, sgd = doc.exact, doc.sgd
    names, ex = doc.parameters("exact")
    _, sg = doc.parameters("sgd")
    changes = moved.changes or {}
    verdict = "converged" if comparison.converged else "not converged"
    inference = [_flat(doc, field) for field in ("std_errors", "t_values", "p_values", "conf_int")]
    ci = f"{100 * (1 - exact['alpha']):g}% interval"
    terms = ["1"] * doc.intercept + [escape_markdown(t) for t in doc.terms]
    lines = [f"**ALERT: {escape_markdown('; '.join(alerts))}.**", ""] if alerts else []
    lines += [
        # a formula as the user wrote it; otherwise the model's terms
        f"# {escape_markdown(doc.formula)}" if doc.formula else f"# {escape_markdown(doc.target)} ~ {' + '.join(terms)}",
        "",
        f"**Verdict: {verdict}.** {comparison.summary}.",
        "",
        # exact and SGD side by side first: the comparison is what the page is for, and a narrow
        # window cuts the table's right end
        f"| parameter | exact least squares | torch SGD | abs. difference | std. error | t | P>\\|t\\| | {ci} "
        "| change since previous |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, a, b, se, t, p, (lo, hi) in zip(names, ex, sg, *inference):
        diff = abs(b - a) if a is not None and b is not None else None
        lines.append(f"| {escape_markdown(name)} | {_fmt(a)} | {_fmt(b)} | {_fmt(diff)} | {_fmt(se)} | {_fmt(t)} "
                     f"| {_fmt(p)} | {_fmt(lo)} to {_fmt(hi)} | {_fmt(changes.get(name))} |")
    since = (f"drift since {escape_markdown(moved.since)}: largest relative change "
             f"{_fmt(moved.max_rel_change)}"
             if moved.since else "first version of this model: no drift yet")
    lines += [
        "",
        f"- {doc.r_squared_label()} **{_fmt(exact['r_squared'])}**, adjusted {_fmt(exact['adj_r_squared'])}, "
        f"residual SD {_fmt(exact['residual_std'])}",
        f"- F {_fmt(exact.get('f_statistic'))} (p {_fmt(exact.get('f_pvalue'))}), log-likelihood "
        f"{_fmt(exact.get('log_likelihood'))}, AIC {_fmt(exact.get('aic'))}, BIC {_fmt(exact.get('bic'))}, "
        f"{exact['df_resid']} residual degrees of freedom",
        *([f"- covariance {exact['cov_type']}" + (f" ({counted(exact['cov_groups'], 'cluster')})"
                                                   if exact.get("cov_groups") else "")
           + ": z, p and intervals from the normal, F a Wald test (statsmodels' robust results)"]
          if exact.get("cov_type", "nonrobust") != "nonrobust" else []),
        *([f"- {counted(doc.dropped_rows, 'row')} with a missing value left out (--missing drop)"]
          if doc.dropped_rows else []),
        *([f"- weighted least squares, weights {escape_markdown(doc.weights)} (SGD on the same weighted MSE)"]
          if doc.weights else []),
        f"- condition number {_fmt(exact['condition_number'])} (scaled design "
        f"{_fmt(exact['condition_number_scaled'])})",
        f"- SGD: {sgd['optimizer']}, lr {_fmt(sgd['lr'])}, {counted(sgd['epochs'], 'epoch')} ({sgd['stop_reason']}), "
        f"excess MSE {_fmt(comparison.excess_mse)}",
        f"- {since}",
        *(f"- **warning:** {w}" for w in exact.get("warnings", [])),
        "",
    ]
    for name, png in images.items():
        lines += [f"![{escape_markdown(name.removesuffix('.png'))}]({data_uri(png)})", ""]
    lines += [f"Version folder: {escape_markdown(version_path)}", ""]
    lines += [f"- {file_link(version_path, f)}" for f in files]
    return "\n".join(lines)


def table_rows(doc: Coefficients, comparison: Comparison, version: str, moved: Drift) -> list[dict]:
    """One row per parameter for the Prefect table artifact (its history is the trend).

    The UI renders string cells as markdown (numbers and booleans as plain text): names are escaped.
    """
    names, ex = doc.parameters("exact")
    _, sg = doc.parameters("sgd")
    changes = moved.changes or {}
    return [
        {"version": escape_markdown(version), "parameter": escape_markdown(n), "exact": a, "sgd": b,
         "change_since_previous": changes.get(n), "converged": comparison.converged}
        for n, a, b in zip(names, ex, sg)
    ]
