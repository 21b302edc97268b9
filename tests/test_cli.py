"""The `linreg` command line, through the real console script in the virtual environment.

Full runs start Prefect's temporary server (10-20 s each), so there are three of them, sharing one
working folder. Bad input fails before Prefect starts, so every validation rule gets its own case:
exit 2, one line on stderr naming what is at fault, and not a byte changed on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import TUTORIAL_B0, TUTORIAL_B1, seed_workspace

LINREG = Path(sys.prefix) / "bin" / "linreg"
CONTRACT_FILES = {"coefficients.json", "comparison.json", "loss_history.parquet", "fit.png", "loss.png",
                  "manifest.json"}
TUTORIAL = ["run", "--lr", "0.001", "--epochs", "10000", "--tol", "0", "--no-standardize", "--dtype", "float32"]
LOG_LINE = re.compile(r"\|\s*(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s*\|")


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """The environment of every `linreg` process: Prefect and matplotlib state in temp folders."""
    env = dict(os.environ)
    for name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILES_PATH", "LINREG_DEBUG"):
        env.pop(name, None)
    env.update(
        PREFECT_HOME=str(tmp_path_factory.mktemp("cli-prefect-home")),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        MPLCONFIGDIR=str(tmp_path_factory.mktemp("cli-mplconfig")),
        MPLBACKEND="Agg",
    )
    # No startup timeout of our own: the CLI's default must carry a slow first start.
    env.pop("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", None)
    return env


def linreg(*args: str, cwd: Path, env: dict[str, str], module: bool = False) -> subprocess.CompletedProcess:
    """Run `linreg ARGS` (or `python -m flows ARGS`) in cwd and capture stdout and stderr apart."""
    command = [sys.executable, "-m", "flows"] if module else [str(LINREG)]
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)


def version_from_stdout(result: subprocess.CompletedProcess) -> Path:
    """The contract's success: exit 0 and the last stdout line is the absolute path of a new version."""
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = result.stdout.splitlines()
    assert lines, f"nothing on stdout; stderr:\n{result.stderr}"
    path = Path(lines[-1])
    assert path.is_absolute(), f"last stdout line {lines[-1]!r} is not an absolute path"
    assert path.is_dir(), f"{path} is not a folder"
    assert CONTRACT_FILES <= {p.name for p in path.iterdir()}
    return path


def assert_logs_on_stderr(result: subprocess.CompletedProcess) -> None:
    """Logs and progress go to stderr, never between the results on stdout."""
    assert result.stderr.strip(), "the run logged nothing on stderr"
    stray = [line for line in result.stdout.splitlines() if LOG_LINE.search(line)]
    assert not stray, f"log lines on stdout: {stray[:3]}"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# Three full runs in one working folder: the defaults, the tutorial, `python -m flows`.


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, seed_csv_text) -> Path:
    return seed_workspace(tmp_path_factory.mktemp("cli-workspace"), seed_csv_text)


@pytest.fixture(scope="module")
def default_run(workspace, cli_env) -> subprocess.CompletedProcess:
    return linreg("run", cwd=workspace, env=cli_env)


@pytest.fixture(scope="module")
def tutorial_run(workspace, cli_env, default_run) -> subprocess.CompletedProcess:
    return linreg(*TUTORIAL, cwd=workspace, env=cli_env)


@pytest.fixture(scope="module")
def module_run(workspace, cli_env, tutorial_run) -> subprocess.CompletedProcess:
    return linreg("run", "data/seed.csv", "--artifacts-dir", "artifacts", "--data-dir", "data",
                  cwd=workspace, env=cli_env, module=True)


