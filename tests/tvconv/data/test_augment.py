"""Augmentation ops: exact geometry on known inputs, determinism, spec parsing."""

import math

import pytest
import torch

from tvconv.data.augment import FILL, LEVELS, Augmentation, _warp, mean_displacement


def images(n=6, size=12):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3)) * 2 - 1


def run(spec, x, seed=0):
    return Augmentation(spec)(x, torch.Generator().manual_seed(seed))


def test_none_is_identity_and_levels_parse():
    x = images()
    assert torch.equal(run("none", x), x)
    assert torch.equal(run("", x), x)
    for level in LEVELS:
        assert run(level, x).shape == x.shape


def test_hflip_with_probability_one_flips_every_image():
    x = images()
    assert torch.equal(run("hflip:1", x), x.flip(-1))
    assert torch.equal(run("hflip:0", x), x)


def test_shift_is_an_integer_translation_within_the_fraction_of_the_frame():
    x = images(n=8)  # 12 px: a fraction of 0.17 is up to 2 px
    out = run("shift:0.17", x, seed=5)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=FILL)
    shifts = set()
    for i in range(8):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], padded[i, :, dy : dy + 12, dx : dx + 12])
        ]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 1


def test_shift_is_the_same_fraction_of_the_frame_at_any_size():
    """shift:0.25 moves a 16 px image by up to 4 px and a 32 px one by up to 8 px (and a
    rectangular one by a quarter of each side)."""
    for height, width in ((16, 16), (32, 32), (16, 32)):
        x = torch.zeros(64, 1, height, width)
        moved = run("shift:0.25", x, seed=1) == FILL  # uncovered pixels are filled with FILL
        rows_cut = moved.all(dim=3).sum(dim=2).flatten()  # fully uncovered rows per image
        cols_cut = moved.all(dim=2).sum(dim=2).flatten()
        assert rows_cut.max() == height // 4 and cols_cut.max() == width // 4


def test_warp_with_a_quarter_turn_equals_rot90():
    x = images(n=2, size=8)
    theta = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]).expand(2, 2, 3)
    torch.testing.assert_close(_warp(x, theta), torch.rot90(x, k=1, dims=(2, 3)), atol=1e-5,
                               rtol=0)  # fmt: skip


def test_rotate_and_crop_keep_the_centre_and_fill_black():
    x = torch.zeros(4, 3, 16, 16)
    x[:, :, 6:10, 6:10] = 1.0
    rotated = run("rotate:30", x)
    assert (rotated[:, :, 7:9, 7:9] > 0.9).all()
    assert rotated.min() >= FILL - 1e-6 and rotated.max() <= 1 + 1e-6
    assert (rotated[:, 0, 0, 0] < FILL + 0.1).sum() >= 2  # corners rotated out are filled black
    cropped = run("crop:0.9", torch.ones(4, 3, 16, 16))
    assert torch.allclose(cropped, torch.ones(4, 3, 16, 16))  # crops stay inside the image
    assert run("rotate:0", x).sub(x).abs().max() < 1e-6


def test_crop_zooms_in():
    x = torch.linspace(-1, 1, 32).view(1, 1, 1, 32).expand(4, 3, 32, 32).contiguous()
    out = run("crop:0.25", x)
    span = out[:, 0, 16, -1] - out[:, 0, 16, 0]
    assert (span < 2.0).all() and (span > 0.5 * 2 * math.sqrt(0.25) * 0.75).all()


def test_color_zero_is_identity_and_stays_in_range():
    x = images()
    torch.testing.assert_close(run("color:0", x), x)
    out = run("color:1", x)
    assert out.min() >= -1 and out.max() <= 1 and not torch.allclose(out, x)


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(5, 3, 10, 10)
    out = run("cutout:0.3", x)
    assert ((out == 0).sum(dim=(1, 2, 3)) == 3 * 9).all()
    holes = (out[:, 0] == 0).nonzero()
    for i in range(5):
        rows, cols = holes[holes[:, 0] == i, 1], holes[holes[:, 0] == i, 2]
        assert rows.max() - rows.min() == 2 and cols.max() - cols.min() == 2


