"""crunch(): the variants made of an image, checked by their pixels and their bytes."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from profiled.crunch.pipeline import (
    REASONS,
    CrunchFailed,
    CrunchResult,
    CrunchSpec,
    configure_pillow,
    crunch,
)
from profiled.crunch.sniff import ImageLimits
from tests import images

RED, GREEN, BLUE, WHITE = images.QUADRANTS


@pytest.fixture(autouse=True, scope="module")
def _pillow() -> Iterator[None]:
    """Pillow set up as a crunch child sets it up."""
    configure_pillow(ImageLimits())
    yield


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., CrunchResult]:
    """Crunch the given bytes in a fresh directory."""
    counter = iter(range(1000))

    def run(data: bytes, spec: CrunchSpec | None = None) -> CrunchResult:
        work = tmp_path / f"job{next(counter)}"
        work.mkdir()
        src = work / "original"
        src.write_bytes(data)
        out = work / "out"
        out.mkdir()
        return crunch(str(src), str(out), spec or CrunchSpec())

    return run


def fails(run: Callable[..., CrunchResult], data: bytes, spec: CrunchSpec | None = None) -> str:
    """Crunch what must fail, and say why."""
    with pytest.raises(CrunchFailed) as info:
        run(data, spec)
    assert info.value.reason in REASONS
    assert "Traceback" not in info.value.detail
    return info.value.reason


def variant(result: CrunchResult, name: str = "large") -> Image.Image:
    """Open a variant written by crunch()."""
    (v,) = [v for v in result.variants if v.name == name]
    im = Image.open(v.path)
    im.load()
    return im


def raw(result: CrunchResult) -> list[bytes]:
    """The bytes of every variant file."""
    return [Path(v.path).read_bytes() for v in result.variants]


def close(a: tuple[int, ...] | float, b: tuple[int, ...], tolerance: float = 12) -> bool:
    """Whether two colours are within ``tolerance`` (JPEG is lossy)."""
    a = (a,) if isinstance(a, int | float) else a
    return images.distance(a, b) <= tolerance


# --- orientation -------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(run, orientation: int) -> None:  # type: ignore[no-untyped-def]
    """Every EXIF orientation 1..8 comes out upright: red top-left, white bottom-right."""
    result = run(images.jpeg_oriented(orientation))
    assert (result.width, result.height) == images.ORIENTED_SIZE
    for name in ("large", "default", "small"):
        im = variant(result, name).convert("RGB")
        w, h = im.size
        assert w > h
        assert close(im.getpixel((w // 4, h // 4)), RED, 30), name
        assert close(im.getpixel((3 * w // 4, h // 4)), GREEN, 30), name
        assert close(im.getpixel((w // 4, 3 * h // 4)), BLUE, 30), name
        assert close(im.getpixel((3 * w // 4, 3 * h // 4)), WHITE, 30), name


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_orientation_with_draft_and_cover(run, orientation: int) -> None:  # type: ignore[no-untyped-def]
    """A large JPEG scaled in the DCT and centre-cropped still comes out upright."""
    result = run(images.jpeg_oriented(orientation, (2600, 1400)), CrunchSpec(mode="cover"))
    assert (result.width, result.height) == (2600, 1400)
    im = variant(result).convert("RGB")
    assert im.size == (600, 600)
    assert close(im.getpixel((100, 100)), RED, 30)
    assert close(im.getpixel((500, 100)), GREEN, 30)
    assert close(im.getpixel((100, 500)), BLUE, 30)
    assert close(im.getpixel((500, 500)), WHITE, 30)


# --- sizes ---------------------------------------------------------------------


def sizes(result: CrunchResult) -> dict[str, tuple[int, int]]:
    """Variant name -> (width, height), as reported and as written."""
    out = {}
    for v in result.variants:
        with Image.open(v.path) as im:
            assert im.size == (v.width, v.height)
        assert os.path.getsize(v.path) == v.size
        out[v.name] = (v.width, v.height)
    return out


def test_fit_keeps_aspect_ratio(run) -> None:  # type: ignore[no-untyped-def]
    """Fit mode puts the image inside each box, keeping its aspect ratio."""
    result = run(images.jpeg((1280, 960)))
    assert sizes(result) == {"default": (200, 150), "small": (100, 75), "large": (600, 450)}


def test_fit_never_enlarges(run) -> None:  # type: ignore[no-untyped-def]
    """Fit mode leaves an image smaller than a box at its own size."""
    result = run(images.jpeg((150, 90)))
    assert sizes(result) == {"default": (150, 90), "small": (100, 60), "large": (150, 90)}


def test_cover_crops_to_squares(run) -> None:  # type: ignore[no-untyped-def]
    """Cover mode centre-crops to the exact square of each box."""
    result = run(images.jpeg((1280, 700)), CrunchSpec(mode="cover"))
    assert sizes(result) == {"default": (200, 200), "small": (100, 100), "large": (600, 600)}


def test_cover_never_enlarges(run) -> None:  # type: ignore[no-untyped-def]
    """Cover mode gives a small image the largest square it has, no bigger."""
    result = run(images.jpeg((150, 90)), CrunchSpec(mode="cover"))
    assert sizes(result) == {"default": (90, 90), "small": (90, 90), "large": (90, 90)}


def test_cover_keeps_the_centre(run) -> None:  # type: ignore[no-untyped-def]
    """Cover mode keeps the middle of a wide image and drops its sides."""
    im = Image.new("RGB", (900, 300), RED)
    im.paste(GREEN, (300, 0, 600, 300))
    out = io.BytesIO()
    im.save(out, "PNG")
    result = run(out.getvalue(), CrunchSpec(mode="cover"))
    large = variant(result).convert("RGB")
    assert large.size == (300, 300)
    assert close(large.getpixel((2, 2)), GREEN) and close(large.getpixel((297, 297)), GREEN)


def test_custom_variants(run) -> None:  # type: ignore[no-untyped-def]
    """The variant set comes from the spec, a mapping as from the config included."""
    spec = CrunchSpec(variants={"default": 64, "tiny": 16})
    result = run(images.jpeg((128, 128)), spec)
    assert sizes(result) == {"default": (64, 64), "tiny": (16, 16)}
    assert sorted(os.listdir(os.path.dirname(result.variants[0].path))) == ["default", "tiny"]


# --- colour ----------------------------------------------------------------------


def patches(im: Image.Image) -> list[tuple[int, ...]]:
    """The colours at the centres of the four patches of images.cmyk_jpeg()."""
    w, h = im.size
    return [im.getpixel((i * w // 4 + w // 8, h // 2)) for i in range(4)]  # type: ignore[misc]


def test_cmyk_with_icc_goes_through_the_profile(run) -> None:  # type: ignore[no-untyped-def]
    """A CMYK JPEG with a profile gets that profile's colours (cyan is (0, 174, 239) there)."""
    im = variant(run(images.cmyk_jpeg(with_icc=True)))
    assert im.mode == "RGB"
    expected = [images.CMYK_INKS[ink] for ink in "cmyk"]
    for got, want in zip(patches(im), expected, strict=True):
        assert close(got, want, 15), (got, want)