def test_linreg_run_with_defaults_fits_data_seed_csv(default_run, workspace):
    """`linreg run` reads data/seed.csv, writes under artifacts/ and data/, and prints the version path last."""
    path = version_from_stdout(default_run)
    assert_logs_on_stderr(default_run)
    assert path.parent == (workspace / "artifacts").resolve()
    coef = read_json(path / "coefficients.json")
    assert coef["exact"]["intercept"] == pytest.approx(TUTORIAL_B0, abs=1e-12)
    assert coef["exact"]["coefficients"] == pytest.approx([TUTORIAL_B1], abs=1e-12)
    assert coef["sgd"]["converged"] is True
    sha = read_json(path / "manifest.json")["data"]["sha256"]
    assert (workspace / "data" / "validated" / f"{sha}.parquet").is_file()
    assert sha[:8] in path.name


def test_a_run_ends_with_a_summary_on_stderr_and_the_version_last_on_stdout(default_run, tutorial_run):
    """After the run, stderr says what a person reads first: the model and its rows, the exact
    coefficients, R², the verdict; the tutorial's unconverged run adds a WARNING with the remedy."""
    path = version_from_stdout(default_run)
    tail = default_run.stderr[default_run.stderr.rindex("linreg: y ~ 1 + x"):]
    assert tail.startswith("linreg: y ~ 1 + x on 10 rows\n")
    assert f"exact least squares: intercept {TUTORIAL_B0:.10g}, x {TUTORIAL_B1:.10g}" in tail
    assert "R² 0.98" in tail and "SGD reached the exact fit" in tail and "WARNING" not in tail
    assert f"  version: {path}\n" in tail  # (Prefect may still log the temporary server stopping)
    slow = tutorial_run.stderr[tutorial_run.stderr.rindex("linreg: y ~ 1 + x"):]
    warning = next(line for line in slow.splitlines() if "WARNING" in line)
    assert warning.startswith("linreg: WARNING: SGD did not reach the exact fit (its 10000 epochs ran out)")
    assert "; run with " in warning and "--precondition" in warning


def test_the_tutorial_command_reproduces_the_tutorial(tutorial_run, default_run):
    """The tutorial's settings stop short of the optimum: b1 ~ 9.63, b0 ~ 0.85, not converged."""
    path = version_from_stdout(tutorial_run)
    assert_logs_on_stderr(tutorial_run)
    assert path != version_from_stdout(default_run)
    coef = read_json(path / "coefficients.json")
    sgd = coef["sgd"]
    assert 9.62 <= sgd["coefficients"][0] <= 9.64, sgd
    assert 0.81 <= sgd["intercept"] <= 0.90, sgd
    assert sgd["converged"] is False
    assert sgd["epochs"] == 10_000, "tol 0 disables early stopping"
    assert sgd["lr"] == pytest.approx(0.001)
    assert read_json(path / "comparison.json")["converged"] is False
    # The exact fit does not depend on how SGD trains.
    assert coef["exact"]["coefficients"] == pytest.approx([TUTORIAL_B1], abs=1e-12)


def test_python_m_flows_is_the_same_command(module_run, workspace):
    """`python -m flows run ...` behaves as `linreg run ...`."""
    path = version_from_stdout(module_run)
    assert_logs_on_stderr(module_run)
    assert path.parent == (workspace / "artifacts").resolve()
    assert read_json(path / "coefficients.json")["sgd"]["converged"] is True


def test_linreg_versions_lists_the_runs_newest_first(workspace, cli_env, default_run, tutorial_run, module_run):
    """`linreg versions` shows every version, the newest first."""
    made = [version_from_stdout(r).name for r in (default_run, tutorial_run, module_run)]
    assert made == sorted(made), "version names sort in creation order"
    result = linreg("versions", "--artifacts-dir", "artifacts", cwd=workspace, env=cli_env)
    assert result.returncode == 0, result.stderr
    positions = [result.stdout.find(name) for name in made]
    assert all(p >= 0 for p in positions), f"missing versions in:\n{result.stdout}"
    assert positions[2] < positions[1] < positions[0], f"not newest first:\n{result.stdout}"


