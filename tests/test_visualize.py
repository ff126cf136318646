"""Drawing boxes and saving grids: pixel checks on blank images."""

import numpy as np
from PIL import Image

from ssd_jax import visualize


def test_draw_boxes_outlines_the_box_and_leaves_the_inside_and_the_input_untouched():
    image = np.zeros((128, 256, 3), np.uint8)
    # Corners (.25, .5, .75, .875) of 256 x 128 (exact in binary): x 64..191, y 64..111 (the far edge
    # is x1 - 1), line width 2. The caption sits above the box (y < 64).
    out = visualize.draw_boxes(image, [[0.25, 0.5, 0.75, 0.875]], [3], line_width=2)
    colour = visualize.class_colour(3)
    assert out.shape == (128, 256, 3) and out.dtype == np.uint8
    assert not image.any()  # drawn on a copy
    for y, x in [(90, 64), (90, 65), (90, 191), (90, 190), (111, 120), (110, 120), (64, 120), (65, 120)]:
        assert tuple(out[y, x]) == colour, (y, x)
    for y, x in [(90, 66), (90, 189), (109, 120), (66, 120), (90, 120), (90, 63), (90, 192), (112, 120)]:
        assert not out[y, x].any(), (y, x)
    assert not out[66:110, 66:190].any()  # the interior
    assert not out[112:].any() and not out[64:, 192:].any() and not out[64:, :64].any()  # outside


def test_min_score_skips_low_scoring_boxes_and_grayscale_is_accepted():
    image = np.zeros((128, 128), np.uint8)
    boxes = [[0.125, 0.5, 0.375, 0.875], [0.625, 0.5, 0.875, 0.875]]
    out = visualize.draw_boxes(image, boxes, [1, 2], scores=[0.3, 0.9], min_score=0.5, line_width=1)
    assert out.shape == (128, 128, 3)
    assert not out[:, :64].any()  # the 0.3 box (x 16..47) is not drawn, nor its caption
    assert tuple(out[90, 80]) == visualize.class_colour(2)  # left edge of the 0.9 box (x 80..111)
    assert tuple(out[90, 111]) == visualize.class_colour(2)  # its right edge
    assert not out[90, 81:111].any()


def test_save_grid_writes_a_png_of_the_grid_size(tmp_path):
    images = [np.full((10, 20, 3), v, np.uint8) for v in (10, 20, 30, 40, 50)]
    path = tmp_path / "sub" / "grid.png"
    grid = visualize.save_grid(images, str(path), padding=2)
    # 5 images: 3 columns (ceil sqrt 5), 2 rows -> (2 * 12 + 2, 3 * 22 + 2).
    assert grid.shape == (26, 68, 3)
    saved = np.asarray(Image.open(path))
    np.testing.assert_array_equal(saved, grid)
    assert np.all(grid[2:12, 2:22] == 10) and np.all(grid[14:24, 24:44] == 50)  # image 4: row 1, column 1
    assert np.all(grid[0:2] == 255) and np.all(grid[14:24, 46:66] == 255)  # padding and the empty cell


def test_edges_round_to_the_nearest_pixel_not_down():
    # 0.9 * 100 is 89.99... in float32: the box's last column and row are 89, not 88.
    drawn = visualize.draw_boxes(np.zeros((100, 100, 3), np.uint8), [[0.1, 0.1, 0.9, 0.9]], [1], line_width=1)
    colour = np.asarray(visualize.class_colour(1))
    assert (drawn[50, 89] == colour).all() and (drawn[89, 50] == colour).all()
    assert (drawn[50, 90] == 0).all() and (drawn[50, 88] == 0).all()
