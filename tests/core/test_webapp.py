"""The web app export: a static folder whose page classifies as Session.predict does.

The page itself runs in a real browser in tests/ui/test_webapp_browser.py; here: the files, the
description the page reads, the ONNX model run with onnxruntime on that description's
preprocessing, the page's preprocessing script run in Node against torchvision, class
names that try to inject HTML or JavaScript, and folders and runtimes that are refused.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_image_folder
from tests.helpers import trained_lite0_session
from tlwidgets import Session
from tlwidgets.core import bundle, webapp
from tlwidgets.core.errors import ConfigError, ModelError
from tlwidgets.core.transforms import make_transforms

ort = pytest.importorskip("onnxruntime")

PAGE_FILES = {"index.html", "app.js", "preprocess.js", "style.css", "model.onnx", "classifier.json"}
RUNTIME = {f"ort/{name}" for name in webapp.RUNTIME_FILES}
HOSTILE = [
    '</script><script>alert("pwned")</script>',
    "<img src=x onerror=alert(1)>",
    "\"'; alert(1); // &amp; \u2028",
]


def _listing(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def _config(folder: Path) -> dict:
    return json.loads((folder / "classifier.json").read_text(encoding="utf-8"))


def _fake_runtime(folder: Path) -> Path:
    """A folder shaped like onnxruntime-web's package: package.json and dist/ with the three files."""
    dist = folder / "dist"
    dist.mkdir(parents=True)
    for name in webapp.RUNTIME_FILES:
        (dist / name).write_bytes(f"/* {name} */".encode())
    (folder / "package.json").write_text(json.dumps({"name": "onnxruntime-web", "version": "9.9.9"}))
    return folder


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour, np.float32) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("webapp") / "images", classes=3, per_class=8, size=32)


@pytest.fixture(scope="module")
def session(images_dir: Path) -> Session:
    s = trained_lite0_session(images_dir)
    s.configure(precision="fp32")  # predict as the page computes: in fp32, on every kind of CPU
    return s


@pytest.fixture(scope="module")
def exported(session: Session, tmp_path_factory: pytest.TempPathFactory) -> webapp.WebAppExport:
    return session.export_webapp(tmp_path_factory.mktemp("site") / "webapp")