def test_cmyk_without_icc_is_plainly_converted(run) -> None:  # type: ignore[no-untyped-def]
    """A CMYK JPEG without a profile (Adobe inverted samples) gives the plain primaries."""
    im = variant(run(images.cmyk_jpeg(with_icc=False)))
    assert im.mode == "RGB"
    expected = [(0, 255, 255), (255, 0, 255), (255, 255, 0), (0, 0, 0)]
    for got, want in zip(patches(im), expected, strict=True):
        assert close(got, want, 15), (got, want)


@pytest.mark.parametrize("maker", [images.icc_jpeg, images.icc_png])
def test_rgb_icc_profile_is_applied(run, maker) -> None:  # type: ignore[no-untyped-def]
    """Pixels stored as red under a profile whose red primary is sRGB green come out green."""
    result = run(maker(images.rgb_icc(("g", "b", "r"))))
    assert close(variant(result).convert("RGB").getpixel((10, 10)), GREEN, 20)


def test_srgb_profile_keeps_colours(run) -> None:  # type: ignore[no-untyped-def]
    """An image already tagged sRGB keeps its colours."""
    result = run(images.icc_png(images.srgb_icc(), colour=(200, 100, 50)))
    assert close(variant(result).getpixel((10, 10)), (200, 100, 50), 6)


