"""Generated training scripts refuse bad command-line values in one line, before torch loads."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_image_folder
from tlwidgets import Session


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env.pop("PYTHONPATH", None)  # the script must not need tlwidgets on its path
    return env


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A generated script, a saved bundle, and paths that are wrong in each way the tests need."""
    base = tmp_path_factory.mktemp("script_args")
    images = make_image_folder(base / "images", classes=2, per_class=4)
    s = Session(device="cpu", image_size=32)
    s.load_model("resnet18", pretrained=False)
    s.load_data(images, val_fraction=0.25, seed=0)
    s.replace_head()
    script = s.to_script(base / "job" / "train.py").script
    bundle = s.save(base / "bundle")
    (base / "a_file.txt").write_text("not a folder")
    (base / "not_a_bundle").mkdir()
    other = base / "other_classes"
    other.mkdir()
    meta = json.loads((bundle / "tlwidgets.json").read_text())
    (other / "tlwidgets.json").write_text(json.dumps({**meta, "classes": ["cat", "dog"]}))
    (other / "model.safetensors").write_bytes((bundle / "model.safetensors").read_bytes())
    return {"base": base, "images": images, "script": script, "bundle": bundle, "file": base / "a_file.txt"}


def _refused(job: dict[str, Path], args: list[str]) -> str:
    """Run the script with ``args``; assert argparse refused them; the last line of stderr."""
    done = subprocess.run([sys.executable, str(job["script"]), *args], cwd=job["base"], env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("usage: train.py"), done.stderr
    assert done.stdout == ""
    return done.stderr.strip().splitlines()[-1]


# (test id, arguments, the argument named in the error, what follows it); {base} is the job's folder;
# a message ending in "..." is the start of the line (argparse words the list of choices by version)
CASES = [
    ("data-missing", ["--data", "{base}/nowhere"], "--data", "no such folder: {base}/nowhere"),
    ("data-is-a-file", ["--data", "{base}/a_file.txt"], "--data", "is a file, not a folder: {base}/a_file.txt"),
    ("epochs-negative", ["--epochs", "-1"], "--epochs", "must be a whole number of at least 1, got -1"),
    ("epochs-zero", ["--epochs", "0"], "--epochs", "must be a whole number of at least 1, got 0"),
    ("epochs-text", ["--epochs", "abc"], "--epochs", "must be a whole number of at least 1, got abc"),
    ("epochs-fraction", ["--epochs", "2.5"], "--epochs", "must be a whole number of at least 1, got 2.5"),
    ("lr-nan", ["--lr", "nan"], "--lr", "must be a positive finite number such as 0.001, got nan"),
    ("lr-inf", ["--lr", "inf"], "--lr", "must be a positive finite number such as 0.001, got inf"),
    ("lr-negative", ["--lr", "-1"], "--lr", "must be a positive finite number such as 0.001, got -1"),
    ("lr-zero", ["--lr", "0"], "--lr", "must be a positive finite number such as 0.001, got 0"),
    ("init-from-missing", ["--init-from", "{base}/nowhere"], "--init-from", "no such folder: {base}/nowhere"),
    ("init-from-a-file", ["--init-from", "{base}/a_file.txt"], "--init-from",
     "is a file, not a folder: {base}/a_file.txt"),
    ("init-from-not-a-bundle", ["--init-from", "{base}/not_a_bundle"], "--init-from",
     "not a tlwidgets bundle (no tlwidgets.json in it): {base}/not_a_bundle"),
    ("init-from-other-classes", ["--init-from", "{base}/other_classes"], "--init-from",
     "bundle for classes ['cat', 'dog'], this script trains ['class_0', 'class_1']: {base}/other_classes"),
    ("batch-size-zero", ["--batch-size", "0"], "--batch-size", "must be a whole number of at least 1, got 0"),
    ("workers-negative", ["--workers", "-1"], "--workers", "must be a whole number of at least 0, got -1"),
    ("max-batches-zero", ["--max-batches", "0"], "--max-batches", "must be a whole number of at least 1, got 0"),
    ("resplit-above-1", ["--resplit", "1.5"], "--resplit",
     "must be a fraction from 0 up to, but not including, 1, got 1.5"),
    ("resplit-negative", ["--resplit", "-0.1"], "--resplit",
     "must be a fraction from 0 up to, but not including, 1, got -0.1"),
    ("resplit-nan", ["--resplit", "nan"], "--resplit",
     "must be a fraction from 0 up to, but not including, 1, got nan"),
    ("precision-unknown", ["--precision", "fp8"], "--precision", "invalid choice: 'fp8' ..."),
    ("out-parent-is-a-file", ["--out", "{base}/a_file.txt/bundle"], "--out",
     "cannot create {base}/a_file.txt/bundle: {base}/a_file.txt is a file, not a folder"),
    ("out-is-a-file", ["--out", "{base}/a_file.txt"], "--out", "is a file, not a folder: {base}/a_file.txt"),
    ("metrics-dir-parent-is-a-file", ["--metrics-dir", "{base}/a_file.txt/m"], "--metrics-dir",
     "cannot create {base}/a_file.txt/m: {base}/a_file.txt is a file, not a folder"),
    ("split-missing", ["--split", "{base}/nowhere.json"], "--split",
     "no such file: {base}/nowhere.json (pass --split FILE, or --resplit 0.2 to split --data anew)"),
]


@pytest.mark.parametrize(("args", "argument", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_value_is_refused_in_one_line(job: dict[str, Path], args: list[str], argument: str, message: str) -> None:
    base = str(job["base"])
    last = _refused(job, [a.format(base=base) for a in args])
    expected = f"train.py: error: argument {argument}: {message.format(base=base)}"
    if expected.endswith(" ..."):
        assert last.startswith(expected[:-4]), last
    else:
        assert last == expected


def test_refusal_happens_before_torch_loads(job: dict[str, Path]) -> None:
    probe = (
        "import runpy, sys\n"
        "sys.argv = [sys.argv[1], '--epochs', '0']\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    print(exc.code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(job["script"])], env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.split() == ["2", "False"], done.stderr


def test_help_still_works(job: dict[str, Path]) -> None:
    done = subprocess.run([sys.executable, str(job["script"]), "--help"], cwd=job["base"], env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("usage: train.py") and "--init-from BUNDLE" in done.stdout


def test_good_values_pass_through(job: dict[str, Path]) -> None:
    spec = importlib.util.spec_from_file_location("generated_train_args", job["script"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the functions; parses nothing when imported
    out = job["base"] / "new" / "nested" / "bundle"
    args = module.parse_args([
        "--data", str(job["images"]), "--epochs", "3", "--lr", "1e-3", "--batch-size", "1", "--workers", "0",
        "--resplit", "0", "--precision", "bf16", "--init-from", str(job["bundle"]), "--out", str(out),
        "--max-batches", "2",
    ])
    assert (args.epochs, args.lr, args.batch_size, args.workers, args.resplit) == (3, 1e-3, 1, 0, 0.0)
    assert (args.precision, args.max_batches) == ("bf16", 2)
    assert Path(args.data) == job["images"] and Path(args.init_from) == job["bundle"] and Path(args.out) == out
    assert not out.parent.exists()  # checking does not create anything
    defaults = module.parse_args([])  # the split file beside the script, the bundle folder beside it
    assert Path(defaults.split) == job["script"].with_suffix(".split.json")
    assert defaults.epochs is None and defaults.lr is None
    assert module.parse_args(["--resplit", "0.2", "--split", str(job["base"] / "nowhere.json")]).resplit == 0.2
