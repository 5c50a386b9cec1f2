"""The geocoder on its realistic test set: share of answers resolved within 25 km of the expected entry, by category.

    python scripts/geo_places_report.py [--places tests/data/geo_places.csv] [--json out.json] [--misses]

Uses only `globe.geo.geocode` and `globe.geo.haversine_km`, so the same command measures any version of the
package (run it with PYTHONPATH pointing at another checkout to get its figure on this set). The expected
coordinates come from the data sources (see scripts/make_geo_places.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def report(places: Path, km: float = 25.0) -> tuple[dict, list[dict]]:
    import numpy as np
    import pandas as pd

    from globe.geo import geocode, haversine_km

    df = pd.read_csv(places, keep_default_na=False, dtype=str)
    rows = []
    for r in df.to_dict("records"):
        g = geocode(r["text"])
        ok = bool(np.isfinite(g.lat)) and haversine_km(float(r["lat"]), float(r["lon"]), g.lat, g.lon) <= km
        rows.append({**r, "got_level": g.level, "got": g.matched, "within": ok})
    out = pd.DataFrame(rows)
    by = out.groupby("case")["within"].agg(["mean", "size"])
    table = {c: {"share": float(m), "n": int(n)} for c, (m, n) in by.iterrows()}
    table["ALL"] = {"share": float(out["within"].mean()), "n": len(out)}
    return table, [r for r in rows if not r["within"]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--places", default=str(ROOT / "tests" / "data" / "geo_places.csv"))
    ap.add_argument("--json", default=None, help="write the table here")
    ap.add_argument("--misses", action="store_true", help="list the answers that missed")
    args = ap.parse_args()
    table, misses = report(Path(args.places))
    import globe

    print(f"globe from {Path(globe.__file__).parent}")
    print(f"{'category':<22}{'n':>5}{'within 25 km':>15}")
    for c, v in table.items():
        print(f"{c:<22}{v['n']:>5}{100 * v['share']:>14.1f}%")
    if args.misses:
        for m in misses:
            print(f"  MISS [{m['case']}] {m['text']!r}: expected {m['expected']} ({m['level']}), got {m['got_level']}"
                  f" {m['got']!r}")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
