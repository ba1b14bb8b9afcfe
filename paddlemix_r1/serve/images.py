"""``image_url`` parts -> decoded PIL images, or an ``APIError`` saying why not.

Accepted: ``data:image/...;base64,...`` URLs, and local files (``file:///abs/path``, an absolute path,
or a path relative to the allowed root) that resolve (symlinks followed) inside ``allowed_root``.
Refused: http(s) URLs (the server does not fetch from the network), local paths when no root is
configured or outside it, and anything that does not decode as an image.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from paddlemix_r1.serve.schemas import APIError

# Errors PIL raises on truncated, corrupt or oversized (decompression bomb) input.
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def load_image_url(url: str, allowed_root: str | None, param: str) -> Image.Image:
    """Decode one image; ``param`` (e.g. "messages.0.content.1.image_url.url") names it in errors."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return _decode(_data_url_bytes(url, param), param)
    if scheme in ("http", "https"):
        raise APIError(400, f"{param}: remote image URLs are not fetched by this server; send the image as a "
                            "base64 data URL (data:image/png;base64,...) or a path under its allowed root",
                       param=param, code="invalid_image_url")
    if scheme == "file":
        path = unquote(urlparse(url).path)
    elif scheme and len(scheme) > 1:  # "c:" is a drive letter, not a scheme
        raise APIError(400, f"{param}: unsupported image URL scheme {scheme!r}", param=param, code="invalid_image_url")
    else:
        path = url
    return _decode(_read_local(path, allowed_root, param), param)


def _data_url_bytes(url: str, param: str) -> bytes:
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise APIError(400, f"{param}: a data URL must look like data:image/<type>;base64,<data>", param=param,
                       code="invalid_image_url")
    mime = header[len("data:"):-len(";base64")].lower()
    if mime and not mime.startswith("image/"):
        raise APIError(400, f"{param}: data URL media type {mime!r} is not an image", param=param,
                       code="invalid_image_url")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise APIError(400, f"{param}: the data URL is not valid base64 ({e})", param=param,
                       code="invalid_image") from None


def _read_local(path: str, allowed_root: str | None, param: str) -> bytes:
    if allowed_root is None:
        raise APIError(403, f"{param}: local image paths are disabled; start the server with --allowed_root DIR "
                            "or send the image as a data URL", type="permission_error", param=param,
                       code="local_path_refused")
    root = os.path.realpath(allowed_root)
    resolved = os.path.realpath(os.path.join(root, path))  # an absolute path replaces root in the join
    if os.path.commonpath([root, resolved]) != root:
        raise APIError(403, f"{param}: {path!r} is outside the allowed root", type="permission_error", param=param,
                       code="local_path_refused")
    if not os.path.isfile(resolved):
        raise APIError(400, f"{param}: image file not found: {path!r}", param=param, code="invalid_image")
    with open(resolved, "rb") as f:
        return f.read()


def _decode(data: bytes, param: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # Image.open only reads the header; decode now so a broken file fails here
    except _DECODE_ERRORS as e:
        raise APIError(400, f"{param}: the image could not be decoded ({type(e).__name__}: {e})", param=param,
                       code="invalid_image") from None
    return image