def test_broken_icc_profile_is_ignored(run) -> None:  # type: ignore[no-untyped-def]
    """A profile LittleCMS cannot read is ignored rather than failing the image."""
    result = run(images.icc_png(b"not a profile" * 20, colour=(200, 100, 50)))
    assert close(variant(result).getpixel((10, 10)), (200, 100, 50), 6)


def test_mismatched_icc_profile_is_ignored(run) -> None:  # type: ignore[no-untyped-def]
    """A CMYK profile on an RGB image is ignored."""
    result = run(images.icc_png(images.cmyk_icc(), colour=(200, 100, 50)))
    assert close(variant(result).getpixel((10, 10)), (200, 100, 50), 6)


def test_16_bit_gray_is_scaled_not_clipped(run) -> None:  # type: ignore[no-untyped-def]
    """16-bit grayscale levels map to 8 bits by scale: half is 128, not 255."""
    im = variant(run(images.png16((400, 40), (0, 16384, 32768, 65535))))
    assert im.mode == "L"
    levels = [im.getpixel((x, 20)) for x in (50, 150, 250, 350)]
    for got, want in zip(levels, (0, 64, 128, 255), strict=True):
        assert abs(got - want) <= 3, levels  # type: ignore[operator]


def test_16_bit_rgb_is_scaled_not_clipped(run) -> None:  # type: ignore[no-untyped-def]
    """16-bit RGB samples map to 8 bits by scale."""
    im = variant(run(images.png16_rgb(rgb16=(0, 32896, 65535))))
    assert close(im.getpixel((5, 5)), (0, 128, 255), 6)


@pytest.mark.parametrize("maker", [images.gray_jpeg, images.gray_png])
def test_grayscale_stays_grayscale(run, maker) -> None:  # type: ignore[no-untyped-def]
    """Grayscale input gives a grayscale JPEG of the same level."""
    result = run(maker(level=77))
    im = variant(result)
    assert result.variants[0].content_type == "image/jpeg"
    assert im.mode == "L" and abs(im.getpixel((5, 5)) - 77) <= 2  # type: ignore[operator]


# --- transparency and output format -----------------------------------------------


@pytest.mark.parametrize(
    "maker",
    [images.rgba_png, images.palette_png, images.webp_alpha, images.avif_alpha, images.la_png],
)
def test_transparency_gives_png_with_alpha(run, maker) -> None:  # type: ignore[no-untyped-def]
    """An image with real transparency becomes PNGs that keep an alpha channel."""
    result = run(maker())
    for v in result.variants:
        assert v.content_type == "image/png"
        assert Path(v.path).read_bytes().startswith(b"\x89PNG")
    im = variant(result)
    assert im.mode in ("RGBA", "LA")
    assert im.getextrema()[-1][0] < 255  # type: ignore[index]


def test_palette_transparency_is_in_the_right_place(run) -> None:  # type: ignore[no-untyped-def]
    """The transparent half of a palette PNG stays transparent, the other half opaque."""
    im = variant(run(images.palette_png((64, 64))))
    assert im.getpixel((5, 5))[3] == 0  # type: ignore[index]
    assert im.getpixel((60, 5)) == (0, 200, 0, 255)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_png_variants_hold_the_exact_pixels(run, monkeypatch, mode: str) -> None:  # type: ignore[no-untyped-def]
    """The pipeline's own PNG writer: an image that needs no resizing comes out
    pixel for pixel, whatever its rows hold, across bands of rows, photo-like
    (RLE) or not."""
    from profiled.crunch import pipeline

    monkeypatch.setattr(pipeline, "_PNG_BAND_BYTES", 1000)  # several bands, one row each at least
    noise = Image.frombytes(mode, (97, 61), os.urandom(97 * 61 * len(mode)))
    noise.putalpha(Image.linear_gradient("L").resize((97, 61)))  # every alpha, 0 to 255
    flat = Image.new(mode, (97, 61), (10, 20, 30, 128)[-len(mode) :])
    for source in (noise, flat):
        out = io.BytesIO()
        source.save(out, "PNG")
        for v in run(out.getvalue()).variants:
            assert v.content_type == "image/png"
            im = Image.open(v.path)
            assert im.mode == mode and im.tobytes() == source.tobytes()


