"""Issue 21 item 19: `profile` says so when the rows of one table are different networks (the
demo model against a random 80-class model read as "19.23x" faster)."""
import json

import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.profiling.report import validate_report

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from cornernet_deploy.exporter import export_onnx
    from cornernet_deploy.models import build_model

    d = tmp_path_factory.mktemp("nets")
    torch.manual_seed(0)
    for name, classes, width in (("a", 3, 0.125), ("b", 3, 0.125), ("wide", 3, 0.25), ("c80", 80, 0.125)):
        model = build_model("cornernet-squeeze", num_classes=classes, width=width, levels=2).eval()
        export_onnx(model=model, output=d / f"{name}.onnx", input_size=(127, 127), dynamic_size=False,
                    progress=None, verify=False)
    return d


def profile(capsys, tmp_path, *models):
    out = tmp_path / "p.json"
    rc = main(["profile", *map(str, models), "--iters", "1", "--warmup", "0", "--num-images", "1",
               "--threads", "1", "--json", str(out), "--quiet"])
    assert rc == 0
    report = json.loads(out.read_text())
    validate_report(report)
    return capsys.readouterr().out, report


def test_rows_of_different_networks_are_flagged_in_the_table_and_the_json(models, tmp_path, capsys):
    table, report = profile(capsys, tmp_path, models / "a.onnx", models / "c80.onnx", models / "wide.onnx")
    assert len(report["warnings"]) == 1
    warning = report["warnings"][0]
    assert warning.startswith("the rows are 3 different networks")
    assert "row 1: CornerNet-Squeeze" in warning and "80 classes" in warning and "3 classes" in warning
    assert report["results"][1]["network"].endswith("80 classes") and report["results"][0]["network"] != \
        report["results"][2]["network"]                            # widths differ
    assert "warning: the rows are 3 different networks" in " ".join(table.split())


def test_the_same_network_twice_is_not_flagged(models, tmp_path, capsys):
    table, report = profile(capsys, tmp_path, models / "a.onnx", models / "b.onnx")
    assert report["warnings"] == [] and "warning" not in table
    assert report["results"][0]["network"] == report["results"][1]["network"]