# ---------------------------------------------------------------- the folder
def test_the_folder_holds_the_page_the_model_and_its_description(exported: webapp.WebAppExport) -> None:
    folder = exported.folder
    assert _listing(folder) == PAGE_FILES  # no runtime copy: the page loads the pinned CDN release
    assert set(exported.files) == PAGE_FILES and exported.files[-1] == "classifier.json"
    for name in webapp.ASSET_FILES:  # the page's files are the package's, byte for byte
        assert (folder / name).read_bytes() == (webapp.ASSETS / name).read_bytes()
    assert sum((folder / name).stat().st_size for name in webapp.ASSET_FILES) < 40_000
    config = _config(folder)
    assert config["runtime"] == {
        "package": "onnxruntime-web", "version": webapp.ORT_WEB_VERSION,
        "script": f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{webapp.ORT_WEB_VERSION}/dist/ort.wasm.min.js",
    }
    assert exported.runtime == config["runtime"]["script"] and not exported.local_runtime
    assert config["model"]["file"] == "model.onnx" and exported.onnx.path == folder / "model.onnx"
    assert exported.onnx.max_abs_diff is not None and exported.onnx.max_abs_diff <= 1e-4
    # Every link of the page is relative, so it works under any sub-path of a static host.
    html = (folder / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert sorted(links) == ["app.js", "preprocess.js", "style.css"]
    assert 'fetch(CONFIG_URL' in (folder / "app.js").read_text(encoding="utf-8")
    assert "python -m http.server --directory" in exported.summary() and str(folder) in exported.summary()


def test_the_description_holds_the_sessions_classes_and_preprocessing(
    session: Session, exported: webapp.WebAppExport
) -> None:
    config = _config(exported.folder)
    assert config["format"] == "tlwidgets-webapp" and config["format_version"] == 1
    assert config["classes"] == list(session.classes) == ["class_0", "class_1", "class_2"]
    assert config["top_k"] == 3
    prep = config["preprocessing"]
    section = bundle.transforms_section(session)  # what a saved bundle records
    for key in ("input_size", "resize_size", "mean", "std", "interpolation"):
        assert prep[key] == section[key], key
    assert prep["input_size"] == session.input_size == 64 and prep["resize_size"] == 73
    assert prep["mean"] == list(session.spec.mean) and prep["std"] == list(session.spec.std)
    assert prep["interpolation"] == "bicubic" == session.spec.interpolation
    assert prep["resize"] == "shorter side" and prep["crop"] == "center" and prep["max_aspect"] == 8
    assert prep["max_pixels"] == Image.MAX_IMAGE_PIXELS
    assert config["model"]["input_shape"] == [1, 3, 64, 64] and config["model"]["name"] == "efficientnet_lite0"


def _as_described(path: Path, prep: dict) -> np.ndarray:
    """The model input for ``path`` built from the description alone (Pillow + numpy, no torchvision)."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    short, long = min(w, h), max(w, h)
    new_long = int(prep["resize_size"] * long / short)
    size = (prep["resize_size"], new_long) if w <= h else (new_long, prep["resize_size"])
    filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    im = im.resize(size, filters[prep["interpolation"]]) if size != im.size else im
    crop = prep["input_size"]
    top, left = round((im.size[1] - crop) / 2.0), round((im.size[0] - crop) / 2.0)  # Python's round, as torchvision
    arr = np.asarray(im.crop((left, top, left + crop, top + crop)), np.float32) / np.float32(prep["scale"])
    arr = (arr - np.array(prep["mean"], np.float32)) / np.array(prep["std"], np.float32)
    return arr.transpose(2, 0, 1)[None].astype(np.float32)


def test_the_exported_model_predicts_what_session_predict_does(
    session: Session, exported: webapp.WebAppExport, images_dir: Path, tmp_path: Path
) -> None:
    config = _config(exported.folder)
    files = [str(s.path) for s in session.data.val]
    files += [str(_png(tmp_path / f"new_{i}.png", c, (150, 101), i))  # not square: resize and crop
              for i, c in enumerate([(220, 40, 40), (40, 200, 40), (40, 60, 220)])]
    want = session.predict(files, k=3)
    runner = ort.InferenceSession(str(exported.folder / config["model"]["file"]), providers=["CPUExecutionProvider"])
    assert runner.get_inputs()[0].name == config["model"]["input"]
    for path in files:
        x = _as_described(Path(path), config["preprocessing"])
        logits = runner.run([config["model"]["output"]], {config["model"]["input"]: x})[0][0]
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        rows = want[want["image"] == path].sort_values("rank")
        assert config["classes"][int(probs.argmax())] == rows["class"].iloc[0], path
        assert np.allclose(np.sort(probs)[::-1][:3], rows["probability"].to_numpy(), atol=1e-4), path
    top = want[want["rank"] == 1].set_index("image")["class"]  # right, so the comparison means something
    assert [top[str(s.path)] for s in session.data.val] == [session.classes[s.label] for s in session.data.val]


# ---------------------------------------------------------------- the page's preprocessing in Node
_NODE_RUNNER = """
const P = require(process.argv[1]);
let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const out = JSON.parse(input).map((c) => {
    const t = P.preprocess(Buffer.from(c.rgba, "base64"), c.width, c.height, c.prep);
    return Buffer.from(t.buffer).toString("base64");
  });
  process.stdout.write(JSON.stringify(out));
});
"""


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Node.js is needed to run the web page's preprocessing (CI=true)", pytrace=False)
        pytest.skip("Node.js not found: the web page's preprocessing script is not run")
    return node


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_the_pages_preprocessing_builds_the_same_input_as_python(interpolation: str) -> None:
    """preprocess.js against the evaluation transform Session.predict uses, bit for bit.

    Downscaling (a photo), upscaling (a small image), portrait and landscape crops with odd
    margins, a strip wider than the long-side cap (zero padding), and a single pixel.
    """
    node = _node()
    rng = np.random.default_rng(1)
    cases, wants = [], []
    for width, height, size in [(640, 480, 224), (2000, 1500, 96), (32, 32, 64), (150, 101, 64), (97, 61, 32),
                                (700, 3, 96), (2, 600, 64), (1, 1, 32)]:
        spec = SimpleNamespace(interpolation=interpolation, input_size=size, resize_size=0,
                               mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        eval_tf = make_transforms(spec, None, size)[1]
        smooth = np.kron(rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)), np.ones((8, 8, 1)))
        arr = np.clip(smooth[:height, :width] + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
        rgba = np.concatenate([arr, np.full((height, width, 1), 255, np.uint8)], axis=2)
        prep = {"resize_size": round(size * 256 / 224), "max_aspect": 8, "interpolation": interpolation,
                "input_size": size, "mean": list(spec.mean), "std": list(spec.std)}
        rgba_text = base64.b64encode(rgba.tobytes()).decode()
        cases.append({"rgba": rgba_text, "width": width, "height": height, "prep": prep})
        wants.append(eval_tf(Image.fromarray(arr)).numpy())
    done = subprocess.run([node, "-e", _NODE_RUNNER, str(webapp.ASSETS / "preprocess.js")], input=json.dumps(cases),
                          capture_output=True, text=True, timeout=120, check=True)
    for case, want, got in zip(cases, wants, json.loads(done.stdout)):
        tensor = np.frombuffer(base64.b64decode(got), np.float32).reshape(want.shape)
        assert np.array_equal(tensor, want), (case["width"], case["height"], float(np.abs(tensor - want).max()))


# ---------------------------------------------------------------- hostile class names
@pytest.fixture(scope="module")
def hostile_session(session: Session, tmp_path_factory: pytest.TempPathFactory) -> Session:
    """The trained session saved, its class names replaced in the bundle's JSON, loaded again."""
    path = session.save(tmp_path_factory.mktemp("hostile") / "bundle")
    meta_file = path / "tlwidgets.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta["classes"] = HOSTILE
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    loaded = Session.load(path, device="cpu", data=False)
    assert list(loaded.classes) == HOSTILE
    return loaded


