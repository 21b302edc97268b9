"""DATA at a URL (issue 19): a table in an S3 bucket, read through the real client libraries from a
real S3-compatible server on loopback (tests/s3_server.py), is the same table as on local disk: the
same content hash, the same coefficients; and a missing bucket or object, or refused credentials,
is exit 2 with one line that names the URL and prints no secret."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.config import ModelSpec, RunConfig
from tasks.errors import UserInputError
from tasks.exact.fit import fit_exact
from tasks.ingest.prepare import prepare_data
from tasks.storage import is_url, location, scrubbed, shown
from tests.prefect_server import free_port
from tests.s3_server import _wait_for, s3_server
from tests.test_cli import (LINREG, assert_rejected, cli_env, linreg,  # noqa: F401 - cli_env: a fixture
                            version_from_stdout)

BUCKET = "tables"
REPO = Path(__file__).resolve().parents[1]


def _table(rows: int = 300, seed: int = 5) -> pa.Table:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(3.0, 2.0, rows), rng.uniform(-1.0, 1.0, rows)
    return pa.table({"x1": x1, "x2": x2, "y": 1.5 - 2.0 * x1 + 0.25 * x2 + rng.normal(size=rows)})


@pytest.fixture(scope="module")
def s3():
    """The server, and a bucket holding the same table as CSV, as one Parquet file and as a prefix of
    three Parquet files; the clients of this process read it through the environment's variables."""
    import s3fs

    with s3_server() as server:
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        table = _table()
        client.put_object(Bucket=BUCKET, Key="one.csv", Body=table.to_pandas().to_csv(index=False).encode())
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=64)
        client.put_object(Bucket=BUCKET, Key="one.parquet", Body=sink.getvalue().to_pybytes())
        for i, (a, b) in enumerate([(0, 100), (100, 250), (250, 300)]):
            sink = pa.BufferOutputStream()
            pq.write_table(table.slice(a, b - a), sink)
            client.put_object(Bucket=BUCKET, Key=f"parts/part-{i}.parquet", Body=sink.getvalue().to_pybytes())
        client.put_object(Bucket=BUCKET, Key="parts/_SUCCESS", Body=b"")  # not a .parquet file: not read
        saved = {name: os.environ.get(name) for name in server.env()}
        os.environ.update(server.env())
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            yield server, table
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def test_locations_keep_urls_and_never_show_their_secrets(monkeypatch):
    assert location("s3://b/k.csv") == "s3://b/k.csv" and is_url("gs://b/k") and is_url("az://c/k")
    assert location("file:///tmp/x.csv") == Path("/tmp/x.csv") and not is_url("file:///tmp/x.csv")
    assert location("data/seed.csv") == Path("data/seed.csv")
    with pytest.raises(UserInputError, match="file:// URL names a local path"):
        location("file://elsewhere/x.csv")
    assert shown("s3://KEY:SECRET@bucket/t/x.csv?X-Amz-Signature=abc#f") == "s3://bucket/t/x.csv"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    assert scrubbed("denied for s3cr3t-value here") == "denied for *** here"
    # RunConfig keeps a URL as given (a Path would fold s3:// into s3:/) and a path as a Path
    assert RunConfig(data="s3://b/t/").data == "s3://b/t/"
    assert RunConfig(data="file:///srv/t.csv").data == Path("/srv/t.csv")
    assert RunConfig.model_validate_json(RunConfig(data="s3://b/t/").model_dump_json()).data == "s3://b/t/"


@pytest.mark.parametrize("key", ["one.csv", "one.parquet", "parts/", "parts"])
def test_a_table_in_a_bucket_is_the_local_table(s3, tmp_path, key):
    """CSV, Parquet, a prefix of Parquet files (with or without the slash): the same stored content
    (SHA-256), the same certified fit, the URL as the source; read in blocks of 50 rows."""
    _, table = s3
    local = tmp_path / "local.parquet"
    pq.write_table(table, local)
    here = prepare_data(ModelSpec(), local, tmp_path / "d1", block_rows=50)
    there = prepare_data(ModelSpec(), f"s3://{BUCKET}/{key}", tmp_path / "d2", block_rows=50)
    assert there.sha256 == here.sha256 and there.rows == here.rows == 300
    assert there.source == f"s3://{BUCKET}/{key}"
    spec = ModelSpec()
    np.testing.assert_array_equal(fit_exact(there.design(spec), there.geometry).params,
                                  fit_exact(here.design(spec), here.geometry).params)


