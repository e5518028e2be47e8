"""Drawings keep every label readable (issue 21 item 17): no box edge crosses a label, no label
hides another while the image has room, and the text contrasts with its label colour.

A label is "intact" when its rectangle appears in the drawing exactly as the label rendered alone
(its fill and text, found by exact template matching anywhere in the drawing): whatever was drawn
over it afterwards, or under it by a later label, breaks the match."""
import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cornernet_deploy.runtime.detections import Detections
from cornernet_deploy.runtime.visualize import (LABEL_FONT, _colour, draw_detections, label_scale,
                                                text_colour)


def label_alone(text, class_id, image_hw):
    """The label as the test renders it by itself: text on a filled rectangle of the class colour."""
    scale = label_scale(image_hw)
    (tw, th), base = cv2.getTextSize(text, LABEL_FONT, scale, 1)
    fill = _colour(class_id)
    tile = np.empty((th + base, tw, 3), np.uint8)
    tile[:] = fill
    cv2.putText(tile, text, (0, th), LABEL_FONT, scale, text_colour(fill), 1, cv2.LINE_AA)
    return tile


def intact(drawing, tile) -> bool:
    # sum of squared differences at the best place; a single pixel off by one level gives >= 1,
    # while matchTemplate's float arithmetic leaves ~1e-8 on an exact match
    diff = cv2.matchTemplate(drawing, tile, cv2.TM_SQDIFF)
    return float(diff.min()) < 0.5


def dets(rows, names=("circle", "triangle", "square")):
    rows = np.float32(rows)
    ids = rows[:, 5].astype(int)
    return Detections(rows[:, :4], rows[:, 4], ids, [names[i] for i in ids])


def test_a_later_box_never_crosses_an_earlier_label():
    # the drawing of issue 21: the triangle's label sits above its box, and the square's left
    # edge (drawn later) runs through it: "triangle 0.84" read "0.34"
    image = np.full((300, 400, 3), 90, np.uint8)
    d = dets([[100, 100, 220, 220, 0.84, 1], [150, 40, 330, 160, 0.71, 2]])
    drawing = draw_detections(image, d)
    for name, score, cls in (("triangle", 0.84, 1), ("square", 0.71, 2)):
        assert intact(drawing, label_alone(f"{name} {score:.2f}", cls, image.shape[:2])), name


def test_labels_do_not_hide_each_other_when_there_is_room():
    # three boxes whose top-left corners nearly coincide: every preferred place is taken
    image = np.full((240, 320, 3), 200, np.uint8)
    d = dets([[60, 80, 200, 200, 0.95, 0], [64, 82, 180, 190, 0.9, 1], [62, 84, 210, 205, 0.85, 2]])
    drawing = draw_detections(image, d)
    for k in range(3):
        text = f"{d.class_names[k]} {d.scores[k]:.2f}"
        assert intact(drawing, label_alone(text, int(d.class_ids[k]), image.shape[:2])), text


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 340), st.integers(0, 340), st.integers(20, 200), st.integers(20, 200),
                          st.floats(0.5, 1.0), st.integers(0, 2)), min_size=1, max_size=5),
       st.integers(0, 255))
def test_few_boxes_on_a_large_image_all_labels_are_intact(rows, grey):
    image = np.full((400, 400, 3), grey, np.uint8)
    d = dets([[x, y, min(x + w, 399), min(y + h, 399), s, c] for x, y, w, h, s, c in rows])
    drawing = draw_detections(image, d)
    for k in range(len(d)):
        text = f"{d.class_names[k]} {d.scores[k]:.2f}"
        assert intact(drawing, label_alone(text, int(d.class_ids[k]), image.shape[:2])), (text, rows)


def test_text_contrasts_with_every_class_colour():
    def luminance(bgr):
        c = np.float64(bgr[::-1]) / 255.0
        c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    for cls in range(80):
        fill, text = _colour(cls), text_colour(_colour(cls))
        hi, lo = sorted((luminance(fill), luminance(text)), reverse=True)
        assert (hi + 0.05) / (lo + 0.05) >= 4.5, (cls, fill, text)    # WCAG AA for normal text


@pytest.mark.parametrize("grey", [0, 255])
def test_boxes_show_on_black_and_on_white(grey):
    image = np.full((100, 100, 3), grey, np.uint8)
    drawing = draw_detections(image, dets([[20, 30, 80, 90, 0.9, 0]]))
    change = np.abs(drawing[60, 12:29].astype(int) - grey).max(axis=1)   # across the left edge
    assert change[0] == change[-1] == 0                  # the background either side of it
    assert change.max() > 100                            # the edge stands out
    assert drawing[60, 12:29].max(axis=1).min() < 60     # with a dark outline (seen on white)
