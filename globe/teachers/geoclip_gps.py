"""`geoclip`: GeoCLIP (the paper's third teacher), a GPS point and its confidence per photo instead of text.

Its answers are cached like the others' (`gps_answer` writes them, `parse_gps` reads them); distillation's `geoclip`
filter checks the VLM teachers' answers against them. Its image backbone comes from the hub, so the default profile
and the tests use a tiny random stand-in built offline (`globe.tiny.build_tiny_geoclip`).
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from globe.images import load_image, shrink
from globe.teachers.base import Request, Response, Sampling, Teacher, TeacherError

GEOCLIP_DEFAULT = "geoclip"  # the package's own weights (image backbone openai/clip-vit-large-patch14 from the hub)


def gps_answer(lat: float, lon: float, confidence: float) -> str:
    """The cached text of a GeoCLIP answer."""
    return f"lat: {lat:.6f}\nlon: {lon:.6f}\nconfidence: {confidence:.6g}"


_GPS = re.compile(r"lat:\s*(-?[\d.]+)\s*\nlon:\s*(-?[\d.]+)\s*\nconfidence:\s*([\d.eE+-]+)")


def parse_gps(text: str | None) -> tuple[float, float, float] | None:
    """(lat, lon, confidence) from a GeoCLIP answer, or None."""
    m = _GPS.search(text or "")
    if not m:
        return None
    lat, lon, conf = (float(g) for g in m.groups())
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and 0 <= conf <= 1):
        return None
    return lat, lon, conf


class GeoCLIPTeacher(Teacher):
    """GeoCLIP (Vivanco et al., NeurIPS 2023) through the `geoclip` package: the top-1 point of its GPS gallery and
    that point's softmax probability as the confidence, per photo.

    `model`: "geoclip" (the package's weights; its CLIP backbone from the hub), a hub id or folder of a GeoCLIP
    release (`GeoCLIP.from_pretrained`), or a folder with a `clip/` backbone beside GeoCLIP weights (what
    `globe.tiny.build_tiny_geoclip` writes). The gallery's location features are computed once and photos are
    scored in batches (the package's `predict` takes one path and re-encodes the whole gallery each time).
    """

    kinds = ("gps",)

    def __init__(self, name: str = "geoclip", model: str = GEOCLIP_DEFAULT, batch_size: int = 32, device: str = "auto",
                 max_image_side: int | None = 512, gallery_batch: int = 8192, sampling: Sampling = Sampling()):
        if importlib.util.find_spec("geoclip") is None:
            raise TeacherError(f"teacher {name!r} uses backend 'geoclip' but the geoclip package is not installed "
                               "(pip install geoclip, or pip install '.[paper]')")
        if batch_size < 1 or gallery_batch < 1:
            raise TeacherError(f"teacher {name!r}: batch_size and gallery_batch must be >= 1")
        self.name, self.model_path, self.batch_size, self.device = name, str(model), int(batch_size), device
        self.max_image_side, self.gallery_batch, self.sampling = max_image_side, int(gallery_batch), sampling
        self._model = self._gallery_features = None

    def identity(self) -> dict:
        from importlib.metadata import version

        from globe.cache import files_digest

        return {"backend": "geoclip", "model": self.model_path, "model_digest": files_digest(self.model_path),
                "geoclip": version("geoclip"), "max_image_side": self.max_image_side}

    def _load(self):
        if self._model is not None:
            return self._model
        import torch
        from geoclip import GeoCLIP

        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        path = Path(self.model_path)
        if self.model_path == GEOCLIP_DEFAULT:
            model = GeoCLIP()
        elif (path / "clip").is_dir():
            model = _local_geoclip(path)
        else:
            model = GeoCLIP.from_pretrained(self.model_path)
        self._model = model.to(device).eval()
        with torch.inference_mode():
            gallery = self._model.gps_gallery.to(device)
            feats = [self._model.location_encoder(gallery[i:i + self.gallery_batch])
                     for i in range(0, len(gallery), self.gallery_batch)]
            self._gallery_features = torch.nn.functional.normalize(torch.cat(feats), dim=1)
        return self._model

    def locate(self, images: Sequence[Any]) -> list[tuple[float, float, float]]:
        """(lat, lon, confidence) of the most probable gallery point for each image."""
        import torch

        model = self._load()
        device = self._gallery_features.device
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = [shrink(load_image(im), self.max_image_side) for im in images[start:start + self.batch_size]]
            with torch.inference_mode():
                pixels = model.image_encoder.preprocess_image(batch).to(device)
                feats = torch.nn.functional.normalize(model.image_encoder(pixels), dim=1)
                probs = (model.logit_scale.exp() * feats @ self._gallery_features.T).softmax(dim=-1)
                conf, idx = probs.max(dim=-1)
            points = model.gps_gallery[idx.cpu()]
            out += [(float(p[0]), float(p[1]), float(c)) for p, c in zip(points, conf.cpu())]
        return out

    def complete(self, requests: Sequence[Request]) -> list[Response]:
        t0 = time.perf_counter()
        out: list[Response | None] = [None] * len(requests)
        ok, images = [], []
        for i, r in enumerate(requests):
            try:
                images.append(load_image(r.image))
                ok.append(i)
            except Exception as e:  # noqa: BLE001 - one bad photo is its own error, counted by the caller
                out[i] = Response(text="", meta={"backend": "geoclip"}, error=f"{type(e).__name__}: {e}"[:300])
        if images:
            located = self.locate(images)
            per = round((time.perf_counter() - t0) / len(images), 4)
            for i, (lat, lon, conf) in zip(ok, located):
                out[i] = Response(text=gps_answer(lat, lon, conf),
                                  meta={"backend": "geoclip", "model": self.model_path, "latency_s": per})
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self._model = self._gallery_features = None


def _local_geoclip(path: Path):
    """A GeoCLIP from a folder: `clip/` (the image backbone), `model.safetensors` (location encoder, image MLP,
    logit scale, in the release's key layout), `config.json` (`sigma`, `gallery_file`)."""
    import torch
    from geoclip import GeoCLIP, LocationEncoder
    from safetensors.torch import load_file

    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    model = GeoCLIP(from_pretrained=False, clip_path=str(path / "clip"))
    if list(config.get("sigma", model.location_encoder.sigma)) != list(model.location_encoder.sigma):
        model.location_encoder = LocationEncoder(sigma=config["sigma"], from_pretrained=False)
    weights = load_file(str(path / "model.safetensors"))
    for prefix, module in (("location_encoder.", model.location_encoder),
                           ("image_encoder.mlp.", model.image_encoder.mlp)):
        module.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}, strict=True)
    with torch.no_grad():
        model.logit_scale.copy_(weights["logit_scale"])
    import pandas as pd

    gallery = pd.read_csv(path / config["gallery_file"])[["LAT", "LON"]].to_numpy(dtype="float32")
    model.gps_gallery = torch.from_numpy(gallery)
    return model