def test_linreg_versions_orders_by_version_name(tmp_path, cli_env):
    """Without a single run: three version folders are listed newest first."""
    names = ["20240101T000000000000Z-aaaaaaaa", "20250101T000000000000Z-bbbbbbbb",
             "20260101T000000000000Z-cccccccc"]
    for name in names:
        folder = tmp_path / "artifacts" / name
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({"version": name, "data": {"rows": 10}}))
        (folder / "coefficients.json").write_text(json.dumps(
            {"target": "y", "terms": ["x"], "intercept": True,
             "exact": {"intercept": 1.0, "coefficients": [2.0]},
             "sgd": {"intercept": 1.0, "coefficients": [2.0], "epochs": 5, "converged": True}}))
        (folder / "comparison.json").write_text(json.dumps({"max_rel_diff": 0.0, "converged": True}))
    (tmp_path / "artifacts" / "latest").symlink_to(names[-1])
    result = linreg("versions", "--artifacts-dir", str(tmp_path / "artifacts"), cwd=tmp_path, env=cli_env)
    assert result.returncode == 0, result.stderr
    positions = [result.stdout.find(name) for name in names]
    assert all(p >= 0 for p in positions), result.stdout
    assert positions[2] < positions[1] < positions[0], result.stdout


@pytest.mark.parametrize("command", ["run", "versions", "serve"])
def test_help_exits_zero(command, tmp_path, cli_env):
    """`linreg COMMAND --help` prints usage and exits 0."""
    result = linreg(command, "--help", cwd=tmp_path, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_run_help_lists_every_contract_option(tmp_path, cli_env):
    """Every option the contract names is documented by `linreg run --help`."""
    text = linreg("run", "--help", cwd=tmp_path, env=cli_env).stdout
    for option in ("--target", "--features", "--degree", "--no-intercept", "--optimizer", "--lr", "--epochs",
                   "--batch-size", "--tol", "--standardize", "--no-standardize", "--seed", "--device",
                   "--dtype", "--artifacts-dir", "--data-dir", "--decimal", "--rtol", "--precondition"):
        assert option in text, option


def test_version_prints_the_package_version(tmp_path, cli_env):
    """`linreg --version`: exit 0 and the installed linreg-flow's version."""
    from importlib.metadata import version

    done = linreg("--version", cwd=tmp_path, env=cli_env)
    assert done.returncode == 0 and done.stdout.strip() == f"linreg-flow {version('linreg-flow')}"


def test_serve_help_lists_the_schedules(tmp_path, cli_env):
    """`linreg serve --help` offers --cron and --interval."""
    text = linreg("serve", "--help", cwd=tmp_path, env=cli_env).stdout
    assert "--cron" in text and "--interval" in text


# --------------------------------------------------------------------------------------------
# Bad input: exit 2, one line naming the fault, nothing new or changed on disk.

SEED_ROWS = [("1.05", "10.3"), ("1.54", "15.4"), ("2.01", "21.2"), ("2.55", "25.4"), ("3.13", "30.1"),
             ("3.45", "35.6"), ("4.02", "40.5"), ("4.65", "43.4"), ("5.34", "50.1"), ("5.50", "56.6")]


def csv_text(rows, header="x,y") -> str:
    return "\n".join([header, *(",".join(r) for r in rows)]) + "\n"


def with_cell(row: int, column: int, value: str) -> str:
    """The seed data with data row `row` (1-based) column `column` (0 = x, 1 = y) replaced."""
    rows = [list(r) for r in SEED_ROWS]
    rows[row - 1][column] = value
    return csv_text(rows)


@dataclass(frozen=True)
class Bad:
    """One rejected `linreg run`: files to create under inputs/, the arguments, regexes for the message."""

    args: list[str]
    patterns: list[str]
    files: dict[str, str] = field(default_factory=dict)
    xfail: str | None = None


BAD_DATA = {
    "missing-file": Bad(["inputs/nope.csv"], [r"nope\.csv"]),
    "wrong-extension": Bad(["inputs/points.txt"], [r"points\.txt"], {"points.txt": csv_text(SEED_ROWS)}),
    "empty-file": Bad(["inputs/empty.csv"], [r"empty\.csv"], {"empty.csv": ""}),
    "corrupt-parquet": Bad(["inputs/broken.parquet"], [r"broken\.parquet"], {"broken.parquet": "not parquet"}),
    "folder-without-parquet": Bad(["inputs/nothing"], [r"nothing"], {"nothing/readme.txt": "hello"}),
    "missing-target": Bad(["data/seed.csv", "--target", "z"], [r"seed\.csv", r"\bz\b"]),
    "missing-feature": Bad(["data/seed.csv", "--features", "x,w"], [r"\bw\b"]),
    "non-numeric": Bad(["inputs/text.csv"], [r"text\.csv", r"\bx\b", r"row 3\b|line 4\b"],
                       {"text.csv": with_cell(3, 0, "abc")}),
    "nan": Bad(["inputs/nan.csv"], [r"nan\.csv", r"\by\b", r"row 5\b|line 6\b"], {"nan.csv": with_cell(5, 1, "NaN")}),
    "empty-cell": Bad(["inputs/hole.csv"], [r"hole\.csv", r"\bx\b", r"row 2\b|line 3\b"],
                      {"hole.csv": with_cell(2, 0, "")}),
    "inf": Bad(["inputs/inf.csv"], [r"inf\.csv", r"\bx\b", r"row 7\b|line 8\b"], {"inf.csv": with_cell(7, 0, "inf")}),
    "too-few-rows": Bad(["inputs/two.csv"], [r"two\.csv", r"rows?"], {"two.csv": csv_text(SEED_ROWS[:2])}),
    "rank-deficient": Bad(["inputs/collinear.csv"], [r"collinear\.csv", r"\bz\b|\bx\b"],
                          {"collinear.csv": csv_text([(x, str(2 * float(x)), y) for x, y in SEED_ROWS], "x,z,y")}),
    "constant-feature": Bad(["inputs/flat.csv"], [r"flat\.csv", r"\bx\b"],
                            {"flat.csv": csv_text([("1.0", y) for _, y in SEED_ROWS])}),
    "constant-target": Bad(["inputs/price.csv", "--target", "price"], [r"price\.csv", r"\bprice\b", r"constant",
                                                                        r"R²"],
                           {"price.csv": csv_text([(x, "250.5") for x, _ in SEED_ROWS], "area,price")}),
    "zero-target-without-intercept": Bad(["inputs/zero.csv", "--no-intercept"], [r"zero\.csv", r"\by\b", r"R²"],
                                         {"zero.csv": csv_text([(x, "0") for x, _ in SEED_ROWS])}),
}

BAD_OPTIONS = {
    "optimizer-foo": Bad(["--optimizer", "foo"], [r"--optimizer", r"foo"]),
    "lr-negative": Bad(["--lr", "-1"], [r"--lr", r"-1"]),
    "lr-zero": Bad(["--lr", "0"], [r"--lr"]),
    "lr-text": Bad(["--lr", "abc"], [r"--lr", r"abc"]),
    "lr-nan": Bad(["--lr", "nan"], [r"--lr"]),
    "epochs-zero": Bad(["--epochs", "0"], [r"--epochs"]),
    "dtype-float16": Bad(["--dtype", "float16"], [r"--dtype", r"float16"]),
    "device-tpu": Bad(["--device", "tpu"], [r"--device", r"tpu"]),
    "device-cuda": Bad(["--device", "cuda"], [r"--device", r"cuda"]),
    "batch-size-zero": Bad(["--batch-size", "0"], [r"--batch-size"]),
    "degree-zero": Bad(["--degree", "0"], [r"--degree"]),
    "tol-negative": Bad(["--tol", "-1"], [r"--tol"]),
    "seed-negative": Bad(["--seed", "-1"], [r"--seed"]),
    "artifacts-dir-is-a-file": Bad(["--artifacts-dir", "inputs/blocker"], [r"--artifacts-dir", r"blocker"]),
    "data-dir-is-a-file": Bad(["--data-dir", "inputs/blocker"], [r"--data-dir", r"blocker"]),
    "epochs-not-a-number": Bad(["--epochs", "abc"], [r"--epochs"]),
    "unknown-option": Bad(["--no-such-option"], [r"--no-such-option"]),
}
BAD = {**BAD_DATA, **{name: Bad(["data/seed.csv", *bad.args], bad.patterns, bad.files, bad.xfail)
                      for name, bad in BAD_OPTIONS.items()}}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: kind, size, mtime and content (folders too: their mtime moves when
    anything is created in them, even if it is removed again)."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            st = path.lstat()
            if path.is_symlink():
                entries[str(path.relative_to(root))] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[str(path.relative_to(root))] = ("dir", st.st_mtime_ns, st.st_mode)
            else:
                entries[str(path.relative_to(root))] = (
                    "file", st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    entries["."] = ("dir", root.stat().st_mtime_ns)
    return entries


def populate(root: Path, seed_csv_text: str) -> None:
    """A working folder with an earlier version in artifacts/ and a stored table in data/validated/."""
    version = root / "artifacts" / "20240101T000000000000Z-25914ac0"
    version.mkdir(parents=True)
    for name in CONTRACT_FILES:
        (version / name).write_bytes(f"earlier {name}\n".encode())
    (root / "artifacts" / "latest").symlink_to(version.name)
    (root / "artifacts" / ".lock").touch()
    validated = root / "data" / "validated"
    validated.mkdir(parents=True)
    (validated / ("25914ac0" + "0" * 56 + ".parquet")).write_bytes(b"earlier parquet")
    (root / "data" / "seed.csv").write_text(seed_csv_text)
    (root / "inputs").mkdir()
    (root / "inputs" / "blocker").write_text("a file where a folder should be\n")


@dataclass(frozen=True)
class Rejected:
    result: subprocess.CompletedProcess
    before: dict
    after: dict


@pytest.fixture(scope="module")
def rejected(tmp_path_factory, cli_env, seed_csv_text) -> dict[str, Rejected]:
    """Every bad-input case, each in its own populated folder, run a few at a time (they only import)."""
    roots = {}
    for name, bad in BAD.items():
        roots[name] = root = tmp_path_factory.mktemp(f"bad-{name}")
        populate(root, seed_csv_text)
        for file, text in bad.files.items():
            (root / "inputs" / file).parent.mkdir(parents=True, exist_ok=True)
            (root / "inputs" / file).write_text(text)

    def attempt(name: str) -> Rejected:
        before = snapshot(roots[name])
        result = linreg("run", *BAD[name].args, cwd=roots[name], env=cli_env)
        return Rejected(result, before, snapshot(roots[name]))

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(zip(BAD, pool.map(attempt, BAD)))


def assert_rejected(result: subprocess.CompletedProcess, patterns: list[str]) -> None:
    """Exit 2, nothing on stdout, exactly one non-empty line on stderr matching every pattern."""
    assert result.returncode == 2, f"exit {result.returncode}; stderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    for pattern in patterns:
        assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    assert result.stdout == ""


def _cases(table: dict[str, Bad]) -> list:
    return [pytest.param(name, id=name, marks=[pytest.mark.xfail(strict=True, reason=bad.xfail)] if bad.xfail else [])
            for name, bad in table.items()]


@pytest.mark.parametrize("name", _cases(BAD_DATA))
def test_bad_data_exits_2_with_one_line_and_writes_nothing(rejected, name):
    """Each validation rule: exit 2, one line naming the file (and column/row), artifacts and data untouched."""
    run = rejected[name]
    assert_rejected(run.result, BAD[name].patterns)
    assert run.after == run.before


@pytest.mark.parametrize("name", _cases(BAD_OPTIONS))
def test_bad_option_exits_2_with_one_line_and_writes_nothing(rejected, name):
    """Each bad option value: exit 2, one line naming the option, artifacts and data untouched."""
    if name == "device-cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA, so --device cuda is valid here")
    run = rejected[name]
    assert_rejected(run.result, BAD[name].patterns)
    assert run.after == run.before


def test_bad_input_does_not_create_missing_output_folders(tmp_path, cli_env):
    """A rejected run does not even create the artifacts or data folders it was pointed at."""
    result = linreg("run", "nope.csv", "--artifacts-dir", "out/artifacts", "--data-dir", "out/data",
                    cwd=tmp_path, env=cli_env)
    assert_rejected(result, [r"nope\.csv"])
    assert list(tmp_path.iterdir()) == []


def test_linreg_show_prints_the_latest_version_as_statsmodels_would(default_run, workspace, cli_env):
    """`linreg show` (default latest) prints the model, each coefficient with its standard error,
    t, p-value and interval as in coefficients.json, the model statistics and the verdict; an
    unknown version is exit 2 with one line."""
    version_from_stdout(default_run)
    path = (workspace / "artifacts" / "latest").resolve()  # other tests' runs may have come after
    shown = linreg("show", cwd=workspace, env=cli_env)
    assert shown.returncode == 0, shown.stderr
    exact = read_json(path / "coefficients.json")["exact"]
    text = shown.stdout
    assert path.name in text and "y ~ 1 + x" in text and "exact least squares" in text
    row = next(line for line in text.splitlines() if line.startswith("x "))
    values = [float(v) for v in row.split()[1:]]
    expected = [exact["coefficients"][0], exact["std_errors"]["coefficients"][0], exact["t_values"]["coefficients"][0],
                exact["p_values"]["coefficients"][0], *exact["conf_int"]["coefficients"][0]]
    assert values == pytest.approx(expected, rel=1e-2)
    assert f"AIC {exact['aic']:.6g}" in text and read_json(path / "comparison.json")["summary"] in text
    assert linreg("show", path.name, cwd=workspace, env=cli_env).stdout == text
    missing = linreg("show", "19990101T000000000000Z-deadbeef", cwd=workspace, env=cli_env)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "no such version folder" in missing.stderr


def test_a_unique_prefix_names_a_version_and_an_ambiguous_one_is_exit_2(default_run, tutorial_run, workspace,
                                                                       cli_env):
    """`linreg show PREFIX`: the one version whose name starts with it; two or more: exit 2 naming them."""
    name = version_from_stdout(default_run).name
    unique = next(name[:k] for k in range(8, len(name)) if sum(
        p.name.startswith(name[:k]) for p in (workspace / "artifacts").iterdir()) == 1)
    shown = linreg("show", unique, cwd=workspace, env=cli_env)
    assert shown.returncode == 0 and name in shown.stdout, shown.stderr
    ambiguous = linreg("show", name[:4], cwd=workspace, env=cli_env)
    assert ambiguous.returncode == 2 and "versions start with it" in ambiguous.stderr
    assert ambiguous.stderr.strip().count("\n") == 0


def test_linreg_artifacts_dir_is_the_default_folder_of_every_verb(default_run, workspace, cli_env, tmp_path):
    """LINREG_ARTIFACTS_DIR stands for --artifacts-dir: `versions` and `show` find the runs from
    another folder; a folder without versions is named on stderr instead of an empty table."""
    name = version_from_stdout(default_run).name
    env = cli_env | {"LINREG_ARTIFACTS_DIR": str(workspace / "artifacts")}
    listed = linreg("versions", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and name in listed.stdout
    assert any(line.count(name) == 1 and name in line for line in listed.stdout.splitlines()), "a name wrapped"
    assert linreg("show", name, cwd=tmp_path, env=env).returncode == 0
    empty = linreg("versions", cwd=tmp_path, env=cli_env)
    assert empty.returncode == 0 and empty.stdout == ""
    assert f"no versions in {tmp_path / 'artifacts'}" in empty.stderr and "LINREG_ARTIFACTS_DIR" in empty.stderr