def test_opaque_alpha_gives_jpeg(run) -> None:  # type: ignore[no-untyped-def]
    """An alpha channel that is 255 everywhere is dropped: the output is JPEG."""
    result = run(images.rgba_png(alpha=255))
    assert {v.content_type for v in result.variants} == {"image/jpeg"}
    assert variant(result).mode == "RGB"


@pytest.mark.parametrize(
    "maker", [images.jpeg, images.webp_lossy, images.webp_lossless, images.avif, images.gif]
)
def test_opaque_gives_progressive_jpeg(run, maker) -> None:  # type: ignore[no-untyped-def]
    """An opaque image becomes progressive JPEGs (SOF2)."""
    result = run(maker())
    for data, v in zip(raw(result), result.variants, strict=True):
        assert v.content_type == "image/jpeg"
        assert data.startswith(b"\xff\xd8") and b"\xff\xc2" in data and data.endswith(b"\xff\xd9")
        assert Image.open(io.BytesIO(data)).info.get("progressive") == 1


def test_jpeg_quality_is_used(run) -> None:  # type: ignore[no-untyped-def]
    """A lower quality in the spec gives smaller files."""
    data = images.camera_jpeg((800, 600))
    high = run(data, CrunchSpec(jpeg_quality=95)).variants[-1].size
    low = run(data, CrunchSpec(jpeg_quality=40)).variants[-1].size
    assert low < high * 0.7


@pytest.mark.parametrize("maker", [images.animated_gif, images.webp_animated, images.apng])
def test_animation_gives_its_first_frame(run, maker) -> None:  # type: ignore[no-untyped-def]
    """An animated image yields a still of its first frame (red)."""
    result = run(maker())
    assert {v.content_type for v in result.variants} == {"image/jpeg"}
    assert close(variant(result).getpixel((10, 10)), RED, 20)


# --- nothing of the upload goes through ---------------------------------------------

LEAKS = [
    b"Exif",
    b"GPS",
    b"profiled-secret",
    b"http://ns.adobe.com/xap",
    images.SECRET_COMMENT,
    b"PK\x03\x04",
    b"ICC_PROFILE",
    images.TEST_ICC_NAME.encode(),
    b"payload",
]


