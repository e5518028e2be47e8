"""Synthetic shapes dataset: determinism, exact boxes, valid COCO JSON."""
import json

import cv2
import numpy as np
import pytest

from cornernet_deploy.data import SHAPE_CLASSES, generate_shapes_dataset, render_scene


@pytest.mark.parametrize("seed", range(6))
def test_boxes_are_the_exact_extent_of_the_drawn_masks(seed):
    image, boxes, labels, masks = render_scene(seed, image_size=((128, 256),), num_objects=(2, 5),
                                               noise=0, return_masks=True)
    assert image.dtype == np.uint8 and image.ndim == 3
    assert 128 <= image.shape[0] <= 256 and 128 <= image.shape[1] <= 256
    assert len(boxes) == len(labels) == len(masks) >= 1
    assert set(labels.tolist()) <= set(range(len(SHAPE_CLASSES)))
    union = np.zeros(image.shape[:2], int)
    for box, mask in zip(boxes, masks):
        ys, xs = np.nonzero(mask)
        # continuous convention: x2 is one past the last column
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        # a single flat colour under the whole mask (noise=0): the shape is drawn where its box says
        colours = np.unique(image[mask], axis=0)
        assert len(colours) == 1
        # and the colour differs from the ring of pixels just outside the mask
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~mask
        assert not np.all(image[ring] == colours[0])
        union += mask
    assert union.max() == 1  # shapes never overlap: nothing is occluded


def test_render_scene_is_deterministic_and_seed_dependent():
    a = render_scene(5, 160)
    b = render_scene(5, 160)
    c = render_scene(6, 160)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_generate_dataset_is_byte_identical_and_valid_coco(tmp_path):
    p1 = generate_shapes_dataset(tmp_path / "a", 4, seed=3, image_size=((128, 160),))
    p2 = generate_shapes_dataset(tmp_path / "b", 4, seed=3, image_size=((128, 160),))
    assert p1.read_bytes() == p2.read_bytes()
    for f in sorted((tmp_path / "a" / "images").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / "images" / f.name).read_bytes()
    coco = json.loads(p1.read_text())
    assert [c["name"] for c in coco["categories"]] == list(SHAPE_CLASSES)
    assert len(coco["images"]) == 4 and len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    # the boxes in the file are those of render_scene((seed, i)) in [x, y, w, h]
    for i, img in enumerate(coco["images"]):
        image, boxes, labels = render_scene((3, i), image_size=((128, 160),))
        on_disk = cv2.imread(str(tmp_path / "a" / "images" / img["file_name"]))
        assert np.array_equal(on_disk, image)
        anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        assert [a["bbox"] for a in anns] == [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in boxes.tolist()]
        assert [a["category_id"] for a in anns] == (labels + 1).tolist()
        assert all(0 < a["area"] <= a["bbox"][2] * a["bbox"][3] for a in anns)
    # pycocotools reads it
    pycocotools = pytest.importorskip("pycocotools.coco")
    api = pycocotools.COCO(str(p1))
    assert len(api.getImgIds()) == 4 and api.getCatIds() == [1, 2, 3]


def test_coco_loader_reads_the_generated_dataset(tmp_path):
    from cornernet_deploy.train.dataset import CocoDataset
    path = generate_shapes_dataset(tmp_path, 3, seed=1, image_size=128)
    ds = CocoDataset(path, tmp_path / "images")
    assert ds.class_names == SHAPE_CLASSES and ds.category_ids == (1, 2, 3)
    image, boxes, labels = render_scene((1, 0), image_size=128)
    rec = ds.records[0]
    order = np.lexsort((np.arange(len(labels)), labels))  # official order: by category, then file order
    np.testing.assert_array_equal(rec.boxes, boxes[order])
    np.testing.assert_array_equal(rec.labels, labels[order])
    assert np.array_equal(ds.load_image(0), image)
