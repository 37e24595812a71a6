"""In-the-wild photos: modes, odd sizes, square crops past the edges, paste-back round trips."""
import numpy as np
import pytest
import torch
from PIL import Image

from emocast.conditioning import CropBox
from emocast.demo.tiny import DEMO_IMAGE
from emocast.errors import InputError
from emocast.preprocess import crop as C

RGB = np.asarray(Image.open(DEMO_IMAGE).convert("RGB"))


def test_rgb_uint8_is_divided_by_255_exactly():
    out = C.to_rgb_float(Image.fromarray(RGB))
    assert out.dtype == np.float32 and out.shape == (512, 512, 3)
    assert np.array_equal(C.to_uint8(out), RGB)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "YCbCr", "1", "I", "I;16", "F", "LA", "RGBA"])
def test_every_pil_mode_becomes_rgb_float(mode):
    img = Image.fromarray(RGB[:97, :131]).convert(mode)
    out = C.to_rgb_float(img)
    assert out.shape == (97, 131, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    if mode in ("L", "I", "I;16", "F", "LA"):  # greyscale of any depth: three equal channels
        assert np.array_equal(out[..., 0], out[..., 2])


def test_sixteen_bit_greyscale_keeps_its_depth():
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    img = Image.fromarray(ramp)
    assert img.mode == "I;16"
    out = C.to_rgb_float(img)
    assert np.allclose(out[..., 0], ramp / 65535, atol=1e-7)
    assert len(np.unique(out[..., 0])) == 4096  # not collapsed to 8 bits


def test_alpha_composites_over_white_and_opaque_is_unchanged():
    rgba = np.dstack([RGB[:64, :64], np.full((64, 64), 255, np.uint8)])
    assert np.array_equal(C.to_rgb_float(rgba), RGB[:64, :64] / np.float32(255))
    rgba[..., 3] = 0
    assert (C.to_rgb_float(Image.fromarray(rgba)) == 1).all()
    rgba[..., 3] = 128
    half = C.to_rgb_float(rgba)
    assert np.allclose(half, RGB[:64, :64] / 255 * (128 / 255) + (1 - 128 / 255), atol=1e-6)
    pal = Image.fromarray(RGB[:64, :64]).convert("P")
    pal.info["transparency"] = 0
    assert C.to_rgb_float(pal).shape == (64, 64, 3)


@pytest.mark.parametrize("arr", [RGB.astype(np.uint16) * 257, RGB / 255.0, torch.from_numpy(RGB / 255.0)[None],
                                 RGB[..., 0], RGB[..., :1]])
def test_arrays_and_comfy_tensors(arr):
    out = C.to_rgb_float(arr)
    assert out.shape == (512, 512, 3)
    assert np.abs(out[..., 0] - RGB[..., 0] / 255).max() < 1e-6


@pytest.mark.parametrize("bad, words", [(np.zeros((8, 8, 3), np.uint8), "8x8 px"),
                                        (np.zeros((2, 32, 32, 3), np.float32), "shape (2, 32, 32, 3)"),
                                        (np.zeros((32, 32, 5), np.uint8), "shape (32, 32, 5)"),
                                        (np.full((32, 32, 3), np.nan, np.float32), "NaN"),
                                        (np.zeros((32, 32, 3), np.complex64), "pixel type"),
                                        ("portrait.png", "type str")])
def test_unusable_images_raise_input_error(bad, words):
    with pytest.raises(InputError, match="cannot be read") as e:
        C.to_rgb_float(bad)
    assert words in str(e.value) and e.value.hint


def test_square_box_centred_kept_inside_or_past_the_edges():
    box = C.square_box((200, 200, 300, 300), (1000, 800), margin=0.5)
    assert (box.x0, box.y0, box.side, box.image_size) == (150, 150, 200, (1000, 800))
    assert C.square_box((0, 0, 100, 100), (1000, 800), margin=0.5) == CropBox(0, 0, 200, 200, (1000, 800))
    past = C.square_box((0, 0, 100, 100), (1000, 800), margin=0.5, keep_inside=False)
    assert (past.x0, past.y0) == (-50, -50)
    wide = C.square_box((10, 10, 90, 40), (120, 50), margin=0.5)  # square larger than the height
    assert wide.side == 160 and wide.y0 < 0 and wide.y1 > 50 and wide.x0 == -30  # centre 50 - 80
    with pytest.raises(InputError, match="margin"):
        C.square_box((0, 0, 10, 10), (100, 100), margin=-0.1)


def test_crop_pads_with_edge_pixels():
    img = np.random.default_rng(0).random((40, 60, 3), dtype=np.float32)
    box = CropBox(-10, -5, 50, 55, (60, 40))
    out = C.crop(img, box, 60)  # side 60 -> no resize
    assert np.array_equal(out[5:45, 10:60], img[:, :50])
    assert np.array_equal(out[0, 10:60], img[0, :50]) and np.array_equal(out[5:45, 0], img[:, 0])
    assert np.array_equal(out[50:, 30], np.repeat(img[-1:, 20], 10, 0))


def test_paste_back_of_the_unmodified_crop_is_exact_without_resize():
    src = C.to_rgb_float(RGB[:300, :420])  # odd, non-square framing
    box = C.square_box((150, 60, 250, 190), (420, 300), margin=0.3)
    frames = np.repeat(C.crop(src, box, box.side)[None], 2, 0)
    out, mask = C.paste_back(frames, box, src)
    assert out.shape == (2, 300, 420, 3) and mask.shape == (300, 420)
    assert (out - torch.from_numpy(src)).abs().max() < 1e-6


def test_paste_back_round_trip_within_resize_error():
    src = C.to_rgb_float(RGB)
    box = C.square_box((170, 60, 280, 190), (512, 512), margin=0.6)
    out, mask = C.paste_back(C.crop(src, box, 256)[None], box, src)  # 282 px -> 256 -> 282
    err = (out[0] - torch.from_numpy(src)).abs()
    inside = err[box.y0:box.y1, box.x0:box.x1]
    assert err[mask == 0].max() == 0                  # untouched outside the crop
    assert inside.mean() < 0.01 and inside.max() < 0.3   # resampling error only (measured 0.0076 / 0.26)


def test_paste_back_past_the_edges_and_feathering():
    src = C.to_rgb_float(RGB[:200, :300])
    box = CropBox(-40, 20, 120, 180, (300, 200))
    out, mask = C.paste_back(np.zeros((1, 64, 64, 3), np.float32), box, src, feather=0.1)
    m = mask.numpy()
    assert m[100, 0] == 1 and m[100, 60] == 1               # the image border side stays hard
    assert m[100, 119] < 0.1 and m[100, 110] < 1 and m[100, 125] == 0  # feathered over 16 px inside
    assert m[21, 60] < 0.1 and m[10, 60] == 0 and m[190, 60] == 0
    assert np.allclose(out[0].numpy(), src * (1 - m[..., None]), atol=1e-6)


def test_paste_back_rejects_mismatched_inputs():
    box = CropBox(0, 0, 64, 64, (100, 80))
    with pytest.raises(InputError, match="paste-back"):
        C.paste_back(np.zeros((1, 32, 32, 3)), box, np.zeros((100, 80, 3)))  # h / w swapped
    with pytest.raises(InputError, match="paste-back"):
        C.paste_back(np.zeros((32, 32, 3)), box, np.zeros((80, 100, 3)))
