"""Training end to end on tiny models: losses go down, checkpoints load, resume is exact."""
import json

import numpy as np
import pytest
import torch

from cornernet_deploy.cli import main
from cornernet_deploy.data import generate_shapes_dataset, render_scene
from cornernet_deploy.errors import UserError
from cornernet_deploy.models import build_model
from cornernet_deploy.train.augment import AugmentConfig, augment_cornernet, augment_saccade
from cornernet_deploy.train.losses import CornerNetLoss, collate_targets
from cornernet_deploy.train.targets import cornernet_targets, saccade_targets

torch.set_num_threads(1)


def test_heat_and_attention_biases_start_at_minus_2_19():
    for arch in ("cornernet-squeeze", "cornernet-saccade"):
        m = build_model(arch, num_classes=3, width=0.125, levels=2 if arch == "cornernet-squeeze" else 3)
        heads = list(m.tl_heats) + list(m.br_heats)
        if m.spec.attention:
            heads += [h for per_stack in m.att_modules for h in per_stack]
        for head in heads:
            last = [mod for mod in head.modules() if isinstance(mod, torch.nn.Conv2d)][-1]
            assert torch.all(last.bias == -2.19)


def _fit(model, image, targets, steps, lr=1e-3):
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))[None])
    crit = CornerNetLoss(attention=model.spec.attention)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    history = []
    for _ in range(steps):
        loss, terms = crit(model(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: float(v) for k, v in terms.items()})
    return history


def test_a_few_steps_on_one_image_reduce_every_loss_term():
    torch.manual_seed(0)
    model = build_model("cornernet-squeeze", num_classes=3, width=0.125, levels=2)
    image, boxes, labels = render_scene(1, 127, num_objects=(3, 3))
    image, boxes, labels = augment_cornernet(image, boxes, labels, np.random.default_rng(0),
                                             AugmentConfig((127, 127)), train=False)
    targets = collate_targets([cornernet_targets(boxes, labels, 3, (127, 127),
                                                 model.spec.output_size((127, 127)))])
    assert int(targets["mask"].sum()) == 3  # >= 2 objects: push has a gradient
    history = _fit(model, image, targets, steps=40)
    first, last = history[0], history[-1]
    for term in ("focal", "pull", "push", "off"):
        assert last[term] < 0.5 * first[term], (term, first[term], last[term])


def test_saccade_steps_reduce_heat_and_attention_terms():
    torch.manual_seed(0)
    model = build_model("cornernet-saccade", num_classes=3, width=0.125, stacks=2)
    image, boxes, labels = render_scene(2, 160, num_objects=(2, 2), min_size=20)
    image, boxes, labels, kept = augment_saccade(image, boxes, labels, np.random.default_rng(1),
                                                 AugmentConfig((127, 127), color=False))
    out_hw = model.spec.output_size((127, 127))
    ratios = (16, 8, 4)  # stride 4, three levels, innermost first
    t = saccade_targets(boxes, labels, kept, 3, (127, 127), out_hw, att_ratios=ratios)
    assert [a.shape[1:] for a in t["atts"]] == [(8, 8), (16, 16), (32, 32)]
    history = _fit(model, image, collate_targets([t]), steps=12)
    for term in ("focal", "att"):
        assert history[-1][term] < 0.7 * history[0][term], term


# --------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    ann = generate_shapes_dataset(root, 4, seed=0, image_size=((96, 128),), num_objects=(1, 3))
    return ann, root / "images"


def _args(ann, images, out, *extra):
    return ["train", "--arch", "cornernet-squeeze", "--width", "0.125", "--levels", "2",
            "--input-size", "63", "--data", str(ann), "--images", str(images), "--batch-size", "2",
            "--output", str(out), "--no-progress", *extra]