def test_a_row_at_fault_in_a_bucket_object_is_named_by_its_url(s3, tmp_path):
    server, _ = s3
    server.client().put_object(Bucket=BUCKET, Key="bad.csv", Body=b"x,y\n1,2\n2,oops\n3,4\n")
    with pytest.raises(UserInputError, match=rf"^s3://{BUCKET}/bad.csv: column 'y', row 2 \(line 3\)"):
        prepare_data(ModelSpec(), f"s3://{BUCKET}/bad.csv", tmp_path / "d")
    assert not (tmp_path / "d").exists()


def _secrets(server) -> list[str]:
    return [server.key, server.secret]


def test_linreg_run_reads_a_prefix_in_a_bucket(s3, tmp_path, cli_env):
    """`linreg run s3://BUCKET/parts/`: the version's coefficients are those of the local table, its
    manifest names the URL and the content hash, and no credential appears in any output or file."""
    server, table = s3
    env = cli_env | server.env()
    result = linreg("run", f"s3://{BUCKET}/parts/", "--epochs", "50", "--artifacts-dir", str(tmp_path / "a"),
                    "--data-dir", str(tmp_path / "d"), cwd=tmp_path, env=env)
    version = version_from_stdout(result)
    manifest = json.loads((version / "manifest.json").read_text())
    local = prepare_data(ModelSpec(), _local_copy(table, tmp_path), tmp_path / "d-local")
    assert manifest["data"]["source"] == f"s3://{BUCKET}/parts/" and manifest["data"]["sha256"] == local.sha256
    exact = json.loads((version / "coefficients.json").read_text())["exact"]
    want = fit_exact(local.design(ModelSpec()), local.geometry).params
    np.testing.assert_array_equal([exact["intercept"], *exact["coefficients"]], want)
    texts = [result.stdout, result.stderr, *(p.read_bytes().decode("latin-1") for p in version.iterdir())]
    for secret in _secrets(server):
        assert not any(secret in text for text in texts)


def _bucket_runs(s3, tmp_path: Path, cli_env: dict, prefix: str) -> tuple:
    """(the server, the CLI's environment for it, the artifacts URL s3://BUCKET/prefix, the module's
    table as a local Parquet file)."""
    server, table = s3
    return server, cli_env | server.env(), f"s3://{BUCKET}/{prefix}", _local_copy(table, tmp_path)


