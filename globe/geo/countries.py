"""Country and region name tables: aliases, many-language names (CLDR through `babel`), region abbreviations.

`build_country_index` turns GeoNames' country table into a normalised name -> ISO alpha-2 index, in order of
authority (earlier entries win a clash): GeoNames' and globe's display names, the curated `COUNTRY_ALIASES` (as
models and people write them: "USA", "UK", "Holland", "DRC"), ISO 3166 names from `pycountry` (official and
common names, "Korea, Republic of" also as "Republic of Korea"), then the CLDR territory names of every language
`babel` ships ("日本", "Ísland", "Deutschland", "Nederland"). A CLDR name shared by two countries in different
languages ("Kongo") is left out, and so is one that equals the primary name of a GeoNames place of at least
`CLDR_CITY_CLASH` people (a city name must keep reading as the city).

Region abbreviations (`REGION_CODES`) are the postal codes of US states, Canadian provinces and territories and
Australian states and territories, recognised only as a whole part of an answer ("Austin, TX", "Perth, WA").
A code may name regions of several countries ("WA": Washington, Western Australia); the resolver keeps the
reading its city agrees with.
"""

from __future__ import annotations

from functools import lru_cache

from globe.geo.names import normalize

CONTINENTS = {
    "AF": "Africa",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
    "AN": "Antarctica",
}

# Countries without any GeoNames populated place: a fixed representative point (lat, lon).
FALLBACK_POINTS = {
    "AQ": (-77.85, 166.67),  # McMurdo Station, where most people in Antarctica are
    "BV": (-54.42, 3.36),
    "HM": (-53.10, 73.51),
    "UM": (19.28, 166.65),  # Wake Island
}

# Display names where GeoNames' short name is not the common English one.
DISPLAY_NAMES = {"NL": "Netherlands", "PS": "Palestine", "TL": "Timor-Leste", "BQ": "Bonaire, Sint Eustatius and Saba"}

# Defunct GeoNames codes that would only create ambiguity.
DROP_COUNTRIES = {"CS", "AN"}

# Territories GeoNames files under their own code, accepted where the answer names the sovereign country.
PARENT = {
    "HK": "CN", "MO": "CN", "PR": "US", "GU": "US", "VI": "US", "AS": "US", "MP": "US", "UM": "US",
    "GL": "DK", "FO": "DK", "RE": "FR", "GP": "FR", "MQ": "FR", "GF": "FR", "YT": "FR", "NC": "FR", "PF": "FR",
    "PM": "FR", "BL": "FR", "MF": "FR", "WF": "FR", "AW": "NL", "CW": "NL", "SX": "NL", "BQ": "NL", "GI": "GB",
    "BM": "GB", "KY": "GB", "VG": "GB", "IM": "GB", "JE": "GB", "GG": "GB", "FK": "GB", "MS": "GB", "TC": "GB",
    "AI": "GB", "AX": "FI", "SJ": "NO", "CX": "AU", "CC": "AU", "NF": "AU", "CK": "NZ", "NU": "NZ", "TK": "NZ",
}

# Aliases the ISO and GeoNames tables lack, as models and people write them.
COUNTRY_ALIASES: dict[str, str] = {
    "usa": "US", "u s a": "US", "us": "US", "u s": "US", "america": "US", "united states of america": "US",
    "the united states": "US", "united states": "US", "the us": "US", "the usa": "US",
    "uk": "GB", "u k": "GB", "britain": "GB", "great britain": "GB", "england": "GB", "scotland": "GB",
    "wales": "GB", "northern ireland": "GB", "united kingdom of great britain and northern ireland": "GB",
    "holland": "NL", "the netherlands": "NL", "netherlands": "NL", "nederland": "NL",
    "czech republic": "CZ", "czechia": "CZ", "bohemia": "CZ",
    "south korea": "KR", "korea": "KR", "republic of korea": "KR", "korea south": "KR",
    "north korea": "KP", "dprk": "KP", "korea north": "KP",
    "ivory coast": "CI", "cote divoire": "CI",
    "russia": "RU", "russian federation": "RU", "iran": "IR", "persia": "IR", "vietnam": "VN", "viet nam": "VN",
    "laos": "LA", "syria": "SY", "taiwan": "TW", "republic of china": "TW", "bolivia": "BO", "venezuela": "VE",
    "tanzania": "TZ", "moldova": "MD", "macedonia": "MK", "north macedonia": "MK", "fyrom": "MK",
    "burma": "MM", "myanmar": "MM", "swaziland": "SZ", "eswatini": "SZ", "cape verde": "CV", "cabo verde": "CV",
    "east timor": "TL", "timor leste": "TL", "drc": "CD", "dr congo": "CD", "congo kinshasa": "CD",
    "democratic republic of congo": "CD", "zaire": "CD", "congo brazzaville": "CG", "republic of congo": "CG",
    "congo": "CG", "vatican": "VA", "vatican city": "VA", "holy see": "VA", "palestine": "PS",
    "palestinian territories": "PS", "west bank": "PS", "gaza": "PS", "uae": "AE", "emirates": "AE",
    "turkey": "TR", "turkiye": "TR", "brunei": "BN", "micronesia": "FM", "ceylon": "LK", "siam": "TH",
    "kampuchea": "KH", "prc": "CN", "peoples republic of china": "CN", "mainland china": "CN",
    "deutschland": "DE", "espana": "ES", "italia": "IT", "nippon": "JP", "nihon": "JP", "brasil": "BR",
    "mexico": "MX", "suisse": "CH", "schweiz": "CH", "osterreich": "AT", "sverige": "SE", "norge": "NO",
    "danmark": "DK", "suomi": "FI", "polska": "PL", "hellas": "GR", "magyarorszag": "HU", "eire": "IE",
    "republic of ireland": "IE", "bosnia": "BA", "herzegovina": "BA", "trinidad": "TT", "st lucia": "LC",
    "saint lucia": "LC", "kosovo": "XK", "reunion": "RE", "curacao": "CW", "faroe islands": "FO",
    "the bahamas": "BS", "the gambia": "GM", "the philippines": "PH", "slovak republic": "SK",
    "kyrgyz republic": "KG", "lao pdr": "LA", "sao tome": "ST", "st kitts": "KN", "antigua": "AG",
}

