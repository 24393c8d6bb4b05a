"""Pixels without Java: pyramid levels chosen like QuPath, regions equal to direct reads, RGB rendering."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile

from qpsam.errors import ImageReadError
from qpsam.geometry import Region
from qpsam.objects import ImagePlane
from qpsam.project.pixels import ChannelDisplay, open_image


def write_pyramid(path: Path, base: np.ndarray, levels: int = 4, tile: int = 256) -> list[np.ndarray]:
    """A tiled pyramidal OME-TIFF (SubIFDs) of a (C, Y, X) image, each level half the previous one."""
    pyramid = [base]
    for _ in range(levels - 1):
        prev = pyramid[-1]
        c, h, w = prev.shape
        pyramid.append(prev[:, : h // 2 * 2, : w // 2 * 2].reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4)).astype(base.dtype))
    with tifffile.TiffWriter(path, ome=True) as tif:
        meta = {"axes": "CYX", "Channel": {"Name": [f"ch{i}" for i in range(base.shape[0])]}, "PhysicalSizeX": 0.5}
        tif.write(pyramid[0], subifds=levels - 1, tile=(tile, tile), metadata=meta, compression="zlib")
        for level in pyramid[1:]:
            tif.write(level, subfiletype=1, tile=(tile, tile), compression="zlib")
    return pyramid


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 4000, size=(3, 1024, 1536), dtype=np.uint16)
    path = tmp_path_factory.mktemp("img") / "multi.ome.tif"
    return path, write_pyramid(path, base)


def test_metadata(pyramid) -> None:
    path, levels = pyramid
    image = open_image(path)
    assert (image.width, image.height, image.size_c, image.size_z, image.size_t) == (1536, 1024, 3, 1, 1)
    assert image.downsamples == (1.0, 2.0, 4.0, 8.0)
    assert image.channel_names == ("ch0", "ch1", "ch2")
    assert image.pixel_size_um == 0.5
    assert not image.is_rgb


@pytest.mark.parametrize("downsample, level", [(1, 0), (4, 2), (16, 3), (3, 1), (0.5, 0)])
def test_level_choice_follows_qupath(pyramid, downsample, level) -> None:
    assert open_image(pyramid[0]).level_for(downsample) == level


def test_regions_match_direct_reads_at_downsample_1_4_16(pyramid) -> None:
    path, levels = pyramid
    image = open_image(path)
    direct = tifffile.imread(path)  # (C, Y, X) base level
    got = image.read_region(Region(256, 128, 300, 200))
    assert np.array_equal(got, np.moveaxis(direct[:, 128:328, 256:556], 0, 2))
    got4 = image.read_region(Region(256, 128, 512, 256, downsample=4))
    assert np.array_equal(got4, np.moveaxis(levels[2][:, 32:96, 64:192], 0, 2))
    got16 = image.read_region(Region(0, 0, 1536, 1024, downsample=16))
    l3 = levels[3].astype(np.float64)  # level 8x, then area-averaged by 2
    expected = l3.reshape(3, 64, 2, 96, 2).mean(axis=(2, 4))
    assert got16.shape == (64, 96, 3)
    assert np.abs(got16.astype(np.float64) - np.moveaxis(expected, 0, 2)).max() <= 1


def test_regions_beyond_the_edge_are_padded_and_outside_is_an_error(pyramid) -> None:
    image = open_image(pyramid[0])
    edge = image.read_region(Region(1500, 1000, 100, 100))
    assert edge.shape == (100, 100, 3) and not edge[30:, :].any() and edge[:24, :36].any()
    with pytest.raises(ImageReadError, match="lies outside"):
        image.read_region(Region(5000, 5000, 10, 10))
    with pytest.raises(ImageReadError, match="plane z=2"):
        image.read_region(Region(0, 0, 10, 10, plane=ImagePlane(z=2)))
    with pytest.raises(ImageReadError, match="channels \\[7\\]"):
        image.read_region(Region(0, 0, 10, 10), channels=[7])


def test_render_rgb_uses_channel_colours_and_ranges(pyramid) -> None:
    image = open_image(pyramid[0])
    region = Region(0, 0, 64, 64)
    display = [ChannelDisplay("a", (255, 0, 0), 0, 4000), ChannelDisplay("b", (0, 255, 0), 0, 4000),
               ChannelDisplay("c", (0, 0, 255), 0, 4000)]
    rgb = image.render_rgb(region, display)
    raw = image.read_region(region).astype(np.float64)
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    assert np.abs(rgb.astype(np.float64) - raw / 4000 * 255).max() <= 1
    only_red = image.render_rgb(region, display, channels=[0])
    assert not only_red[:, :, 1:].any()


def test_plain_images_and_missing_or_corrupt_files(tmp_path) -> None:
    from PIL import Image

    png = tmp_path / "rgb.png"
    pixels = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(png)
    image = open_image(png)
    assert image.is_rgb and (image.width, image.height) == (60, 40)
    assert np.array_equal(image.render_rgb(Region(0, 0, 60, 40)), pixels)
    with pytest.raises(ImageReadError, match="does not exist"):
        open_image(tmp_path / "missing.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageReadError, match="bad.tif"):
        open_image(bad)


def test_readers_pickle_for_workers(pyramid) -> None:
    image = open_image(pyramid[0])
    image.read_region(Region(0, 0, 8, 8))
    clone = pickle.loads(pickle.dumps(image))
    assert np.array_equal(clone.read_region(Region(0, 0, 8, 8)), image.read_region(Region(0, 0, 8, 8)))