def _local_copy(table: pa.Table, folder: Path) -> Path:
    path = folder / "local-copy.parquet"
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize("case, url, overrides, named", [
    ("missing bucket", "s3://no-such-bucket/t.csv", {}, "no such bucket, object or folder"),
    ("missing object", f"s3://{BUCKET}/absent.parquet", {}, "no such bucket, object or folder"),
    ("missing prefix", f"s3://{BUCKET}/absent/", {}, "no such bucket, object or folder"),
    ("wrong secret", f"s3://{BUCKET}/one.csv", {"AWS_SECRET_ACCESS_KEY": "wrong-secret-for-the-test"},
     "access refused: check the credentials"),
    ("unknown key", f"s3://{BUCKET}/one.csv", {"AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY0000000"},
     "access refused: check the credentials"),
])
def test_a_bucket_that_cannot_be_read_is_exit_2_one_line_nothing_written(s3, tmp_path, cli_env, case, url,
                                                                         overrides, named):
    server, _ = s3
    env = cli_env | server.env(**overrides)
    result = linreg("run", url, "--artifacts-dir", str(tmp_path / "a"), "--data-dir", str(tmp_path / "d"),
                    cwd=tmp_path, env=env)
    assert_rejected(result, [rf"^linreg: error: {re.escape(url)}: {named}"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()
    for secret in [server.secret, *overrides.values()]:
        assert secret not in result.stderr


def test_versions_in_a_bucket_are_written_manifest_last_and_read_by_every_verb(s3, tmp_path, cli_env):
    """`linreg run --artifacts-dir s3://BUCKET/runs`: the last stdout line is the version's URL, its
    files are in the bucket with manifest.json and `latest`; a second run measures drift against the
    first; `versions`, `show` (a name, `latest` or the URL), `diff` and `predict` read them there."""
    import s3fs

    server, env, runs, local = _bucket_runs(s3, tmp_path, cli_env, "runs")
    urls = []
    for epochs in ("30", "60"):
        result = linreg("run", str(local), "--epochs", epochs, "--artifacts-dir", runs, "--data-dir",
                        str(tmp_path / "d"), cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        urls.append(result.stdout.strip().splitlines()[-1])
        assert urls[-1].startswith(runs + "/") and f"version: {urls[-1]}" in result.stderr
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    names = [u.rsplit("/", 1)[1] for u in urls]
    assert fs.cat_file(f"{BUCKET}/runs/latest").decode().strip() == names[1]
    stored = {p.rsplit("/", 1)[1] for p in fs.ls(f"{BUCKET}/runs/{names[1]}")}
    assert {"manifest.json", "coefficients.json", "comparison.json", "fit.png", "loss.png",
            "loss_history.parquet"} <= stored and not any(n.startswith(".writer-") for n in stored)
    second = json.loads(fs.cat_file(f"{BUCKET}/runs/{names[1]}/coefficients.json"))
    assert second["drift"]["since"] == names[0]
    listed = linreg("versions", "--artifacts-dir", runs, cwd=tmp_path, env=env)
    assert listed.returncode == 0 and all(n in listed.stdout for n in names), listed.stderr
    for args in (["show", "--artifacts-dir", runs], ["show", names[0][:20], "--artifacts-dir", runs],
                 ["show", urls[0]]):
        shown_version = linreg(*args, cwd=tmp_path, env=env)
        assert shown_version.returncode == 0, shown_version.stderr
        assert (names[0] if len(args) != 3 or args[1] != "--artifacts-dir" else names[1]) in shown_version.stdout
        assert "linreg-versions-" not in shown_version.stdout  # the mirror's folder never shows
    compared = linreg("diff", names[0], "latest", "--artifacts-dir", runs, cwd=tmp_path, env=env)
    assert compared.returncode == 0 and names[0] in compared.stdout and names[1] in compared.stdout, compared.stderr
    out = tmp_path / "p.parquet"
    predicted = linreg("predict", urls[1], str(local), "--out", str(out), cwd=tmp_path, env=env)
    assert predicted.returncode == 0, predicted.stderr
    exact = second["exact"]
    got = pq.read_table(out).column("prediction").to_numpy()
    want = exact["intercept"] + pq.read_table(local).to_pandas()[["x1", "x2"]].to_numpy() @ exact["coefficients"]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    for text in (listed.stdout + listed.stderr, compared.stdout, predicted.stderr):
        assert server.secret not in text
    # the same run again reuses the fits of the version in the bucket
    again = linreg("run", str(local), "--epochs", "60", "--artifacts-dir", runs, "--data-dir", str(tmp_path / "d"),
                   cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    reused = again.stdout.strip().splitlines()[-1].removeprefix("s3://")
    assert json.loads(fs.cat_file(f"{reused}/manifest.json"))["reused_from"] == names[1]


def test_a_run_killed_before_its_manifest_leaves_nothing_visible_and_is_cleaned_up(s3, tmp_path, cli_env):
    """Killed after uploading every other file (LINREG_CRASH_AT=version-temp): no version is listed,
    `latest` does not move; the next run on this host removes the abandoned prefix and publishes."""
    import s3fs

    server, env, runs, local = _bucket_runs(s3, tmp_path, cli_env, "killed")
    # In a session of its own: the crash point kills its whole process group, as kill -9 of a run would.
    killed = subprocess.run([str(LINREG), "run", str(local), "--epochs", "5", "--artifacts-dir", runs, "--data-dir",
                             str(tmp_path / "d")], cwd=tmp_path, env=env | {"LINREG_CRASH_AT": "version-temp"},
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
                            start_new_session=True)
    assert killed.returncode == -9, killed.stderr
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    abandoned = fs.ls(f"{BUCKET}/killed")
    assert len(abandoned) == 1 and not fs.exists(f"{abandoned[0]}/manifest.json")
    listed = linreg("versions", "--artifacts-dir", runs, cwd=tmp_path, env=env)
    assert "no versions in " + runs in listed.stderr
    done = linreg("run", str(local), "--epochs", "5", "--artifacts-dir", runs, "--data-dir", str(tmp_path / "d"),
                  cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    fs.invalidate_cache()
    left = fs.ls(f"{BUCKET}/killed")
    assert abandoned[0] not in left and f"{BUCKET}/killed/latest" in left and len(left) == 2


def test_a_server_killed_while_a_version_is_written_leaves_nothing_visible_and_the_next_run_works(
        s3, tmp_path, cli_env):
    """The store's server dies the moment the run sends its version's manifest (every other file is in
    the store): the run fails without a traceback or a secret, no version is listed and `latest` does
    not exist; with the server back, the next run publishes and removes the abandoned prefix."""
    import s3fs

    server, env, runs, local = _bucket_runs(s3, tmp_path, cli_env, "server-killed")
    port = free_port()
    proxy = subprocess.Popen([sys.executable, "-m", "tests.tcp_proxy", str(port), server.endpoint.rsplit(":", 1)[1],
                              r"PUT [^ ]*/server-killed/[^ ]*/manifest\.json"], cwd=REPO, start_new_session=True,
                             stdin=subprocess.DEVNULL)
    try:
        _wait_for(port, proxy)
        failed = linreg("run", str(local), "--epochs", "5", "--artifacts-dir", runs, "--data-dir",
                        str(tmp_path / "d"), cwd=tmp_path, env=env | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
        assert proxy.wait(timeout=60) == 0  # it died at the manifest's request, as planned
    finally:
        if proxy.poll() is None:
            os.killpg(proxy.pid, signal.SIGKILL)
            proxy.wait()
    assert failed.returncode != 0 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    assert server.secret not in failed.stdout + failed.stderr
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    abandoned = fs.ls(f"{BUCKET}/server-killed")
    assert len(abandoned) >= 1 and not any(fs.exists(f"{p}/manifest.json") for p in abandoned)
    assert "coefficients.json" in {p.rsplit("/", 1)[-1] for p in fs.ls(abandoned[0])}  # the files did arrive
    listed = linreg("versions", "--artifacts-dir", runs, cwd=tmp_path, env=env)
    assert "no versions in " + runs in listed.stderr
    done = linreg("run", str(local), "--epochs", "5", "--artifacts-dir", runs, "--data-dir", str(tmp_path / "d"),
                  cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    fs.invalidate_cache()
    left = fs.ls(f"{BUCKET}/server-killed")
    assert not set(abandoned) & set(left) and f"{BUCKET}/server-killed/latest" in left and len(left) == 2


def test_a_run_with_everything_in_the_bucket_on_a_local_dask_cluster(s3, tmp_path, cli_env):
    """DATA, --data-dir and --artifacts-dir in the bucket, a two-worker LocalCluster: the workers read
    their own parts of DATA from the bucket, check and store them as the parts of the stored table
    DATA-DIR/validated/<sha256>.parquet/ (named by the manifest, its marker written last, no temporary
    prefix left), and the passes read it from there; the local table's content hash and coefficients
    (to float64 rounding). A second run on that stored table hashes it and uploads nothing."""
    import s3fs

    server, _ = s3
    env = cli_env | server.env()
    table = _table(4 * 65536 + 77, seed=8)  # 5 chunks of the content hash: 4 parts, one per worker thread x 2
    for i, (a, b) in enumerate([(0, 100_000), (100_000, 100_010), (100_010, table.num_rows)]):
        sink = pa.BufferOutputStream()
        pq.write_table(table.slice(a, b - a), sink, row_group_size=30_000)
        server.client().put_object(Bucket=BUCKET, Key=f"big/part-{i}.parquet", Body=sink.getvalue().to_pybytes())
    store, runs = f"s3://{BUCKET}/store", f"s3://{BUCKET}/dask-runs"
    result = linreg("run", f"s3://{BUCKET}/big/", "--dask", "--epochs", "20", "--data-dir", store,
                    "--artifacts-dir", runs, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Task run 'part_sums-" in result.stderr  # the refinement's parts ran as tasks on the cluster
    assert "in 4 parts on the Dask cluster's workers" in result.stderr  # 2 workers x 2: the ingest's parts
    url = result.stdout.strip().splitlines()[-1]
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    key = url.removeprefix("s3://")
    manifest = json.loads(fs.cat_file(f"{key}/manifest.json"))
    local = prepare_data(ModelSpec(), _local_copy(table, tmp_path), tmp_path / "d-local")
    sha = local.sha256
    assert manifest["data"]["sha256"] == sha and manifest["data"]["parquet"] == f"{store}/validated/{sha}.parquet"
    stored = f"{BUCKET}/store/validated/{sha}.parquet"
    assert fs.ls(f"{BUCKET}/store/validated") == [stored]  # no temporary prefix left
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(stored))
    assert names == ["_linreg.json", *(f"part-{i:05d}.parquet" for i in range(4))]
    assert json.loads(fs.cat_file(f"{stored}/_linreg.json"))["sha256"] == sha
    parts = [pq.read_table(fs.open(f"{stored}/{name}", "rb")) for name in names[1:]]
    assert pa.concat_tables(parts).equals(pq.read_table(local.path))  # the local stored rows, in order
    exact = json.loads(fs.cat_file(f"{key}/coefficients.json"))["exact"]
    want = fit_exact(local.design(ModelSpec()), local.geometry).params
    np.testing.assert_allclose([exact["intercept"], *exact["coefficients"]], want, rtol=4e-16, atol=0)
    modified = {p["name"]: p["LastModified"] for p in fs.ls(stored, detail=True)}
    again = linreg("run", f"{store}/validated/{sha}.parquet", "--epochs", "20", "--data-dir", store,
                   "--artifacts-dir", runs, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    fs.invalidate_cache()
    assert {p["name"]: p["LastModified"] for p in fs.ls(stored, detail=True)} == modified
    assert fs.ls(f"{BUCKET}/store/validated") == [stored]
    assert not (tmp_path / "s3:").exists()  # nothing local was named after the URL


def _parted_table(tmp_path: Path, bad_row: int | None = None) -> Path:
    """2 chunks and 10 rows of the content hash as a local Parquet file (2 parts), a bad value at bad_row."""
    table = _table(2 * 65536 + 10, seed=9)
    if bad_row is not None:
        x1 = table.column("x1").to_numpy().copy()
        x1[bad_row] = np.inf
        table = table.set_column(0, "x1", pa.array(x1))
    path = tmp_path / "parted.parquet"
    pq.write_table(table, path)
    return path


def test_parts_stored_in_the_bucket_clean_up_after_a_dead_writer_and_after_bad_input(s3, tmp_path):
    """Parts written to --data-dir in the bucket: a temporary prefix of a dead writer of this host is
    removed when the next stored table is published, a live writer's is kept; a bad value in the
    second part leaves no temporary prefix behind."""
    import s3fs

    from tasks.kernels.passes import Passes, local_map
    from tasks.tempfiles import temp_name

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    store = f"s3://{BUCKET}/parted-store"
    child = subprocess.run([sys.executable, "-c", "from tasks.tempfiles import temp_name; "
                            "print(temp_name('.tmp-', '.parquet'))"], capture_output=True, text=True, check=True,
                           cwd=REPO)
    dead, live = child.stdout.strip(), temp_name(".tmp-", ".parquet")
    for name in (dead, live):
        fs.pipe_file(f"{BUCKET}/parted-store/validated/{name}/part-00000.parquet", b"PAR1 half written")
    spec, passes = ModelSpec(target="y", features=("x1", "x2")), Passes(local_map, 2)
    with pytest.raises(UserInputError, match=r"column 'x1', row 65541: .*inf"):
        prepare_data(spec, _parted_table(tmp_path, bad_row=65540), store, passes=passes)
    fs.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/parted-store/validated")) == sorted([dead, live])
    stored = prepare_data(spec, _parted_table(tmp_path), store, passes=passes)
    assert stored.parts == 2 and stored.path == f"{store}/validated/{stored.sha256}.parquet"
    fs.invalidate_cache()
    left = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/parted-store/validated"))
    assert left == sorted([live, f"{stored.sha256}.parquet"])
    assert stored.sha256 == prepare_data(spec, _parted_table(tmp_path), tmp_path / "d").sha256


def test_a_manifest_is_created_once_never_overwritten(s3):
    """The conditional create behind a version's manifest.json: a second writer of the same name fails
    (S3's If-None-Match: *) and the first one's bytes stay."""
    import s3fs

    from tasks.publish.remote import _create

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    path = f"{BUCKET}/once/v1/manifest.json"
    _create(fs, path, b"first")
    with pytest.raises(OSError):
        _create(fs, path, b"second")
    assert fs.cat_file(path) == b"first"


def test_drift_and_reuse_look_past_a_newer_version_of_another_model(s3, tmp_path, cli_env):
    """In the bucket: a run, a run of another model (no intercept), the first run again: the third
    measures drift against the first and reuses its fits, reading past the newer version between."""
    import s3fs

    server, env, runs, local = _bucket_runs(s3, tmp_path, cli_env, "mixed")
    names = []
    for extra in ([], ["--no-intercept"], []):
        result = linreg("run", str(local), "--epochs", "30", *extra, "--artifacts-dir", runs, "--data-dir",
                        str(tmp_path / "d"), cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        names.append(result.stdout.strip().splitlines()[-1].rsplit("/", 1)[1])
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    manifest = json.loads(fs.cat_file(f"{BUCKET}/mixed/{names[2]}/manifest.json"))
    coefficients = json.loads(fs.cat_file(f"{BUCKET}/mixed/{names[2]}/coefficients.json"))
    assert manifest["reused_from"] == names[0] and coefficients["drift"]["since"] == names[0]
