"""The UI summary and the drift between versions (pure functions of the documents)."""

from __future__ import annotations

import base64
import html
import re
from urllib.parse import unquote

import pytest
from markdown_it import MarkdownIt

from tasks.publish.drift import drift
from tasks.publish.markdown import data_uri, escape_markdown, file_link, summary_markdown, table_rows
from tasks.publish.schema import Coefficients

# Names a user may give columns, files and folders, each aimed at a piece of markdown or HTML.
HOSTILE = [
    "a|b", "*bold*", "__under__", "`tick`", "<b>bold</b>", "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>", "[link](javascript:alert(1))", "line\nbreak", "&lt;entity&amp;",
    "back\\slash|", "# heading", "https://example.com/a_b", "![img](x.png)", "~~strike~~",
]


def _json(b0: float, b1: float, sgd: tuple[float, float] = (0.0, 0.0)) -> dict:
    return {
        "target": "y", "terms": ["x"], "intercept": True,
        "exact": {"intercept": b0, "coefficients": [b1], "r_squared": 0.9, "adj_r_squared": 0.89,
                  "residual_std": 1.5, "condition_number": 9.5, "condition_number_scaled": 1.0,
                  "warnings": ["the design is ill-conditioned"]},
        "sgd": {"intercept": sgd[0], "coefficients": [sgd[1]], "optimizer": "sgd", "lr": 0.5,
                "epochs": 128, "stop_reason": "tol"},
    }


def _doc(b0: float, b1: float, sgd: tuple[float, float] = (0.0, 0.0), **changes) -> Coefficients:
    """coefficients.json as read back, with top-level fields changed (e.g. terms=[...])."""
    return Coefficients.from_json(_json(b0, b1, sgd) | changes)


class _Comparison:
    converged = False
    summary = "SGD did not converge in 128 epochs"
    excess_mse = 0.25


def test_first_version_has_no_drift():
    """Without a previous version of the model, drift says so and changes nothing."""
    moved = drift(None, None, _doc(1.0, 2.0))
    assert moved.to_json() == {"since": None, "changes": None, "max_abs_change": None, "max_rel_change": None}


def test_drift_is_the_change_of_each_exact_parameter():
    """Changes are new - old per parameter; the maxima are over absolute and relative changes."""
    moved = drift(_doc(1.0, 2.0), "v1", _doc(1.5, 1.0))
    assert moved.since == "v1"
    assert moved.changes == {"intercept": 0.5, "x": -1.0}
    assert moved.max_abs_change == 1.0
    assert moved.max_rel_change == pytest.approx(0.5)


def test_models_are_the_same_only_with_the_same_target_terms_and_intercept():
    """Drift compares like with like."""
    other = _doc(1.0, 2.0, terms=["x", "x^2"])
    assert _doc(1.0, 2.0).same_model(_doc(3.0, 4.0))
    assert not _doc(1.0, 2.0).same_model(other)
    assert _doc(1.0, 2.0).parameters("exact") == (["intercept", "x"], [1.0, 2.0])


