"""The layout of a version folder (tasks.publish.schema): each document carries its format tag, reads
back to what was written, refuses a newer format instead of guessing, and reads a document written
before the tags existed with the defaults readers always used."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tasks.publish.documents import coefficients_doc, comparison_doc, design_doc
from tasks.publish.reader import read_version
from tasks.publish.schema import (COEFFICIENTS, COMPARISON, DESIGN, FORMATS, MANIFEST, Coefficients, ComparisonRecord,
                                  DataRecord, DesignRecord, Manifest, SchemaError)
from tasks.publish.writer import dumps, write_version
from tests.helpers import tutorial_design


@pytest.fixture(scope="module")
def built():
    """The documents of the tutorial's fit, as a run builds them (through JSON, as they are written)."""
    from tasks.config import TrainConfig
    from tasks.evaluate.compare import compare_fits
    from tasks.exact.fit import fit_exact
    from tasks.kernels.tsqr import design_geometry
    from tasks.training.train import train_sgd

    design = tutorial_design()
    exact = fit_exact(design)
    sgd = train_sgd(design, TrainConfig(device="cpu", epochs=200))
    comparison = compare_fits(design, exact, sgd, rtol=1e-6)
    docs = {COEFFICIENTS: coefficients_doc(design, exact, sgd, comparison), COMPARISON: comparison_doc(comparison),
            DESIGN: design_doc(design, design_geometry(design), exact)}
    return {name: json.loads(dumps(doc)) for name, doc in docs.items()}


@pytest.mark.parametrize(("name", "kind"), [(COEFFICIENTS, Coefficients), (COMPARISON, ComparisonRecord),
                                            (DESIGN, DesignRecord)])
def test_each_document_carries_its_tag_and_reads_back_to_what_was_written(built, name, kind):
    doc = built[name]
    assert doc["format"] == FORMATS[name]
    assert json.loads(dumps(kind.from_json(doc).to_json())) == doc


def test_the_tutorial_model_reads_as_its_formula_and_parameters(built):
    coef = Coefficients.from_json(built[COEFFICIENTS])
    assert coef.model_formula() == "y ~ 1 + x" and coef.parameter_names() == ["intercept", "x"]
    names, values = coef.parameters("exact")
    assert values == [built[COEFFICIENTS]["exact"]["intercept"], *built[COEFFICIENTS]["exact"]["coefficients"]]


@pytest.mark.parametrize("name", [COEFFICIENTS, COMPARISON, MANIFEST, DESIGN])
def test_a_newer_format_is_refused_not_guessed(built, name):
    kind = {COEFFICIENTS: Coefficients, COMPARISON: ComparisonRecord, MANIFEST: Manifest, DESIGN: DesignRecord}[name]
    doc = built.get(name, {"data": {}})
    newer = FORMATS[name].rsplit("/", 1)[0] + "/2"
    with pytest.raises(SchemaError, match=rf"{name} has format '{newer}'.*newer linreg-flow"):
        kind.from_json(doc | {"format": newer})


def test_a_document_missing_what_makes_the_model_is_refused(built):
    for key in ("target", "terms", "intercept", "exact", "sgd"):
        doc = {k: v for k, v in built[COEFFICIENTS].items() if k != key}
        with pytest.raises(SchemaError, match=rf"coefficients\.json: field '{key}'"):
            Coefficients.from_json(doc)
    with pytest.raises(SchemaError, match="not a JSON object"):
        Coefficients.from_json([1, 2])


def test_a_document_from_before_the_tags_reads_with_the_old_defaults(built):
    """No format tag: alpha 0.05 and df_resid = dof, as the readers assumed before the fields existed."""
    old = json.loads(json.dumps(built[COEFFICIENTS]))
    del old["format"], old["exact"]["alpha"], old["exact"]["df_resid"]
    coef = Coefficients.from_json(old)
    assert coef.exact["alpha"] == 0.05 and coef.exact["df_resid"] == built[COEFFICIENTS]["exact"]["dof"] == 8
    # a tagged document is read as written: nothing is filled in
    tagged = dict(built[COEFFICIENTS], exact={k: v for k, v in built[COEFFICIENTS]["exact"].items() if k != "alpha"})
    assert "alpha" not in Coefficients.from_json(tagged).exact


def test_a_version_of_a_newer_format_is_damaged_for_every_reader(built, tmp_path):
    """Its hashes match, but this code cannot read it: read_version names the file and the format."""
    newer = dict(built[COEFFICIENTS], format="linreg-flow/coefficients/9")
    path, _ = write_version(tmp_path, "ab" * 32, {COMPARISON: dumps(built[COMPARISON])},
                            Coefficients.from_json(built[COEFFICIENTS]), Manifest(DataRecord(), {}, {}, {}))
    raw = dumps(newer)
    (path / COEFFICIENTS).write_bytes(raw)
    manifest = json.loads((path / MANIFEST).read_bytes())
    manifest["files"][COEFFICIENTS] = hashlib.sha256(raw).hexdigest()
    (path / MANIFEST).write_text(json.dumps(manifest))
    docs = read_version(Path(path))
    assert docs.coefficients is None and "linreg-flow/coefficients/9" in docs.damage


def test_the_manifest_keeps_its_fields_and_the_writer_names_it(built, tmp_path):
    manifest = Manifest(DataRecord("d.csv", "ab" * 32, 10, "/v.parquet"), {"alpha": 0.05}, {"python": "3"},
                        {"load": 0.5})
    path, _ = write_version(tmp_path, "ab" * 32, {COMPARISON: dumps(built[COMPARISON])},
                            Coefficients.from_json(built[COEFFICIENTS]), manifest)
    doc = json.loads((path / MANIFEST).read_bytes())
    assert doc["version"] == path.name and doc["data"] == {"source": "d.csv", "sha256": "ab" * 32, "rows": 10,
                                                           "parquet": "/v.parquet"}
    assert set(doc["files"]) == {COEFFICIENTS, COMPARISON} and doc["format"] == FORMATS[MANIFEST]
    assert Manifest.from_json(doc).to_json() == doc