def test_hostile_class_names_are_only_json_escaped_text(hostile_session: Session, tmp_path: Path) -> None:
    result = hostile_session.export_webapp(tmp_path / "webapp")
    assert _config(result.folder)["classes"] == HOSTILE  # they come back exactly
    raw = (result.folder / "classifier.json").read_text(encoding="utf-8")
    assert not set("<>&") & set(raw) and "\u2028" not in raw
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert" in raw
    for name in webapp.ASSET_FILES:  # the page is the package's, with no name written into it
        assert (result.folder / name).read_bytes() == (webapp.ASSETS / name).read_bytes()
    for name in _listing(result.folder) - {"model.onnx"}:
        text = (result.folder / name).read_text(encoding="utf-8")
        assert not any(h in text for h in HOSTILE), name
    script = (result.folder / "app.js").read_text(encoding="utf-8")
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", script)
    assert "textContent = name" in script


# ---------------------------------------------------------------- refused folders and runtimes
def assert_refused(session: Session, folder: object, match: str, **kw: object) -> None:
    with pytest.raises(ConfigError, match=match):
        session.export_webapp(folder, **kw)


def test_a_file_or_a_path_under_a_file_is_refused(session: Session, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert_refused(session, tmp_path / "notes.txt", r"notes.txt: it is a file, not a folder")
    assert_refused(session, tmp_path / "notes.txt" / "webapp", r"notes.txt is a file, not a folder")
    assert_refused(session, "", r"give a folder name such as 'webapp'")
    assert_refused(session, "   ", r"give a folder name such as 'webapp'")
    assert_refused(session, 42, r"folder=42 is not a path")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    assert_refused(session, tmp_path / "dangling", r"a link to nothing")
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "gone").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "notes.txt"]