# Postal abbreviations -> region name, per country. Names are looked up among that country's admin-1 regions.
US_STATE_CODES = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California", "CO": "Colorado",
    "CT": "Connecticut", "DE": "Delaware", "FL": "Florida", "GA": "Georgia", "HI": "Hawaii", "ID": "Idaho",
    "IL": "Illinois", "IN": "Indiana", "IA": "Iowa", "KS": "Kansas", "KY": "Kentucky", "LA": "Louisiana",
    "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts", "MI": "Michigan", "MN": "Minnesota",
    "MS": "Mississippi", "MO": "Missouri", "MT": "Montana", "NE": "Nebraska", "NV": "Nevada",
    "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico", "NY": "New York", "NC": "North Carolina",
    "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma", "OR": "Oregon", "PA": "Pennsylvania",
    "RI": "Rhode Island", "SC": "South Carolina", "SD": "South Dakota", "TN": "Tennessee", "TX": "Texas",
    "UT": "Utah", "VT": "Vermont", "VA": "Virginia", "WA": "Washington", "WV": "West Virginia",
    "WI": "Wisconsin", "WY": "Wyoming", "DC": "Washington, D.C.",
}
CA_PROVINCE_CODES = {
    "AB": "Alberta", "BC": "British Columbia", "MB": "Manitoba", "NB": "New Brunswick",
    "NL": "Newfoundland and Labrador", "NS": "Nova Scotia", "NT": "Northwest Territories", "NU": "Nunavut",
    "ON": "Ontario", "PE": "Prince Edward Island", "QC": "Quebec", "SK": "Saskatchewan", "YT": "Yukon",
}
AU_STATE_CODES = {
    "ACT": "Australian Capital Territory", "NSW": "New South Wales", "NT": "Northern Territory",
    "QLD": "Queensland", "SA": "South Australia", "TAS": "Tasmania", "VIC": "Victoria", "WA": "Western Australia",
}
REGION_CODES: dict[str, dict[str, str]] = {"US": US_STATE_CODES, "CA": CA_PROVINCE_CODES, "AU": AU_STATE_CODES}
# GeoNames admin-1 codes where GeoNames' key is not the postal code (the US uses postal codes as admin-1 codes).
ADMIN_KEY_OVERRIDES = {("US", "DC"): "US.DC"}

CLDR_CITY_CLASH = 100_000


@lru_cache(maxsize=1)
def cldr_territory_names() -> dict[str, str]:
    """Normalised CLDR territory name -> ISO alpha-2, over every base language babel ships (ambiguous names out)."""
    from babel import Locale, localedata

    seen: dict[str, set[str]] = {}
    for ident in sorted(i for i in localedata.locale_identifiers() if "_" not in i):
        try:
            territories = Locale.parse(ident).territories
        except (ValueError, KeyError, LookupError):  # a locale babel lists but cannot load: skipped, no names lost
            continue
        for code, name in territories.items():
            if len(code) == 2 and code.isalpha():
                k = normalize(name)
                if len(k) > 2 or (len(k) == 2 and not k.isascii()):  # "日本" has two characters
                    seen.setdefault(k, set()).add(code)
    return {k: next(iter(v)) for k, v in seen.items() if len(v) == 1}


def build_country_index(countries: dict[str, dict], gn_names: dict[str, str],
                        big_city_names: set[str] = frozenset()) -> dict[str, str]:
    """Normalised country name / alias -> ISO alpha-2 (see the module docstring for the order of authority).

    `countries`: cc -> info with "name" and "iso3"; `gn_names`: cc -> GeoNames' own name; `big_city_names`:
    normalised primary names of places with >= CLDR_CITY_CLASH people (CLDR names equal to one are skipped).
    ISO alpha-3 codes are stored under "iso3:" keys (read only from upper-case text by `Gazetteer.country_of`).
    """
    import pycountry

    index: dict[str, str] = {}

    def add(alias: str, code: str) -> None:
        k = normalize(alias)
        if k and code in countries:
            index.setdefault(k, code)

    for code, info in countries.items():
        add(info["name"], code)
        add(gn_names.get(code, info["name"]), code)
        if info.get("iso3"):
            index["iso3:" + info["iso3"]] = code
    for alias, code in COUNTRY_ALIASES.items():
        index[normalize(alias)] = code  # curated aliases win ("congo" -> Republic of the Congo)
    for c in pycountry.countries:
        for attr in ("name", "common_name", "official_name"):
            v = getattr(c, attr, None)
            if v:
                add(v, c.alpha_2)
                if ", " in v:  # "Korea, Republic of" -> also "Republic of Korea"
                    a, b = v.split(", ", 1)
                    add(f"{b} {a}", c.alpha_2)
    for k, code in cldr_territory_names().items():
        if k not in big_city_names:
            add(k, code)
    return index
