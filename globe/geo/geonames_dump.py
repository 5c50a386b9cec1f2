"""GeoNames full dumps: points of interest (mountains, water, parks, spots, buildings) for users who have them.

The packaged data knows towns and famous features; points of interest need the GeoNames dumps. They are a
one-time download outside the default profile (a few hundred MB for `allCountries.zip`, a few MB for most
countries), then offline:

    python -m globe.geo.geonames_dump --to ~/geonames US FR IT        # per-country files, + alternateNamesV2
    python -m globe.geo.geonames_dump --to ~/geonames allCountries
    export GLOBE_GEONAMES_DIR=~/geonames                             # the gazetteer loads them into its index

Files read from `$GLOBE_GEONAMES_DIR` (the dump format, https://download.geonames.org/export/dump/readme.txt):
`allCountries.zip` / `.txt` or per-country `XX.zip` / `XX.txt` (tab-separated: geonameid, name, asciiname,
alternatenames, latitude, longitude, feature class, feature code, country code, cc2, admin1 ... modification
date), and optionally `alternateNamesV2.zip` / `.txt` (alternateNameId, geonameid, isolanguage, alternate name,
isPreferredName, isShortName, isColloquial, isHistoric, from, to). Only feature classes T (mountain, hill, rock),
H (stream, lake, waterfall), L (park, area) and S (spot, building, farm) are kept: populated places come from
GeoNames cities500 already. The gazetteer's cache key includes every file's name, size and modification time, so
adding or replacing a dump rebuilds the index once.

GeoNames data is licensed CC BY 4.0 (attribution: GeoNames, https://www.geonames.org).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

DUMP_ENV = "GLOBE_GEONAMES_DIR"
CLASSES = ("T", "H", "L", "S")
BASE_URL = "https://download.geonames.org/export/dump/"
GEONAMES_COLUMNS = ["geonameid", "name", "asciiname", "alternatenames", "lat", "lon", "fclass", "fcode",
                    "country_code", "cc2", "admin1", "admin2", "admin3", "admin4", "population", "elevation", "dem",
                    "timezone", "modified"]
KEEP = ["geonameid", "name", "alternatenames", "lat", "lon", "fclass", "fcode", "country_code", "admin1"]
# Alternate names of these "languages" are codes or links, not names.
NOT_NAMES = {"link", "post", "iata", "icao", "faac", "tcid", "unlc", "wkdt", "abbr"}


def dump_dir() -> Path | None:
    """`$GLOBE_GEONAMES_DIR` when set (None otherwise); a set but missing directory is an error, not a silent skip."""
    d = os.environ.get(DUMP_ENV)
    if not d:
        return None
    p = Path(d).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{DUMP_ENV}={d!r} is not a directory; unset it or download the dumps (see "
                                "python -m globe.geo.geonames_dump --help)")
    return p


def dump_files(directory: Path) -> tuple[list[Path], Path | None]:
    """(geography dump files, alternate-names file or None) in `directory`: .zip preferred over .txt of one name."""
    def pick(stem: str) -> Path | None:
        for ext in (".zip", ".txt"):
            if (directory / f"{stem}{ext}").is_file():
                return directory / f"{stem}{ext}"
        return None

    stems = sorted({p.stem for p in directory.iterdir() if p.suffix in (".zip", ".txt")})
    geo = [pick(s) for s in stems if s == "allCountries" or (len(s) == 2 and s.isupper())]
    return [p for p in geo if p is not None], pick("alternateNamesV2")


def fingerprint(directory: Path | None) -> str:
    """A short key over the dump files' names, sizes and modification times ('' without dumps)."""
    import hashlib

    if directory is None:
        return ""
    files, alt = dump_files(directory)
    h = hashlib.sha1()
    for p in [*files, *([alt] if alt else [])]:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)};".encode())
    return h.hexdigest()[:12]


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".zip":
        zf = zipfile.ZipFile(path)
        inner = [n for n in zf.namelist() if n.endswith(".txt") and not n.lower().startswith("readme")]
        if len(inner) != 1:
            raise ValueError(f"{path}: expected one data .txt inside, found {inner}")
        return io.TextIOWrapper(zf.open(inner[0]), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_dump(files: list[Path], classes: tuple[str, ...] = CLASSES):
    """Rows of the feature classes `classes` from GeoNames dump files, as a DataFrame (columns KEEP)."""
    import pandas as pd

    frames = []
    for path in files:
        with _open_text(path) as f:
            try:
                for chunk in pd.read_csv(f, sep="\t", header=None, names=GEONAMES_COLUMNS, usecols=KEEP, dtype=str,
                                         keep_default_na=False, quoting=3, chunksize=500_000):
                    frames.append(chunk[chunk["fclass"].isin(classes)])
            except pd.errors.ParserError as e:
                raise ValueError(f"{path}: not a GeoNames dump ({len(GEONAMES_COLUMNS)} tab-separated columns): "
                                 f"{e}") from None
    if not frames:
        return pd.DataFrame(columns=KEEP)
    df = pd.concat(frames, ignore_index=True).drop_duplicates("geonameid")
    df["geonameid"] = df["geonameid"].astype(np.int64)
    df["lat"] = pd.to_numeric(df["lat"], errors="coerce")
    df["lon"] = pd.to_numeric(df["lon"], errors="coerce")
    ok = df["lat"].between(-90, 90) & df["lon"].between(-180, 180) & (df["name"].str.len() > 0)
    return df[ok].reset_index(drop=True)


def read_alternate_names(path: Path, ids: set[int]) -> dict[int, list[str]]:
    """geonameid -> alternate names from alternateNamesV2 for the given ids (codes, links and postcodes skipped)."""
    import pandas as pd

    out: dict[int, list[str]] = {}
    cols = ["altid", "geonameid", "lang", "name", "preferred", "short", "colloquial", "historic", "from", "to"]
    with _open_text(path) as f:
        try:
            for chunk in pd.read_csv(f, sep="\t", header=None, names=cols, usecols=["geonameid", "lang", "name"],
                                     dtype=str, keep_default_na=False, quoting=3, chunksize=1_000_000):
                chunk = chunk[~chunk["lang"].isin(NOT_NAMES)]
                gid = chunk["geonameid"].astype(np.int64)
                keep = gid.isin(ids)
                for g, n in zip(gid[keep], chunk["name"][keep]):
                    out.setdefault(int(g), []).append(n)
        except pd.errors.ParserError as e:
            raise ValueError(f"{path}: not a GeoNames alternateNamesV2 file ({len(cols)} columns): {e}") from None
    return out


def download(names: list[str], dest: Path, alternate_names: bool = True) -> list[Path]:
    """Download dump files (country codes or 'allCountries', plus alternateNamesV2) into `dest`. Needs network."""
    from urllib.request import urlretrieve

    dest.mkdir(parents=True, exist_ok=True)
    got = []
    for n in [*names, *(["alternateNamesV2"] if alternate_names else [])]:
        target = dest / f"{n}.zip"
        tmp = target.with_suffix(".zip.part")
        print(f"downloading {BASE_URL}{n}.zip -> {target}", file=sys.stderr)
        urlretrieve(f"{BASE_URL}{n}.zip", tmp)
        os.replace(tmp, target)
        got.append(target)
    return got


def download_cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m globe.geo.geonames_dump", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", help="ISO country codes (US FR ...) or allCountries")
    ap.add_argument("--to", required=True, help="directory to download into (then set GLOBE_GEONAMES_DIR to it)")
    ap.add_argument("--no-alternate-names", action="store_true", help="skip alternateNamesV2.zip (~200 MB)")
    args = ap.parse_args(argv)
    bad = [n for n in args.names if n != "allCountries" and not (len(n) == 2 and n.isalpha())]
    if bad:
        ap.error(f"not a country code or allCountries: {bad}")
    download([n if n == "allCountries" else n.upper() for n in args.names], Path(args.to).expanduser(),
             alternate_names=not args.no_alternate_names)
    print(f"done; now: export {DUMP_ENV}={args.to}")
    return 0


if __name__ == "__main__":
    sys.exit(download_cli())
