"""timm's results table: fetched at run time from a local server, validated, joined, merged into the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hub_server import hub_server
from tlwidgets.core import timm_accuracy
from tlwidgets.core.catalog import get_spec, list_models
from tlwidgets.core.errors import DataError

pytest.importorskip("timm")
PATH = "/results/results-imagenet.csv"


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TLWIDGETS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _table() -> str:
    r50 = get_spec("timm:resnet50.a1_in1k").input_size
    conv = get_spec("timm:convnext_tiny.fb_in1k").input_size
    return (
        "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation\n"
        f"resnet50.a1_in1k,{r50},81.2,18.8,95.1,4.9,25.56,0.95,bicubic\n"
        f"resnet50.a1_in1k,{r50 + 64},82.0,18.0,95.9,4.1,25.56,1.0,bicubic\n"  # another size: not this row
        f"convnext_tiny.fb_in1k,{conv},82.1,17.9,95.9,4.1,28.59,0.875,bicubic\n"
        "../../etc/passwd,224,99,1,99,1,1,1,bicubic\n"  # a hostile name: skipped
        f"resnet18.a1_in1k,224,170,0,95,0,11,1,bicubic\n"  # out of range: skipped
        "not_a_model,abc,70,30,90,10,1,1,bicubic\n"
    )


def test_update_accuracy_fetches_joins_and_the_catalog_shows_it(own_cache: Path) -> None:
    assert timm_accuracy.fetched() == {}
    with hub_server() as server:
        server.raw[PATH] = _table().encode()
        got = timm_accuracy.update_accuracy(server.url + PATH)
    assert got["matched"] == 2 and got["models"] >= 1000 and got["url"].endswith(PATH)
    assert timm_accuracy.fetched()["fetched"] == got["fetched"]
    assert (own_cache / "timm_accuracy.json").is_file()
    df = list_models().set_index("name")
    assert df.loc["timm:resnet50.a1_in1k", ["top1", "top5"]].tolist() == [81.2, 95.1]
    assert df.loc["timm:convnext_tiny.fb_in1k", "top1"] == 82.1
    assert df.loc["resnet50", "top1"] == pytest.approx(80.858)  # torchvision's own record
    assert df.loc["timm:resnet50.a1_in1k", "top1"] == get_spec("timm:resnet50.a1_in1k").top1


def test_names_without_their_tag_join_when_the_size_says_which_weights(own_cache: Path) -> None:
    rows = [{"arch": "resnet50", "tag": "a1_in1k", "input_size": [224, 224]},
            {"arch": "resnet50", "tag": "a2_in1k", "input_size": [224, 224]},
            {"arch": "vgg11", "tag": "tv_in1k", "input_size": [224, 224]}]
    table = {("resnet50", 224): (80.0, 95.0), ("vgg11", 224): (69.0, 88.6)}
    assert timm_accuracy.join(table, rows) == {"vgg11.tv_in1k": [69.0, 88.6]}  # resnet50 is ambiguous


def test_offline_names_the_url_and_how_to_pass_a_local_copy(own_cache: Path, tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/results-imagenet.csv"
    with pytest.raises(DataError) as err:
        timm_accuracy.update_accuracy(url, timeout=5)
    assert url in str(err.value) and "update_accuracy(path=" in str(err.value)
    assert str(own_cache / "timm_accuracy.json") in str(err.value)
    local = tmp_path / "results-imagenet.csv"
    local.write_text(_table())
    assert timm_accuracy.update_accuracy(path=local)["matched"] == 2


@pytest.mark.parametrize(("body", "match"), [
    (b"name,size\nresnet50,224\n", "lacks the column"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"model,img_size,top1,top5\nx,abc,1,2\n", "no row with a valid"),
    (b"model,img_size,top1,top5\nnot_in_timm,224,70,90\n", "names none of the"),
])
def test_bad_tables_are_refused_and_the_previous_one_stays(body: bytes, match: str, own_cache: Path) -> None:
    with hub_server() as server:
        server.raw[PATH] = _table().encode()
        timm_accuracy.update_accuracy(server.url + PATH)
        before = (own_cache / "timm_accuracy.json").read_bytes()
        server.raw[PATH] = body
        with pytest.raises(DataError, match=match):
            timm_accuracy.update_accuracy(server.url + PATH)
    assert (own_cache / "timm_accuracy.json").read_bytes() == before


def test_an_oversized_answer_is_refused(own_cache: Path) -> None:
    with hub_server() as server:
        server.raw[PATH] = _table().encode() + b"x" * 5000
        with pytest.raises(DataError, match="more than the 1000"):
            timm_accuracy.update_accuracy(server.url + PATH, max_bytes=1000)
    with pytest.raises(DataError, match="not an http"):
        timm_accuracy.update_accuracy("file:///etc/passwd")
    assert not (own_cache / "timm_accuracy.json").exists()
