"""The objective of a ``Config``: which terms, their targets, whole or tiled.

One builder for every run.  Each term class says itself whether the
settings ask for it (``Term.selected``), which field holds its weight
(``Term.weight_field``), how it builds its targets from the pictures
(``Term.from_config``) and whether it tiles (``Term.tileable``).  The
targets come from one statistics evaluator: ``objective.WholeImage`` on the
whole picture, or ``tiling.TiledImage``, the same statistics summed over
tiles.  Terms a command adds itself (a film's temporal term) join the list
as ``extra_terms``.

Adding a loss is one term class in ``engine.terms`` or
``engine.distributions`` (with its ``selected``, ``weight_field`` and
``from_config``), listed in ``TERMS``, plus its fields in ``settings``.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from nst_keras.engine import distributions, tiling
from nst_keras.engine.objective import Objective, TargetCache, Weighted, WholeImage
from nst_keras.engine.terms import ContentTerm, Pictures, StyleTerm, Term, TotalVariationTerm
from nst_keras.errors import UserError

# Every term a Config can select, in the order they are summed and reported
# (a command's extra terms come after the total variation).
TERMS: Tuple[type, ...] = (ContentTerm, StyleTerm, *distributions.STYLE_TERMS,
                           TotalVariationTerm)
LATE_TERMS: Tuple[type, ...] = distributions.COLOR_TERMS


def term_classes(config, masked: Optional[bool] = None) -> List[type]:
    """The term classes ``config`` asks for (``masked``: a style per region;
    default: whether ``config.style_masks`` is set)."""
    masked = config.style_masks is not None if masked is None else masked
    return [cls for cls in (*TERMS, *LATE_TERMS) if cls.selected(config, masked)
            and float(getattr(config, cls.weight_field))]


def untiled(terms) -> List[str]:
    """Why each of ``terms`` (classes or objects) that cannot be tiled cannot."""
    return [t.untileable or f"{t.name} cannot be tiled" for t in terms if not t.tileable]


def refuse_untiled(reasons: Sequence[str], tile_size) -> None:
    """One ``error:`` line naming what cannot be tiled (nothing when empty)."""
    if reasons:
        raise UserError(f"{'; '.join(reasons)} (given --tile_size={tile_size}); set "
                        "--tile_size=0 or lower --img_nrows")


def check(config) -> None:
    """Refuses, before anything is computed or written, a tile size with a term
    that cannot be tiled (``auto`` tiling is refused when it tiles)."""
    if isinstance(config.tile_size, int) and config.tile_size > 0:
        refuse_untiled(untiled(term_classes(config)), config.tile_size)


def build_objective(config, extractor, pictures: Pictures, *, tile_size: int = 0,
                    halo: Optional[int] = None, strategy=None, target_cache=None,
                    network_key=None, extra_terms: Sequence[Tuple[str, float, Term]] = ()):
    """The ``Objective`` (``tile_size`` 0) or ``tiling.TiledObjective`` of ``config``.

    Args:
      config: the settings (every objective field is read by the terms).
      extractor: the cut network (``None`` when no term reads it).
      pictures: the network images (``terms.Pictures``).
      tile_size, halo, strategy: tile by tile, the tiles spread over the
        ``tf.distribute`` strategy's replicas.
      target_cache, network_key: a worker's ``TargetCache`` (or any mapping)
        keeping paintings' Gram matrices, and the compiled objective per
        signature, across calls; what identifies the network.
      extra_terms: ``(name, weight, term)`` triples (a film's temporal term).
    """
    for name, _, term in extra_terms:
        if term.name != name:
            raise ValueError(f"extra term {name!r} reports itself as {term.name!r}")
    classes = term_classes(config, pictures.masks is not None)
    if tile_size:
        refuse_untiled(untiled(classes) + untiled(t for _, _, t in extra_terms), tile_size)
        strides = tiling.extractor_strides(extractor)
        tiling.check_tiling(strides, sum(config.active_layers(), []), tile_size, halo)
        spread = tiling.Spread(strategy)
        stats = tiling.TiledImage(extractor, strides, tile_size, halo, spread,
                                  config.jit_compile)
    else:
        stats = WholeImage(extractor, target_cache, network_key)
    terms = _weighted(config, [c for c in classes if c not in LATE_TERMS], pictures, stats)
    terms += [(float(weight), term) for _, weight, term in extra_terms]
    terms += _weighted(config, [c for c in classes if c in LATE_TERMS], pictures, stats)
    if tile_size:
        return tiling.TiledObjective(extractor, stats.strides, terms, tile_size, halo,
                                     stats.spread, config.jit_compile)
    if isinstance(target_cache, TargetCache):  # a worker reuses one compiled step per shape
        return target_cache.objective(extractor, terms,
                                      lambda: Objective(extractor, terms, config.jit_compile))
    return Objective(extractor, terms, config.jit_compile)


def _weighted(config, classes, pictures: Pictures, stats) -> List[Weighted]:
    return [(float(getattr(config, c.weight_field)), c.from_config(config, pictures, stats))
            for c in classes]