def test_determinism_under_a_seed():
    x = images()
    spec = "hflip,shift:0.2,crop:0.6,rotate:20,color:0.3,cutout:0.2"
    assert torch.equal(run(spec, x, seed=1), run(spec, x, seed=1))
    assert not torch.equal(run(spec, x, seed=1), run(spec, x, seed=2))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("blur", "unknown augmentation 'blur' in 'blur'; expected one of hflip, shift"),
        ("shift:4", r"strength must be fraction of the frame in \[0.0, 0.5\], got '4'"),
        ("hflip:2", r"strength must be probability in \[0.0, 1.0\], got '2'"),
        ("rotate:x", r"strength must be degrees in \[0, 180\], got 'x'"),
        ("crop:0", "minimum area fraction"),
        ("hflip,shift:", r"augmentation 'shift:': no strength after ':'; expected fraction of"),
        ("cutout: ", r"no strength after ':'.*'cutout' alone for the default 0.3"),
        ("shift:2.5px", "expected a whole number of pixels, e.g. 4px"),
        ("rotate:4px", r"strength must be degrees in \[0, 180\], got '4px'"),
        ("crop:0.8-0.3", "an area range must be lo-hi with 0.05 <= lo <= hi <= 1.0"),
        ("crop:0.01-0.5", "an area range must be lo-hi"),
    ],
)
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        Augmentation(spec)


def test_zero_strength_whole_pixel_ops_change_nothing():
    x = images()
    assert torch.equal(run("shift:0", x), x)
    assert torch.equal(run("cutout:0", x), x)


@pytest.mark.parametrize(
    ("spec", "side", "message"),
    [
        ("shift:0.01", 32, r"'shift:0.01' is 0 pixels on a 32 px image .* at least 0.0312"),
        ("hflip,cutout:0.015", 32, r"'cutout:0.015' is 0 pixels on a 32 px image"),
        ("shift:0.005", 96, r"'shift:0.005' is 0 pixels on a 96 px image .* at least 0.0104"),
    ],
)
def test_a_strength_that_rounds_to_no_pixel_is_refused(spec, side, message):
    with pytest.raises(ValueError, match=message):
        Augmentation(spec).check_size(side)


def test_strengths_of_a_pixel_or_more_pass_the_size_check():
    for spec, side in [("shift:0.01", 96), ("shift:0.05", 32), ("shift:0,cutout:0", 32)]:
        Augmentation(spec).check_size(side)  # no error
    for level in LEVELS:
        Augmentation(level).check_size(32)


def test_mean_displacement_orders_the_ladder_by_how_far_it_moves_content():
    """Flips and photometric ops move nothing; a shift of up to f of the frame moves content by
    about f / 2 per axis; shift20 moves it furthest of the ladder."""
    assert mean_displacement("hflip") == 0.0
    assert mean_displacement("color,cutout") == 0.0
    moved = {level: mean_displacement(level, samples=500) for level in LEVELS}
    assert moved["shift5"] < moved["shift10"] < moved["shift20"]
    assert moved["rot10"] < moved["rot30"]
    assert max(moved, key=moved.get) == "shift20"
    assert 0.12 < moved["shift20"] < 0.16


def test_shift_and_cutout_also_take_pixels():
    """``shift:2px`` moves by up to 2 px at any size (12 px: the same as ``shift:0.17``);
    ``cutout:3px`` is a 3 px square."""
    x = images(n=8)
    torch.testing.assert_close(run("shift:2px", x, seed=5), run("shift:0.17", x, seed=5))
    ones = torch.ones(5, 3, 10, 10)
    torch.testing.assert_close(run("cutout:3px", ones), run("cutout:0.3", ones))
    Augmentation("shift:16px").check_size(32)
    with pytest.raises(ValueError, match="moves more than half of a 32 px image"):
        Augmentation("shift:17px").check_size(32)
    with pytest.raises(ValueError, match="'cutout:40px' is larger than a 32 px image"):
        Augmentation("cutout:40px").check_size(32)


def test_crop_takes_an_area_range():
    x = images(n=64, size=16)
    whole = run("crop:1.0-1.0", x)  # the whole frame, any aspect: a crop of area 1 at most
    assert whole.shape == x.shape
    torch.testing.assert_close(run("crop:0.5-1.0", x, seed=3), run("crop:0.5", x, seed=3))


def test_none_in_a_list_colour_and_non_text_specs():
    x = images()
    torch.testing.assert_close(run("none,hflip:1", x), run("hflip:1", x))
    torch.testing.assert_close(run("colour:0.3", x, seed=2), run("color:0.3", x, seed=2))
    for spec in (None, 3, ["hflip"]):
        with pytest.raises(ValueError, match="augmentation must be a spec string"):
            Augmentation(spec)
