"""Memory codecs: how an image is stored as a record of bytes (§4.1, issue 17).

``memory.codec`` in params.yaml names one, with optional parameters: ``jxl:distance=2``,
``webp:quality=30``, ``salient_blur:sigma=3,distance=1.5``. ``auto`` is each method's own:
``sparse`` for samc, ``raw`` for every other replay method.

=================  ========  =====================================================================
codec              saliency  record
=================  ========  =====================================================================
``raw``            no        the C*H*W bytes (GEM's memory; App. H's unit of budget)
``lossless``       no        JPEG XL lossless
``jxl``            no        JPEG XL at a butteraugli ``distance``
``webp``           no        WebP at ``quality``
``coo``            yes       the paper's COO of the salient pixels (§4.1), 7 B per RGB pixel
``sparse``         yes       SAMC's salient pixels, smallest of four layouts (ours)
``salient_lowres`` yes       salient pixels exact + a JPEG XL thumbnail of the image
``salient_blur``   yes       JPEG XL of the image with its background blurred
``latent``         no        a learned autoencoder's 8-bit code (EEC; its autoencoder charged)
=================  ========  =====================================================================
"""
from __future__ import annotations

from typing import Any

import yaml

from samc.memory.codecs.base import Codec
from samc.memory.codecs.coo import Coo
from samc.memory.codecs.image import Jxl, Lossless, Webp
from samc.memory.codecs.latent import Latent
from samc.memory.codecs.raw import Raw
from samc.memory.codecs.salient_blur import SalientBlur
from samc.memory.codecs.salient_lowres import SalientLowres
from samc.memory.codecs.sparse import Sparse
from samc.memory.errors import MemoryFormatError

CODECS: dict[str, type[Codec]] = {
    "raw": Raw,
    "lossless": Lossless,
    "jxl": Jxl,
    "webp": Webp,
    "coo": Coo,
    "sparse": Sparse,
    "salient_lowres": SalientLowres,
    "salient_blur": SalientBlur,
    "latent": Latent,
}
#: names that older snapshots use
ALIASES = {"dense": "raw"}

__all__ = ["ALIASES", "CODECS", "Codec", "canonical_name", "get_codec", "parse_spec"]


def canonical_name(name: Any) -> str:
    """The registry name of a codec (``dense`` → ``raw``); MemoryFormatError if unknown."""
    name = ALIASES.get(name, name) if isinstance(name, str) else name
    if name not in CODECS:
        raise MemoryFormatError(f"codec: expected one of {', '.join(CODECS)}, got {name!r}")
    return str(name)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"jxl:distance=2,effort=5"`` → ``("jxl", {"distance": 2, "effort": 5})`` (values as YAML)."""
    if not isinstance(spec, str) or not spec.strip():
        raise MemoryFormatError(f"codec: expected a name such as 'jxl' or 'jxl:distance=2', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise MemoryFormatError(f"codec {spec!r}: expected key=value after ':', got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    return canonical_name(name.strip()), params


def get_codec(spec: str | Codec, **params: Any) -> Codec:
    """The codec a spec names (``get_codec("webp:quality=30")`` or ``get_codec("webp", quality=30)``)."""
    if isinstance(spec, Codec):
        if params:
            raise MemoryFormatError("get_codec: parameters given beside a codec instance")
        return spec
    name, parsed = parse_spec(spec)
    return CODECS[name](**{**parsed, **params})
