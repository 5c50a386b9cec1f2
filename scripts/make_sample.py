"""Build the committed photo sample data/sample/ from a local IM2GPS3K copy (run once by maintainers).

Only photos whose Flickr licence is CC BY 2.0 (license_id 4) or CC BY-SA 2.0 (license_id 5) are copied: both allow
redistribution of adapted copies with attribution (and, for BY-SA, under the same licence). Every photo is downscaled
to at most `--max-side` px on its long side (EXIF orientation applied, RGB) and re-encoded as JPEG, at the highest
quality that keeps the whole data/sample folder within `--budget-mb`. The script writes

    data/sample/images/<IMG_ID>      the downscaled photos
    data/sample/metadata.csv         id, file, lat, lon, licence, licence_url, owner, title, datetaken, photo_url
    data/sample/ATTRIBUTION.md       title, owner, licence deed and photo page of every photo, and the change made

Usage: python scripts/make_sample.py [--src ../shared/data/im2gps3k] [--out data/sample]
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
from pathlib import Path

from PIL import Image, ImageOps

# Flickr licence id -> (short name, deed URL). Only these may be redistributed in the repository.
ALLOWED_LICENCES = {
    "4": ("CC BY 2.0", "https://creativecommons.org/licenses/by/2.0/"),
    "5": ("CC BY-SA 2.0", "https://creativecommons.org/licenses/by-sa/2.0/"),
}
COLUMNS = ["id", "file", "lat", "lon", "licence", "licence_url", "owner", "title", "datetaken", "photo_url"]
QUALITIES = (90, 85, 80, 75, 70, 65, 60)


def photo_url(owner: str, img_id: str) -> str:
    """The Flickr photo page: the photo id is the first underscore-separated part of IMG_ID."""
    return f"https://www.flickr.com/photos/{owner}/{img_id.split('_')[0]}"


def select_rows(src: Path) -> list[dict]:
    """Rows of images.csv whose licence allows redistribution (BY / BY-SA), sorted by IMG_ID."""
    with open(src / "images.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["license_id"] in ALLOWED_LICENCES]
    return sorted(rows, key=lambda r: r["IMG_ID"])


def downscale(path: Path, max_side: int) -> Image.Image:
    """Open, apply EXIF orientation, convert to RGB and shrink to at most max_side on the long side."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return im


def encode(images: dict[str, Image.Image], quality: int) -> dict[str, bytes]:
    out = {}
    for name, im in images.items():
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality, optimize=True, progressive=True)
        out[name] = buf.getvalue()
    return out


def write_metadata(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            name, url = ALLOWED_LICENCES[r["license_id"]]
            w.writerow({
                "id": Path(r["IMG_ID"]).stem, "file": r["IMG_ID"], "lat": r["LAT"], "lon": r["LON"],
                "licence": name, "licence_url": url, "owner": r["owner"], "title": r["title"],
                "datetaken": r["datetaken"], "photo_url": photo_url(r["owner"], r["IMG_ID"]),
            })


def write_attribution(rows: list[dict], path: Path, max_side: int, quality: int) -> None:
    lines = [
        "# Attribution",
        "",
        "The photos in `images/` come from the IM2GPS3K benchmark (Vo, Jacobs and Hays, 2017), originally published on",
        "Flickr by the owners named below. Only photos licensed CC BY 2.0 or CC BY-SA 2.0 are included.",
        "",
        (
            f"**Changes made:** every photo was downscaled to at most {max_side} px on its long side, rotated "
            f"upright according to its EXIF orientation, converted to RGB and re-encoded as JPEG (quality {quality}); "
            "its metadata (EXIF) was not kept. No other change was made. The adapted CC BY-SA 2.0 photos are shared "
            "under CC BY-SA 2.0."
        ),
        "",
        f"{len(rows)} photos:",
        "",
    ]
    for r in rows:
        name, url = ALLOWED_LICENCES[r["license_id"]]
        title = r["title"].strip().replace("\n", " ") or "(untitled)"
        lines.append(
            f"- `{r['IMG_ID']}`: \"{title}\" by {r['owner']} ({photo_url(r['owner'], r['IMG_ID'])}), "
            f"licensed [{name}]({url})"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=Path("../shared/data/im2gps3k"))
    ap.add_argument("--out", type=Path, default=Path("data/sample"))
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--budget-mb", type=float, default=10.0, help="limit for the whole output folder (1 MB = 10^6 B)")
    args = ap.parse_args(argv)
    if args.max_side > 512:
        raise SystemExit("--max-side must be <= 512")

    rows = select_rows(args.src)
    missing = [r["IMG_ID"] for r in rows if not (args.src / "images" / r["IMG_ID"]).is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} selected images are missing from {args.src / 'images'}: {missing[:5]}")
    budget = int(args.budget_mb * 1_000_000)

    max_side = args.max_side
    while True:
        images = {r["IMG_ID"]: downscale(args.src / "images" / r["IMG_ID"], max_side) for r in rows}
        for quality in QUALITIES:
            data = encode(images, quality)
            # Leave room for metadata.csv and ATTRIBUTION.md (well under 100 kB).
            if sum(map(len, data.values())) + 100_000 <= budget:
                break
        else:
            max_side = int(max_side * 0.85)
            print(f"does not fit at quality {QUALITIES[-1]}; trying max side {max_side}")
            continue
        break

    if args.out.exists():
        shutil.rmtree(args.out)
    (args.out / "images").mkdir(parents=True)
    for name, blob in data.items():
        (args.out / "images" / name).write_bytes(blob)
    write_metadata(rows, args.out / "metadata.csv")
    write_attribution(rows, args.out / "ATTRIBUTION.md", max_side, quality)
    total = folder_bytes(args.out)
    by_licence = {ALLOWED_LICENCES[k][0]: sum(r["license_id"] == k for r in rows) for k in ALLOWED_LICENCES}
    print(f"{len(rows)} photos {by_licence}, max side {max_side}, JPEG quality {quality}, "
          f"{args.out} = {total / 1e6:.2f} MB")
    if total > budget:
        raise SystemExit(f"{args.out} is {total} bytes, over the {budget}-byte budget")


if __name__ == "__main__":
    main()
