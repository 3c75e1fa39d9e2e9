"""Text descriptions of a place, generated from the latent layout (never from its coordinates).

As specific as the paper's point-of-interest descriptions: the streets, the named
shops, towers and landmarks, parks, squares and canals, the district and city, the
character of the buildings, and what changed recently. Features nearest the cell
centre come first, so neighbouring cells read differently.
"""

from __future__ import annotations

from .hashing import choice, unit
from .layout import Block, Building, City, Road

CHARACTER = {
    "residential": ("a quiet residential", "a lived-in residential", "a calm residential"),
    "tower": ("a residential", "a densifying residential"),
    "commercial": ("a busy commercial", "a lively shopping", "a bustling commercial"),
    "industrial": ("an industrial", "a warehouse"),
    "park": ("a leafy", "a green"),
    "water": ("a waterside", "a canal-side"),
    "plaza": ("an open", "a pedestrian"),
    "construction": ("a changing", "a half-built"),
}
COLOUR_WORDS = {
    (152, 76, 56): "red-brick", (226, 212, 176): "cream", (202, 152, 82): "ochre", (236, 236, 230): "white",
    (150, 150, 156): "grey", (100, 132, 162): "blue glass", (222, 172, 172): "pink", (142, 172, 142): "sage green",
    (180, 110, 80): "terracotta", (90, 96, 110): "dark slate",
}  # fmt: skip
KIND_WORDS = {
    "house": "detached houses",
    "apartments": "apartment buildings",
    "shop": "shopfronts",
    "warehouse": "warehouses",
}
BLOCK_VERBS = {"park": "lies to the", "water": "runs to the", "plaza": "opens to the"}


def describe(city: City, blocks: list[Block], roads: list[Road], cx: float, cy: float, key: tuple[object, ...]) -> str:
    """One paragraph about the tile centred on (cx, cy), from the blocks and roads that overlap it."""
    near = sorted(blocks, key=lambda b: _dist(b.x0, b.y0, b.x1, b.y1, cx, cy))
    uses = [b.use for b in near[:2]] or ["plaza"]
    district = near[0].district.name if near else "the city centre"
    streets = sorted({r.name for r in roads}, key=lambda n: unit(*key, n))
    parts = [_lead(city, district, streets, choice(CHARACTER[uses[0]], *key, "character"), key)]
    buildings = sorted(
        (bd for b in near for bd in b.buildings), key=lambda bd: _dist(bd.x0, bd.y0, bd.x1, bd.y1, cx, cy)
    )
    parts.extend(_buildings(buildings, key))
    for b in near:
        if b.name and len(parts) < 7:
            parts.append(f"{b.name} {BLOCK_VERBS.get(b.use, 'is to the')} {_direction(b, cx, cy)}")
    parts.extend(f"Recently {b.change}" for b in near[:2] if b.change)
    return ". ".join(dict.fromkeys(parts)) + "."


def _buildings(buildings: list[Building], key: tuple[object, ...]) -> list[str]:
    out = []
    plain = [bd for bd in buildings if bd.kind in KIND_WORDS][:12]
    if plain:
        kinds = list(dict.fromkeys(KIND_WORDS[bd.kind] for bd in plain))[:2]
        colours = list(dict.fromkeys(COLOUR_WORDS.get(bd.facade, "plain") for bd in plain))[:2]
        tallest = max(bd.height for bd in plain)
        height = "Low-rise" if tallest < 10 else "Mid-rise" if tallest < 25 else "Tall"
        out.append(f"{height} {' and '.join(kinds)} with {' and '.join(colours)} facades")
    shops = list(dict.fromkeys(bd.name for bd in buildings if bd.kind == "shop" and bd.name))[:3]
    if shops:
        lead = choice(("Shops here include", "Along the street you find", "Nearby are"), *key, "shops")
        out.append(f"{lead} {_join(shops)}")
    landmarks = list(dict.fromkeys(bd.name for bd in buildings if bd.kind == "landmark" and bd.name))[:2]
    out.extend(f"{name[0].upper()}{name[1:]} stands close by" for name in landmarks)
    towers = list(dict.fromkeys(bd.name for bd in buildings if bd.kind == "tower" and bd.name))[:1]
    out.extend(f"{name} rises above the block" for name in towers)
    if any(bd.kind == "hall" for bd in buildings[:6]):
        out.append("A large market hall fills part of the block")
    return out


def _lead(city: City, district: str, streets: list[str], character: str, key: tuple[object, ...]) -> str:
    if len(streets) >= 2 and unit(*key, "corner") < 0.5:
        return f"The corner of {streets[0]} and {streets[1]}, {character} part of {district} in {city.name}"
    if streets:
        return (
            f"{character[0].upper()}{character[1:]} stretch of {streets[0]} in the {district} district of {city.name}"
        )
    return f"{character[0].upper()}{character[1:]} corner of {district}, {city.name}"


def _dist(x0: float, y0: float, x1: float, y1: float, cx: float, cy: float) -> float:
    return abs((x0 + x1) / 2 - cx) + abs((y0 + y1) / 2 - cy)


def _direction(b: Block, cx: float, cy: float) -> str:
    dx, dy = (b.x0 + b.x1) / 2 - cx, (b.y0 + b.y1) / 2 - cy
    if abs(dx) > abs(dy):
        return "east" if dx > 0 else "west"
    return "north" if dy > 0 else "south"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
