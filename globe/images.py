"""The one image loader: any image source -> an upright RGB PIL image, safely.

Every stage opens photos through `load_image` (ingest, teachers, the reward model and its server, evaluation), so a
photo looks the same to all of them: EXIF orientation applied, every pixel mode converted to RGB (alpha composited on
white), images over `max_pixels` refused before they are decoded (decompression bombs), truncated or undecodable data
refused with a reason (`ImageRejected.reason`, a key of `IMAGE_REJECT_REASONS`).
"""

from __future__ import annotations

import base64
import io
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image as PILImage

DEFAULT_MAX_PIXELS = 100_000_000

IMAGE_REJECT_REASONS: dict[str, str] = {
    "missing_file": "the image file does not exist",
    "corrupt_image": "not a decodable image",
    "truncated_image": "the file ends before the image data does",
    "too_large": "more pixels than max_pixels (decompression-bomb guard)",
    "unsupported_mode": "a pixel format that cannot be converted to RGB",
}

# Qwen2.5-VL merges 2x2 patches of 14 px: an image side below 28 px cannot be processed.
MIN_SIDE = 28
MAX_ASPECT = 150  # Qwen's smart_resize refuses aspect ratios above 200


class ImageRejected(ValueError):
    """An image that cannot be used; `reason` is a key of IMAGE_REJECT_REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in IMAGE_REJECT_REASONS:
            raise ValueError(f"unknown image reject reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def to_rgb(im: PILImage.Image) -> PILImage.Image:
    """Any Pillow mode -> RGB: alpha composited on white, 16/32-bit and float scaled to 8 bits, CMYK via its ICC."""
    import numpy as np
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257.0  # 16-bit range -> 8-bit (values stored as 'I' by some PNG/TIFF decoders)
        elif im.mode == "F" and a.max(initial=0) <= 1.0:
            a = a * 255.0  # float images in [0, 1]
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if im.mode == "La":
        im = im.convert("LA")  # premultiplied alpha: Pillow converts it to RGBA only via LA
    if im.mode in ("LA", "RGBa", "PA"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        white = Image.new("RGB", im.size, (255, 255, 255))
        white.paste(im, mask=im.getchannel("A"))
        return white
    if im.mode == "CMYK" and im.info.get("icc_profile"):
        from PIL import ImageCms

        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
            return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: fall back to Pillow's plain conversion below
    try:
        return im.convert("RGB")
    except ValueError as e:
        raise ImageRejected("unsupported_mode", f"mode {im.mode}: {e}") from e


def _source_bytes(source: Any) -> bytes | str | os.PathLike | None:
    """Encoded image data or a path for the sources that need decoding; None for in-memory images."""
    if isinstance(source, Mapping):  # a `datasets` Image value: {"bytes": ..., "path": ...}
        if source.get("bytes"):
            return bytes(source["bytes"])
        if source.get("path"):
            return source["path"]
        raise ImageRejected("corrupt_image", "image dict has neither bytes nor path")
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, str) and source.startswith("data:"):
        try:
            return base64.b64decode(source.split(",", 1)[1], validate=True)
        except (IndexError, ValueError) as e:
            raise ImageRejected("corrupt_image", "malformed base64 data URL") from e
    if isinstance(source, (str, os.PathLike)):
        return source
    return None


def _decode(data: bytes | str | os.PathLike, max_pixels: int, max_side: int | None) -> PILImage.Image:
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(data, bytes):
        fp: Any = io.BytesIO(data)
    else:
        if not Path(data).is_file():
            raise ImageRejected("missing_file", str(data))
        fp = data
    try:
        with warnings.catch_warnings():
            # We apply our own pixel cap below; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageRejected("too_large", f"{w}x{h} = {w * h} pixels > max_pixels {max_pixels}")
                if max_side and im.format == "JPEG":
                    im.draft(im.mode, (max_side, max_side))  # decode at a reduced scale: much faster
                im.load()
                return to_rgb(ImageOps.exif_transpose(im))
    except ImageRejected:
        raise
    except Image.DecompressionBombError as e:
        raise ImageRejected("too_large", str(e)) from e
    except UnidentifiedImageError as e:
        raise ImageRejected("corrupt_image", "not a recognised image format") from e
    except (OSError, EOFError, SyntaxError, ValueError) as e:
        msg = str(e)
        reason = "truncated_image" if isinstance(e, EOFError) or "truncat" in msg.lower() else "corrupt_image"
        raise ImageRejected(reason, f"{type(e).__name__}: {msg}") from e


def load_image(source: Any, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> PILImage.Image:
    """An upright RGB PIL image from a path, bytes, a `datasets` image dict, a base64 data URL, a PIL image or an
    array; raises `ImageRejected` (a ValueError) for one that cannot be used.

    With `max_side`, the image is shrunk to at most that many pixels on its long side.
    """
    from PIL import Image, ImageOps

    if source is None:
        raise ImageRejected("corrupt_image", "no image (None)")
    data = _source_bytes(source)
    if data is not None:
        im = _decode(data, max_pixels, max_side)
    else:
        if isinstance(source, Image.Image):
            im = source
        elif hasattr(source, "__array__"):
            import numpy as np

            try:
                im = Image.fromarray(np.asarray(source))
            except (TypeError, ValueError) as e:
                raise ImageRejected("unsupported_mode", f"array: {e}") from e
        else:
            raise ImageRejected("corrupt_image", f"not an image: {type(source).__name__}")
        w, h = im.size
        if w * h > max_pixels:
            raise ImageRejected("too_large", f"{w}x{h} = {w * h} pixels > max_pixels {max_pixels}")
        im = to_rgb(ImageOps.exif_transpose(im))
    return shrink(im, max_side)


def shrink(im: PILImage.Image, max_side: int | None) -> PILImage.Image:
    """At most `max_side` pixels on the long side (aspect kept; a copy when shrunk, the image itself otherwise)."""
    from PIL import Image

    if not max_side or max(im.size) <= max_side:
        return im
    im = im.copy()
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return im


def fit_image(img: PILImage.Image, max_pixels: int | None) -> PILImage.Image:
    """Downscale to at most `max_pixels` (aspect kept); pad degenerate shapes up to what Qwen's processor accepts."""
    from PIL import Image

    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        scale = math.sqrt(max_pixels / (w * h))
        w, h = max(1, int(w * scale)), max(1, int(h * scale))
        img = img.resize((w, h), Image.BICUBIC)
    if min(w, h) < MIN_SIDE or max(w, h) > MAX_ASPECT * min(w, h):
        # A sliver or a thumbnail: paste it on a grey canvas of a processable shape rather than fail the whole batch.
        cw, ch = max(w, MIN_SIDE, -(-h // MAX_ASPECT)), max(h, MIN_SIDE, -(-w // MAX_ASPECT))
        canvas = Image.new("RGB", (cw, ch), (128, 128, 128))
        canvas.paste(img, (0, 0))
        img = canvas
    return img


def encode_jpeg(im: PILImage.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def to_data_url(image: Any, fmt: str = "JPEG", *, max_side: int | None = None, max_pixels: int | None = None,
                quality: int = 90) -> str:
    """An image (any `load_image` source) as a base64 data URL, what OpenAI-compatible chat endpoints take."""
    img = load_image(image, max_side=max_side)
    if max_pixels is not None:
        img = fit_image(img, max_pixels)
    fmt = fmt.upper()
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    mime = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}.get(fmt, f"image/{fmt.lower()}")
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
