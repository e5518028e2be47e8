"""A control character in a class name (a newline splits a line of Triton's labels.txt and shifts
every later label) is refused where names enter: train's COCO reader, export of a checkpoint that
records such names, and the metadata reader (tests/contract) (issue #21 item 11)."""
import json

import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
from cornernet_deploy.data.shapes import generate_shapes_dataset

torch = pytest.importorskip("torch")


def one_line(capsys, argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err.strip(), captured.out


@pytest.mark.parametrize("bad", ["ellipse\nrectangle", "tab\there", "bell\x07", "line\u2028sep"])
def test_train_refuses_a_category_name_with_a_control_character(tmp_path, capsys, bad):
    root = tmp_path / "shapes"
    generate_shapes_dataset(root, 2, seed=5, image_size=((60, 90),), num_objects=(1, 2))
    ann = root / "annotations.json"
    data = json.loads(ann.read_text())
    data["categories"][1]["name"] = bad
    ann.write_text(json.dumps(data))
    code, err, _ = one_line(capsys, ["train", "--arch", "cornernet-squeeze", "--width", "0.125", "--levels", "2",
                                     "--stacks", "1", "--input-size", "63x63", "--data", ann,
                                     "--images", root / "images", "--iterations", "1", "--output",
                                     tmp_path / "run", "--no-progress"])
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"category {data['categories'][1]['id']} name" in err and "control character" in err
    assert not (tmp_path / "run").exists()


def test_export_refuses_a_checkpoint_whose_class_names_hold_control_characters(tmp_path, capsys):
    checkpoint = torch.load(DEMO_CHECKPOINT, weights_only=False)
    checkpoint["spec"]["class_names"] = ("rectangle", "ellipse\ntriangle", "triangle")
    crafted = tmp_path / "crafted.pt"
    torch.save(checkpoint, crafted)
    out = tmp_path / "crafted.onnx"
    code, err, printed = one_line(capsys, ["export", "--checkpoint", crafted, "--output", out])
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(crafted) in err and "'ellipse\\ntriangle'" in err and "control character" in err
    assert "tracing" not in printed            # refused before the work
    assert not out.exists()
