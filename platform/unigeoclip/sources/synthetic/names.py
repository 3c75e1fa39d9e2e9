"""Vocabularies for the names a place is described by (never its coordinates)."""

CITY_SYLLABLES = (
    "Vel",
    "dor",
    "ham",
    "Ost",
    "ria",
    "Bran",
    "wick",
    "Lun",
    "ea",
    "Mar",
    "sel",
    "Kes",
    "tra",
    "Nor",
    "by",
)
CITY_SUFFIXES = ("haven", "burg", "stad", "ford", "mouth", "field", "port", "dale")

# Real metro locations the synthetic cities sit at (their content is procedural).
METRO_ANCHORS = (
    (52.3676, 4.9041), (48.8566, 2.3522), (40.4168, -3.7038), (41.9028, 12.4964), (52.5200, 13.4050),
    (59.3293, 18.0686), (50.0755, 14.4378), (47.4979, 19.0402), (38.7223, -9.1393), (53.3498, -6.2603),
    (40.7128, -74.0060), (41.8781, -87.6298), (34.0522, -118.2437), (45.5017, -73.5673), (19.4326, -99.1332),
    (-23.5505, -46.6333), (-34.6037, -58.3816), (35.6762, 139.6503), (37.5665, 126.9780), (31.2304, 121.4737),
    (1.3521, 103.8198), (13.7563, 100.5018), (28.6139, 77.2090), (19.0760, 72.8777), (30.0444, 31.2357),
    (-33.9249, 18.4241), (-1.2921, 36.8219), (6.5244, 3.3792), (-33.8688, 151.2093), (-36.8485, 174.7633),
)  # fmt: skip

STREET_NAMES = (
    "Elm", "Oak", "Willow", "Mill", "Harbour", "Market", "Station", "Church", "Bridge", "Canal", "Castle", "Garden",
    "Baker", "Weaver", "Cooper", "Fisher", "Lantern", "Orchard", "Quarry", "Rose", "Salt", "Tanner", "Union",
    "Victoria", "Wharf", "Amber", "Beacon", "Cedar", "Dock", "Ferry", "Granary", "Heron", "Iris", "Juniper",
    "Kestrel", "Linden", "Maple", "Nightingale", "Olive", "Poplar", "Queen", "Raven", "Saffron", "Thistle",
    "Vine", "Walnut", "Yarrow", "Zephyr", "Alder", "Birch", "Copper", "Falcon", "Glass", "Hazel", "Ivy", "Jasper",
)  # fmt: skip
STREET_KINDS_NS = ("Street", "Lane", "Road")
STREET_KINDS_EW = ("Avenue", "Way", "Boulevard")

DISTRICT_NAMES = (
    "Old Port", "Market Quarter", "North Hill", "Riverside", "Station District", "Garden City", "Docklands",
    "University Quarter", "Castle Hill", "Westend", "Millbrook", "Eastgate", "Ironworks", "Green Meadows",
    "Harbour Front", "Cathedral Close", "Southbank", "Lindenhof", "Brickfields", "Saint Clare",
)  # fmt: skip

SURNAMES = (
    "Rossi", "Janssen", "Moreau", "Novak", "Kowalski", "Silva", "Okafor", "Tanaka", "Larsen", "Haddad", "Weber",
    "Costa", "Dubois", "Ivanova", "Murphy", "Nakamura", "Petrov", "Quinn", "Santos", "Bauer", "Eriksen", "Fontaine",
)  # fmt: skip
SHOP_TYPES = (
    "Bakery", "Bookshop", "Pharmacy", "Café", "Hardware Store", "Florist", "Butcher", "Tailor", "Bicycle Shop",
    "Wine Bar", "Hotel", "Bistro", "Barber", "Grocer", "Toy Shop", "Music Store", "Gallery", "Laundry",
)  # fmt: skip
LANDMARKS = (
    "Saint Anne's Church", "the Central Library", "the Town Hall", "the Old Granary", "the Opera House",
    "the Clock Tower", "the Maritime Museum", "the Covered Market", "the Synagogue", "the Fire Station",
    "the Observatory", "the Exchange Building", "the Art School", "the Bathhouse", "the Post Office",
)  # fmt: skip
PARK_NAMES = ("Willow", "Lime Tree", "Heron", "Rose", "Chestnut", "Meadow", "Fountain", "Orchard", "Oak", "Lantern")
CANAL_NAMES = ("Mill Canal", "Prince's Canal", "Salt Canal", "Herring Canal", "Brewers' Canal", "Lock Canal")