def test_a_folder_with_the_users_own_page_is_refused_and_left_alone(session: Session, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>my homepage</h1>")
    assert_refused(session, site, r"already holds index.html, which no tlwidgets web app wrote")
    assert _listing(site) == {"index.html"} and (site / "index.html").read_text() == "<h1>my homepage</h1>"


@pytest.mark.parametrize("name", ["index.html", "model.onnx", "classifier.json", "ort/ort.wasm.min.js"])
def test_a_link_in_place_of_a_page_file_is_refused_and_its_target_untouched(
    session: Session, exported: webapp.WebAppExport, tmp_path: Path, name: str
) -> None:
    site = tmp_path / "site"
    shutil.copytree(exported.folder, site)
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    link = site / name
    link.parent.mkdir(exist_ok=True)
    link.unlink(missing_ok=True)
    os.symlink(outside, link)
    assert_refused(session, site, r"is a symbolic link, where the web app writes its own file")
    assert outside.read_text() == "not yours" and link.is_symlink()


def test_a_folder_in_place_of_a_page_file_is_refused(session: Session, tmp_path: Path) -> None:
    (tmp_path / "site" / "app.js").mkdir(parents=True)
    assert_refused(session, tmp_path / "site", r"app.js is a folder")
    (tmp_path / "other" / "ort").mkdir(parents=True)
    (tmp_path / "other" / "ort" / "ort.wasm.min.js").mkdir()
    assert_refused(session, tmp_path / "other", r"ort.wasm.min.js is a folder")


@pytest.mark.parametrize(
    ("runtime", "match"),
    [
        ("javascript:alert(1)", r"does not exist"),
        ("https://cdn.example.org/ort/\" onload=\"alert(1)", r"not a usable http\(s\) URL"),
        ("https:///no-host/", r"not a usable http\(s\) URL"),
        ("", r"runtime='': pass None"),
        (42, r"runtime=42: pass None"),
        ("no/such/folder", r"does not exist"),
    ],
    ids=["javascript-url", "quote-in-url", "no-host", "empty", "number", "missing-folder"],
)
def test_a_bad_runtime_is_refused_before_anything_is_written(
    session: Session, tmp_path: Path, runtime: object, match: str
) -> None:
    assert_refused(session, tmp_path / "webapp", match, runtime=runtime)
    assert not (tmp_path / "webapp").exists()


def test_a_folder_without_the_runtime_files_is_refused(session: Session, tmp_path: Path) -> None:
    (tmp_path / "ort-web" / "dist").mkdir(parents=True)
    (tmp_path / "ort-web" / "dist" / "ort.min.js").write_text("//")
    assert_refused(session, tmp_path / "webapp", r"holds no ort.wasm.min.js", runtime=tmp_path / "ort-web")
    assert not (tmp_path / "webapp").exists()


def test_bad_titles_are_refused(session: Session, tmp_path: Path) -> None:
    for title in ["", "  ", "x" * 201, 7]:
        assert_refused(session, tmp_path / "webapp", r"title=.* must be a non-empty text", title=title)
    assert not (tmp_path / "webapp").exists()


# ---------------------------------------------------------------- runtimes and writing over an export
def test_a_local_runtime_is_copied_and_a_url_is_loaded_from_there(session: Session, tmp_path: Path) -> None:
    package = _fake_runtime(tmp_path / "onnxruntime-web")
    site = tmp_path / "site"
    site.mkdir()
    (site / "notes.md").write_text("kept")
    result = session.export_webapp(site, runtime=package, title="Leaves <& friends>")
    assert _listing(site) == PAGE_FILES | RUNTIME | {"notes.md"} and (site / "notes.md").read_text() == "kept"
    for name in webapp.RUNTIME_FILES:
        assert (site / "ort" / name).read_bytes() == (package / "dist" / name).read_bytes()
    config = _config(site)
    assert config["runtime"]["script"] == "ort/ort.wasm.min.js" and config["runtime"]["version"] == "9.9.9"
    assert config["title"] == "Leaves <& friends>" and result.local_runtime and "ort/" in result.summary()
    # Exported again with a URL: the earlier export's files are replaced, its runtime copy removed.
    again = session.export_webapp(site, runtime="https://example.org/ort/1.30.0/dist")
    assert again.runtime == "https://example.org/ort/1.30.0/dist/ort.wasm.min.js"
    assert _config(site)["runtime"]["script"] == again.runtime
    assert _listing(site) == PAGE_FILES | {"notes.md"} and not (site / "ort").exists()
    script = session.export_webapp(site, runtime="https://example.org/ort/ort.wasm.min.js").runtime
    assert script == "https://example.org/ort/ort.wasm.min.js"
    assert not [p for p in site.iterdir() if p.name.startswith(".tlw-")]  # no staging folder is left


def test_a_failed_export_leaves_the_earlier_web_app_whole(session: Session, tmp_path: Path) -> None:
    site = tmp_path / "site"
    session.export_webapp(site)
    before = {name: (site / name).read_bytes() for name in PAGE_FILES}
    with pytest.raises(ModelError, match="differs from PyTorch"):
        session.export_webapp(site, atol=-1.0)  # no difference passes: the check refuses the model
    assert {name: (site / name).read_bytes() for name in PAGE_FILES} == before
    assert _listing(site) == PAGE_FILES


def test_nothing_to_export_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="load a model first"):
        Session(device="cpu").export_webapp(tmp_path / "webapp")
    assert not (tmp_path / "webapp").exists()