def test_train_command_checkpoints_load_and_resume_exactly(shapes, tmp_path):
    from cornernet_deploy.models.checkpoint import load_checkpoint, spec_from_checkpoint
    ann, images = shapes
    assert main(_args(ann, images, tmp_path / "full", "--iterations", "4", "--snapshot", "0")) == 0
    assert main(_args(ann, images, tmp_path / "half", "--iterations", "2")) == 0
    assert main(_args(ann, images, tmp_path / "half", "--iterations", "4",
                      "--resume", str(tmp_path / "half" / "last.pt"))) == 0
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    half = torch.load(tmp_path / "half" / "last.pt", weights_only=True)
    assert full["format"] == "cornernet_deploy" and full["arch"] == "cornernet-squeeze"
    assert full["iteration"] == half["iteration"] == 4
    for k, v in full["state_dict"].items():
        assert torch.equal(v, half["state_dict"][k]), k
    assert full["losses"] == half["losses"]
    # the model loader rebuilds the variant (3 shape classes, width 1/8, 63 input) and loads it
    spec = spec_from_checkpoint(tmp_path / "full" / "last.pt")
    assert spec.num_classes == 3 and spec.class_names == ("rectangle", "ellipse", "triangle")
    assert spec.input_size == (63, 63) and spec.levels == 2
    model = build_model(spec)
    load_checkpoint(model, tmp_path / "full" / "last.pt")
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 63, 63))
    assert out["tl_heat"].shape == (1, 3, 8, 8)
    assert json.loads((tmp_path / "full" / "config.json").read_text())["input_size"] == [63, 63]


def test_init_from_a_checkpoint_with_other_classes_keeps_heat_heads_fresh(shapes, tmp_path):
    from cornernet_deploy.models.checkpoint import save_checkpoint
    from cornernet_deploy.train.trainer import load_matching_weights
    donor = build_model("cornernet-squeeze", num_classes=5, width=0.125, levels=2)
    save_checkpoint(donor, tmp_path / "donor.pt")
    model = build_model("cornernet-squeeze", num_classes=3, width=0.125, levels=2)
    loaded, skipped = load_matching_weights(model, tmp_path / "donor.pt")
    assert skipped and all(".heats." in k or k.split(".")[0] in ("tl_heats", "br_heats") for k in skipped)
    assert torch.equal(model.tl_tags[0][1].weight, donor.tl_tags[0][1].weight)
    other = build_model("cornernet-saccade", num_classes=3, width=0.125)
    with pytest.raises(UserError):
        load_matching_weights(other, tmp_path / "donor.pt")


def test_clear_errors(shapes, tmp_path, capsys):
    ann, images = shapes
    assert main(_args(tmp_path / "nope.json", images, tmp_path / "o", "--iterations", "1")) == 2
    assert "annotation file not found" in capsys.readouterr().err
    assert main(_args(ann, tmp_path / "noimages", tmp_path / "o", "--iterations", "1")) == 2
    assert "image directory not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(_args(bad, images, tmp_path / "o", "--iterations", "1")) == 2
    assert "not a readable JSON" in capsys.readouterr().err
    missing = tmp_path / "missing.json"
    coco = json.loads(ann.read_text())
    coco["images"][0]["file_name"] = "gone.png"
    missing.write_text(json.dumps(coco))
    assert main(_args(missing, images, tmp_path / "o", "--iterations", "1")) == 2
    assert "gone.png" in capsys.readouterr().err
    args = _args(ann, images, tmp_path / "o", "--iterations", "1")
    args[args.index("63")] = "64"
    assert main(args) == 2
    assert "63 or 95" in capsys.readouterr().err
    weights = tmp_path / "weights.pt"
    torch.save(build_model("cornernet-squeeze", num_classes=3, width=0.125, levels=2).state_dict(), weights)
    assert main(_args(ann, images, tmp_path / "o", "--iterations", "1", "--resume", str(weights))) == 2
    assert "not a training checkpoint" in capsys.readouterr().err
    assert main(_args(ann, images, tmp_path / "o")) == 2
    assert "--iterations or --epochs" in capsys.readouterr().err


def test_saccade_samples_match_the_model_output_shapes(shapes):
    from cornernet_deploy.train.dataset import CocoDataset
    from cornernet_deploy.train.trainer import IterationSampler, TrainSamples, collate
    ann, images = shapes
    coco = CocoDataset(ann, images)
    model = build_model("cornernet-saccade", num_classes=3, width=0.125, stacks=1)
    samples = TrainSamples(coco, model.spec, (127, 127), seed=0)
    keys = IterationSampler(len(coco), 2, seed=0, start=0, stop=1).batch(0)
    assert len({k[0] for k in keys}) == 2 and all(k[1:] == (0, s) for s, k in enumerate(keys))
    images_t, targets = collate([samples[k] for k in keys])
    model.train()
    with torch.no_grad():
        out = model(images_t)[0]
    assert targets["tl_heat"].shape == out["tl_heat"].shape
    assert [t.shape for t in targets["atts"]] == [a.shape for a in out["atts"]]
    total, terms = CornerNetLoss(attention=True)(model(images_t), targets)
    assert torch.isfinite(total) and set(terms) == {"focal", "pull", "push", "off", "att"}
