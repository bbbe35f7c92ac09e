"""The catalog's recipes, by name."""

from __future__ import annotations

from sealpod.catalog.model import Recipe
from sealpod.catalog.recipes import mariadb, mosquitto, nginx, postgresql, python, redis
from sealpod.errors import ConfigError

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        redis.RECIPE,
        mariadb.RECIPE,
        postgresql.RECIPE,
        nginx.RECIPE,
        mosquitto.RECIPE,
        python.RECIPE,
    )
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ConfigError: no such recipe (the message lists the catalog).
    """
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(
            f"the catalog has no entry {name!r} (it has: {', '.join(sorted(RECIPES))})"
        ) from None