def test_summary_shows_table_verdict_statistics_drift_images_and_files():
    """The markdown holds everything the UI must show."""
    doc = _doc(1.0, 2.0, sgd=(0.9, 2.1))
    moved = drift(_doc(1.0, 1.0), "v0", doc)
    text = summary_markdown(doc, _Comparison(), "/tmp/v1", moved, {"fit.png": b"\0\0\0"},
                            ["coefficients.json", "fit.png"])
    rows = {line.split(" | ")[0]: line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
    # parameter, exact, SGD, difference, std. error, t, P>|t|, interval, change (no inference in this doc)
    assert rows["| intercept"][1] == "1" and rows["| intercept"][2] == "0.9"
    assert rows["| x"][1] == "2" and rows["| x"][2] == "2.1" and rows["| x"][4] == "—"
    assert "not converged" in text and "R² **0.9**" in text and "condition number 9.5" in text
    assert "drift since v0" in text and "![fit](data:image/png;base64,AAAA)" in text
    assert "**warning:** the design is ill-conditioned" in text
    assert "[fit.png](file:///tmp/v1/fit.png)" in text


def test_the_uncentered_r_squared_says_so_wherever_it_is_shown(tmp_path):
    """Without an intercept R² is the uncentered one (0.989 where the centered one is 0.888): the UI
    summary and `linreg show` label it "R² (uncentered)"; with one, plain "R²"."""
    through_origin = _doc(1.0, 2.0, intercept=False)
    text = summary_markdown(through_origin, _Comparison(), "/tmp/v1", drift(None, None, through_origin), {}, [])
    assert "R² (uncentered) **0.9**" in text
    assert through_origin.r_squared_label() == "R² (uncentered)" and _doc(1.0, 2.0).r_squared_label() == "R²"


def test_the_summary_inlines_the_very_png_bytes_of_the_version_files():
    """One render serves both: each image in the markdown decodes to the bytes given for its file."""
    pngs = {"fit.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "loss.png": b"\x89PNG\r\n\x1a\nloss"}
    doc = _doc(1.0, 2.0)
    text = summary_markdown(doc, _Comparison(), "/tmp/v1", drift(None, None, doc), pngs, sorted(pngs))
    shown = dict(re.findall(r"!\[(\w+)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text))
    assert {f"{k}.png": base64.b64decode(v, validate=True) for k, v in shown.items()} == pngs
    assert data_uri(b"\0\0\0") == "data:image/png;base64,AAAA"


def test_table_rows_carry_version_parameter_values_and_change():
    """One row per parameter, for the artifact history."""
    doc = _doc(1.0, 2.0, sgd=(0.9, 2.1))
    rows = table_rows(doc, _Comparison(), "v1", drift(_doc(1.0, 1.0), "v0", doc))
    assert rows == [
        {"version": "v1", "parameter": "intercept", "exact": 1.0, "sgd": 0.9, "change_since_previous": 0.0,
         "converged": False},
        {"version": "v1", "parameter": "x", "exact": 2.0, "sgd": 2.1, "change_since_previous": 1.0,
         "converged": False},
    ]


# --- user text in the markdown ----------------------------------------------------------------------
# markdown-it-py (CommonMark with GFM tables, raw HTML on) is the independent renderer here; the
# Prefect UI's own renderer is checked in a real browser by tests/test_serve.py.

MD = MarkdownIt("commonmark").enable("table")
# markdown-it refuses file: and javascript: links itself; this one renders every link it parses.
MD.validateLink = lambda url: True


def _shown(name: str) -> str:
    """What a reader must see for a name: itself, with a newline written as \\n."""
    return name.replace("\n", "\\n")


def _hostile_doc() -> Coefficients:
    doc = _json(1.0, 2.0, sgd=(0.9, 2.1))
    doc["exact"]["coefficients"] = doc["sgd"]["coefficients"] = [float(i) for i in range(len(HOSTILE))]
    return Coefficients.from_json(doc | {"target": "y<b>|*", "terms": HOSTILE})


@pytest.mark.parametrize("name", HOSTILE)
def test_an_escaped_name_renders_as_exactly_that_text(name):
    """One paragraph holding the literal name: no tag, link, emphasis or code comes out of it."""
    tokens = MD.parse(escape_markdown(name))
    assert [t.type for t in tokens] == ["paragraph_open", "inline", "paragraph_close"]
    assert [t.type for t in tokens[1].children] == ["text"]
    assert MD.render(escape_markdown(name)) == f"<p>{html.escape(_shown(name), quote=False)}</p>\n"


def test_hostile_names_keep_the_summary_table_and_inject_nothing():
    """Hostile target, terms, version path and file names: the table keeps one row of nine cells per
    parameter with the literal names, the markdown has no raw '<', and the only links are ours."""
    doc = _hostile_doc()
    folder = "/tmp/<b>v|1</b>/[x](javascript:alert(1))"
    files = ["fit.png", "a b(1)<i>.json"]
    text = summary_markdown(doc, _Comparison(), folder, drift(None, None, doc),
                            {"fit.png": b"\0\0\0"}, files)
    assert "<" not in text
    assert len(re.findall(r"(?<!\\)\]\(", text)) == 1 + len(files), "one image and one link per file"
    html_out = MD.render(text)
    assert not re.search(r"<(b|i|script)\b", html_out)
    assert re.findall(r"<img [^>]*>", html_out) == ['<img src="data:image/png;base64,AAAA" alt="fit" />']
    hrefs = re.findall(r'href="([^"]*)"', html_out)
    assert [unquote(h.removeprefix("file://")) for h in hrefs] == [f"{folder}/{f}" for f in files]
    rows = re.findall(r"<tr>(.*?)</tr>", html_out, flags=re.S)
    cells = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, flags=re.S) for row in rows]
    assert [len(c) for c in cells] == [9] * (2 + len(HOSTILE)), "header, intercept, one row per term"
    assert [html.unescape(c[0]) for c in cells[2:]] == [_shown(n) for n in HOSTILE]
    heading = re.search(r"<h1>(.*?)</h1>", html_out).group(1)
    assert html.unescape(heading) == "y<b>|* ~ 1 + " + " + ".join(map(_shown, HOSTILE))


def test_file_links_are_percent_encoded_urls_with_plain_names_as_they_are():
    """The target is the path percent-encoded; the UI shows link text verbatim, so a plain file name
    stays unescaped and only a name with markdown syntax in it is escaped."""
    assert file_link("/my runs (2)", "loss_history.parquet") == \
        "[loss_history.parquet](file:///my%20runs%20%282%29/loss_history.parquet)"
    assert file_link("/v", "fit [1]_.png") == "[fit \\[1\\]\\_\\.png](file:///v/fit%20%5B1%5D_.png)"


def test_table_rows_hold_escaped_names_for_the_uis_markdown_cells():
    """The UI renders string cells of a table artifact as markdown: each renders as the literal name."""
    doc = _hostile_doc()
    rows = table_rows(doc, _Comparison(), "v<1>|", drift(None, None, doc))
    assert len(rows) == 1 + len(HOSTILE)
    for row, name in zip(rows, ["intercept", *HOSTILE]):
        for cell, shown in ((row["parameter"], _shown(name)), (row["version"], "v<1>|")):
            children = MD.parseInline(cell)[0].children
            assert [t.type for t in children] == ["text"] and children[0].content == shown
