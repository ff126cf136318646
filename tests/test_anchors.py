"""Default boxes: counts, Caffe's coordinates worked out by hand, the paper's scales, non-square inputs."""

import math

import numpy as np
import pytest

from ssd_jax import anchors


def test_ssd300_voc_counts():
    spec = anchors.SSD300_VOC
    assert spec.boxes_per_location == (4, 6, 6, 6, 4, 4)
    assert spec.num_boxes_per_map == (38 * 38 * 4, 19 * 19 * 6, 10 * 10 * 6, 5 * 5 * 6, 3 * 3 * 4, 4)
    assert spec.num_boxes == 8732
    assert anchors.default_boxes(spec).shape == (8732, 4)


def test_ssd512_and_coco_counts():
    assert anchors.default_boxes(anchors.SSD512_VOC).shape == (24564, 4)
    assert anchors.default_boxes(anchors.SSD300_COCO).shape == (8732, 4)


def test_ssd300_first_boxes_match_caffe_by_hand():
    # conv4_3, location (0, 0): centre (0.5 * 8 / 300), min 30 px, max 60 px, ratio 2.
    b = anchors.default_boxes(anchors.SSD300_VOC)
    c = 4.0 / 300
    s = 30 / 300
    e = math.sqrt(30 * 60) / 300
    r = math.sqrt(2)
    expected = [[c, c, s, s], [c, c, e, e], [c, c, s * r, s / r], [c, c, s / r, s * r]]
    np.testing.assert_allclose(b[:4], expected, rtol=1e-6)
    # location (0, 1) is one step (8 px) to the right: row-major, x varies fastest.
    np.testing.assert_allclose(b[4, :2], [12.0 / 300, c], rtol=1e-6)
    # location (1, 0) starts after a full row of 38 locations.
    np.testing.assert_allclose(b[38 * 4, :2], [c, 12.0 / 300], rtol=1e-6)


def test_ssd300_last_boxes_match_caffe_by_hand():
    # conv11_2 (1x1): centre 0.5, min 264 px, max 315 px, ratio 2 and 1/2.
    b = anchors.default_boxes(anchors.SSD300_VOC)
    s = 264 / 300
    e = math.sqrt(264 * 315) / 300
    r = math.sqrt(2)
    expected = [[0.5, 0.5, s, s], [0.5, 0.5, e, e], [0.5, 0.5, s * r, s / r], [0.5, 0.5, s / r, s * r]]
    np.testing.assert_allclose(b[-4:], expected, rtol=1e-6)
    # fc7 (19x19, step 16) starts right after conv4_3's 5776 boxes, with 6 boxes a location.
    np.testing.assert_allclose(b[5776, :3], [8 / 300, 8 / 300, 60 / 300], rtol=1e-6)
    np.testing.assert_allclose(b[5776 + 4:5776 + 6, 2:], [[60 * math.sqrt(3) / 300, 60 / math.sqrt(3) / 300],
                                                          [60 / math.sqrt(3) / 300, 60 * math.sqrt(3) / 300]],
                               rtol=1e-6)


def test_coco_preset_uses_torchvision_scales_and_clips_sizes_only():
    b = anchors.default_boxes(anchors.SSD300_COCO)
    np.testing.assert_allclose(b[0, 2], 0.07, rtol=1e-6)
    np.testing.assert_allclose(b[1, 2], math.sqrt(0.07 * 0.15), rtol=1e-6)
    assert b[:, 2:].max() <= 1.0 and b.min() >= 0.0
    # 10x10 map (step 32): the last column's centre is 9.5 * 32 / 300 > 1, kept as torchvision does.
    first_10x10 = 38 * 38 * 4 + 19 * 19 * 6
    np.testing.assert_allclose(b[first_10x10 + 9 * 6, 0], 9.5 * 32 / 300, rtol=1e-6)
    clipped_all = anchors.default_boxes(anchors.SSD300_COCO.replace(clip=True))
    assert clipped_all.max() <= 1.0
    np.testing.assert_allclose(b[-4, 3], 0.87, rtol=1e-6)
    np.testing.assert_allclose(b[-3, 2], math.sqrt(0.87 * 1.05), rtol=1e-6)
    np.testing.assert_allclose(b[-2, 2], 1.0)  # 0.87 * sqrt(2) > 1, clipped


def test_paper_scales():
    np.testing.assert_allclose(anchors.paper_scales(6), [0.2, 0.34, 0.48, 0.62, 0.76, 0.9], atol=1e-12)
    spec = anchors.paper_spec([38, 19, 10, 5, 3, 1])
    b = anchors.default_boxes(spec)
    assert spec.num_boxes == 6 * sum(f * f for f in (38, 19, 10, 5, 3, 1))
    np.testing.assert_allclose(b[0], [0.5 / 38, 0.5 / 38, 0.2, 0.2], rtol=1e-6)
    np.testing.assert_allclose(b[1, 2], math.sqrt(0.2 * 0.34), rtol=1e-6)
    np.testing.assert_allclose(b[-6, 2], 0.9, rtol=1e-6)
    np.testing.assert_allclose(b[-5, 2], math.sqrt(0.9 * 1.0), rtol=1e-6)


def test_non_square_image_and_maps_keep_height_and_width_apart():
    spec = anchors.DefaultBoxSpec(image_size=(200, 400), feature_map_sizes=((2, 4),), min_sizes=(100,),
                                  max_sizes=(200,), aspect_ratios=((2,),))
    b = anchors.default_boxes(spec)
    assert b.shape == (2 * 4 * 4, 4)
    # location (row 0, col 1): cx = 1.5 / 4, cy = 0.5 / 2; a 100 px square is 0.25 wide, 0.5 tall.
    np.testing.assert_allclose(b[4], [1.5 / 4, 0.25, 0.25, 0.5], rtol=1e-6)
    # location (row 1, col 0) starts after the 4 locations of row 0.
    np.testing.assert_allclose(b[16, :2], [0.5 / 4, 0.75], rtol=1e-6)


def test_spec_validation_names_the_field():
    with pytest.raises(ValueError, match="min_sizes"):
        anchors.DefaultBoxSpec(image_size=300, feature_map_sizes=(38, 19), min_sizes=(30,), max_sizes=(60, 111),
                               aspect_ratios=((2,), (2,)))
