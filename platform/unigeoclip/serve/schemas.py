"""Request and response bodies of the retrieval service (they are its OpenAPI schema).

A query holds one input per modality, keyed by the modality's name; several modalities
make an ensemble query. Requests are closed: an unknown key (a misspelt modality, a
filter that does not exist) is refused with its name rather than silently ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..modality import Modality

MODALITY_NAMES = tuple(m.value for m in Modality)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no coercion: false is not 0 m, "5" is not k=5


class CoordsInput(_Closed):
    """A point in WGS84 degrees, latitude first."""

    lat_deg: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon_deg: float = Field(ge=-180, le=180, allow_inf_nan=False)


class ImageInput(_Closed):
    """An aerial tile (north up) or a street-level image, as base64 PNG or JPEG."""

    image_b64: str = Field(min_length=1, description="base64 of the PNG or JPEG file bytes")


class StreetInput(ImageInput):
    """A street-level image: a photo or an equirectangular panorama."""

    projection: Literal["perspective", "equirectangular"] = Field(
        "perspective", description="a photo, or a 360 x 180 panorama whose centre column faces the heading"
    )
    fov_deg: float = Field(
        90.0, gt=1, le=360, allow_inf_nan=False, description="horizontal field of view of a photo (< 180)"
    )


class DSMInput(_Closed):
    """Surface heights in metres: a row-major 2-D array (null or NaN = no data), or a one-band GeoTIFF."""

    heights: list[list[float | None]] | None = None
    geotiff_b64: str | None = Field(None, min_length=1, description="base64 of a GeoTIFF file (band 1 is used)")

    @model_validator(mode="after")
    def _one_form(self) -> DSMInput:
        if (self.heights is None) == (self.geotiff_b64 is None):
            raise ValueError("give exactly one of 'heights' (a 2-D array) or 'geotiff_b64'")
        return self


class Query(_Closed):
    """One input per modality; at least one. Several = the average of their cosine similarities."""

    aerial: ImageInput | None = None
    street: StreetInput | None = None
    dsm: DSMInput | None = None
    text: str | None = Field(None, min_length=1)
    coords: CoordsInput | None = None

    def modalities(self) -> list[Modality]:
        """The modalities this query holds an input for, in :class:`Modality` order."""
        return [m for m in Modality if getattr(self, m.value) is not None]


class Filters(_Closed):
    """Restrictions on the hits: a box, an S2 cell, years."""

    bbox: tuple[float, float, float, float] | None = Field(
        None, description="lat_min, lon_min, lat_max, lon_max (lon_min > lon_max crosses the antimeridian)"
    )
    cell_prefix: str | None = Field(None, min_length=1, max_length=16, description="S2 cell token: items inside it")
    year: int | list[int] | None = Field(None, description="one year or a list")

    @field_validator("year")
    @classmethod
    def _years(cls, v: int | list[int] | None) -> int | list[int] | None:
        years = [v] if isinstance(v, int) else (v or [])
        if isinstance(v, list) and not 1 <= len(v) <= 100:
            raise ValueError("year: give 1 to 100 years")
        if any(not 1800 <= y <= 2200 for y in years):
            raise ValueError("year must lie in 1800..2200")
        return v


class EmbedRequest(_Closed):
    """Inputs to embed, one vector per modality given."""

    query: Query


class SearchRequest(_Closed):
    """A query of any modalities against the stored items of some target modalities."""

    query: Query
    targets: list[Modality] | None = Field(
        None, min_length=1, max_length=5, description="modalities to retrieve [every modality in the store]"
    )
    k: int = Field(10, ge=1, description="hits to return (at most the server's max_k)")
    filters: Filters = Filters()


class GeolocateRequest(_Closed):
    """A query to place on Earth, by its nearest stored items."""

    query: Query
    targets: list[Modality] = Field(
        [Modality.COORDS], min_length=1, max_length=5, description="the gallery the query is matched against"
    )
    k: int = Field(10, ge=1, description="candidates to return (at most the server's max_k)")
    filters: Filters = Filters()


# -- responses -----------------------------------------------------------------------------------


class EmbedResponse(BaseModel):
    """One unit vector per input modality, in the serving model's space."""

    model_version: str
    dim: int
    embeddings: dict[str, list[float]] = Field(description="modality -> unit vector")


class Hit(BaseModel):
    """One stored item that matched, with its place and score."""

    sample_id: str
    modality: str
    cell_token: str
    lat_deg: float
    lon_deg: float
    year: int
    score: float = Field(description="cosine similarity (averaged over the query modalities)")


class SearchResponse(BaseModel):
    """The best hits first."""

    model_version: str
    query_modalities: list[str]
    hits: list[Hit]


class GeolocateResponse(BaseModel):
    """The predicted place, its confidence and the candidates it came from."""

    model_version: str
    query_modalities: list[str]
    lat_deg: float
    lon_deg: float
    cell_token: str
    confidence: float = Field(description="softmax weight of the candidates within radius_m of the prediction")
    radius_m: float
    candidates: list[Hit]


class ItemSummary(BaseModel):
    """A stored sample: its place, year and text, and the modalities GET /v1/items/{sample_id}/{modality} has."""

    sample_id: str
    lat_deg: float
    lon_deg: float
    year: int
    cell_token: str
    text: str | None
    modalities: list[str]


class ErrorResponse(BaseModel):
    """Every refusal and error: what was wrong and how to fix it."""

    error: str = Field(description="what was wrong and how to fix it")
    status: int
    request_id: str | None = Field(None, description="5xx only: the id the server's log lines are filed under")