@pytest.mark.parametrize("maker", [images.metadata_jpeg, images.metadata_png])
def test_metadata_and_payloads_are_stripped(run, maker) -> None:  # type: ignore[no-untyped-def]
    """No EXIF, GPS, XMP, comment, ICC, text chunk or trailing ZIP survives into any variant."""
    result = run(maker())
    for data in raw(result):
        for leak in LEAKS:
            assert leak not in data, leak
        if data.startswith(b"\x89PNG"):
            for chunk in (b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP"):
                assert chunk not in data
            assert data.endswith(b"IEND\xaeB`\x82")
        else:
            assert data.endswith(b"\xff\xd9")
            assert b"\xff\xfe" not in data.split(b"\xff\xda", 1)[0]  # no COM segment
        info = Image.open(io.BytesIO(data)).info
        for key in ("exif", "icc_profile", "comment", "xmp", "Comment"):
            assert key not in info


def test_metadata_jpeg_is_still_converted(run) -> None:  # type: ignore[no-untyped-def]
    """The stripped JPEG keeps its pixels: red top-left quadrant."""
    im = variant(run(images.metadata_jpeg()))
    assert close(im.getpixel((50, 50)), RED, 30)


# --- failures --------------------------------------------------------------------

TRUNCATABLE = {
    "jpeg": lambda: images.camera_jpeg((300, 200)),
    "jpeg_progressive": lambda: images.jpeg((300, 200), progressive=True),
    "png": lambda: images.gradient_png((200, 200)),
    "gif": lambda: images.noise_gif((200, 200)),
    "webp": lambda: images.webp_lossy((200, 200)),
    "avif": lambda: images.avif((200, 200)),
}


@pytest.mark.parametrize("name", sorted(TRUNCATABLE))
def test_truncated_files_are_corrupt(run, name: str) -> None:  # type: ignore[no-untyped-def]
    """Half a file of each format fails as corrupt, never as a half-grey image."""
    assert fails(run, images.truncated(TRUNCATABLE[name]())) == "corrupt"


@pytest.mark.parametrize(
    "maker",
    [
        images.declared_png,
        images.declared_jpeg,
        images.declared_gif,
        images.declared_gif_frame,
        images.declared_webp,
    ],
)
def test_declared_huge_images_fail_before_decoding(run, maker) -> None:  # type: ignore[no-untyped-def]
    """A tiny file declaring 30000x30000 fails on its size, never decoded."""
    assert fails(run, maker()) in ("too_many_pixels", "too_large")


def test_side_limit(run) -> None:  # type: ignore[no-untyped-def]
    """A side over max_side fails as too_large."""
    spec = CrunchSpec(limits=ImageLimits(max_side=100))
    assert fails(run, images.jpeg((101, 10)), spec) == "too_large"


def test_pixel_limit(run) -> None:  # type: ignore[no-untyped-def]
    """More pixels than max_pixels fails as too_many_pixels."""
    spec = CrunchSpec(limits=ImageLimits(max_pixels=99))
    assert fails(run, images.png16((10, 10)), spec) == "too_many_pixels"


@pytest.mark.parametrize("maker", [images.animated_gif, images.webp_animated, images.apng])
def test_frame_limit(run, maker) -> None:  # type: ignore[no-untyped-def]
    """More frames than max_frames fails as too_many_frames."""
    spec = CrunchSpec(limits=ImageLimits(max_frames=1))
    assert fails(run, maker(), spec) == "too_many_frames"


@pytest.mark.parametrize("maker", [images.random_bytes, images.svg, images.html, images.bmp])
def test_foreign_files_are_unsupported(run, maker) -> None:  # type: ignore[no-untyped-def]
    """Random bytes, SVG, HTML and BMP fail as unsupported."""
    assert fails(run, maker()) == "unsupported"


def test_magic_with_garbage_fails(run) -> None:  # type: ignore[no-untyped-def]
    """Allowed magic bytes followed by garbage fail as corrupt (or on a size read from it)."""
    for magic in (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x10\x00\x00WEBP"):
        for seed in range(5):
            reason = fails(run, magic + images.random_bytes(3000, seed))
            assert reason in ("corrupt", "too_many_pixels", "too_large"), magic


def test_format_not_in_spec_is_unsupported(run) -> None:  # type: ignore[no-untyped-def]
    """A format left out of spec.formats fails as unsupported."""
    spec = CrunchSpec(formats=("jpeg", "png"))
    assert fails(run, images.gif(), spec) == "unsupported"


def test_missing_source_is_crashed(tmp_path: Path) -> None:
    """A source file that is not there is the machine's fault: crashed, not corrupt."""
    with pytest.raises(CrunchFailed) as info:
        crunch(str(tmp_path / "nope"), str(tmp_path), CrunchSpec())
    assert info.value.reason == "crashed"


def test_unwritable_output_is_crashed(tmp_path: Path) -> None:
    """An output directory that cannot be written is crashed, not the image's fault."""
    src = tmp_path / "src"
    src.write_bytes(images.jpeg())
    with pytest.raises(CrunchFailed) as info:
        crunch(str(src), str(tmp_path / "missing-dir"), CrunchSpec())
    assert info.value.reason == "crashed"


# --- the types ---------------------------------------------------------------------


def test_crunch_failed_knows_its_reasons() -> None:
    """CrunchFailed refuses a reason outside REASONS and prints reason and detail."""
    assert str(CrunchFailed("timeout", "10 s")) == "timeout: 10 s"
    with pytest.raises(ValueError):
        CrunchFailed("bogus")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"variants": ()},
        {"variants": (("../x", 10),)},
        {"variants": (("a", 10), ("a", 20))},
        {"variants": (("a", 0),)},
        {"mode": "stretch"},
        {"jpeg_quality": 0},
        {"formats": ("bmp",)},
    ],
)
def test_spec_validates(kwargs: dict) -> None:  # type: ignore[type-arg]
    """A spec with bad variants, mode, quality or formats is refused when made."""
    with pytest.raises((ValueError, TypeError)):
        CrunchSpec(**kwargs)


def test_result_reports_source(run) -> None:  # type: ignore[no-untyped-def]
    """The result names the source format and its upright size."""
    result = run(images.webp_lossless((63, 47)))
    assert (result.source_format, result.width, result.height) == ("webp", 63, 47)
    assert [v.name for v in result.variants] == ["default", "small", "large"]
