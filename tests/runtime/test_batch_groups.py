"""``Detector.batch_groups``: independent groups of images (a server's requests, infer's files)
run as one batch; when it fails, each group alone, so a failure is only its own group's and the
other groups get exactly their lone detections (issue #21 item 1)."""
import numpy as np
import pytest

from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
from cornernet_deploy.data.shapes import render_scene
from cornernet_deploy.errors import UserError
from cornernet_deploy.runtime.detector import Detector

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    from cornernet_deploy.exporter import export_onnx
    path = tmp_path_factory.mktemp("groups") / "fixed.onnx"
    export_onnx(checkpoint=DEMO_CHECKPOINT, output=path, input_size="127x127", dynamic_batch=True,
                verify=False, progress=None)
    return Detector.load(path)


def same(a, b):
    return (np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
            and np.array_equal(a.class_ids, b.class_ids))


def test_a_failing_group_fails_alone_and_the_others_get_their_lone_detections(fixed):
    scenes = [render_scene(seed, image_size=200, num_objects=(2, 4))[0] for seed in (1, 2, 3)]
    thin = np.full((3, 10000, 3), 200, np.uint8)          # too elongated for the 127x127 input
    alone = [fixed.batch([image])[0] for image in scenes]
    assert all(len(d) for d in alone)
    found = fixed.batch_groups([[scenes[0], scenes[1]], [thin], [scenes[2]]])
    assert isinstance(found[1], UserError) and "too elongated" in str(found[1])
    assert len(found[0]) == 2 and same(found[0][0], alone[0]) and same(found[0][1], alone[1])
    assert len(found[2]) == 1 and same(found[2][0], alone[2])
    # nothing fails: one batch, split back into the groups
    together = fixed.batch_groups([[scenes[0]], [scenes[1], scenes[2]]])
    assert [len(g) for g in together] == [1, 2]
    assert all(same(d, a) for d, a in zip(together[0] + together[1], alone))
    # a single group gets its exception, not a re-run
    assert isinstance(fixed.batch_groups([[thin]])[0], UserError)
