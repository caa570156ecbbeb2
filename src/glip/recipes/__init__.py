"""Training recipes and prompt-override files shipped with the package, found by name.

``glip train finetune_shared_data`` and ``glip train path/to/my_recipe.yaml`` both work: a name that
is not an existing file is looked up here (``<name>.yaml``); prompt-override files likewise under
``prompts/`` (``--prompt-overrides shared_data``).
"""

from __future__ import annotations

from pathlib import Path

from glip.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent


def available(kind: str = "recipe") -> list[str]:
    """Names of the shipped recipes (``kind="recipe"``) or prompt-override files (``"prompts"``)."""
    folder = RECIPES_DIR / "prompts" if kind == "prompts" else RECIPES_DIR
    return sorted(p.stem for p in folder.glob("*.yaml"))


def resolve(name_or_path: str | Path, kind: str = "recipe") -> Path:
    """An existing file path as given, else the shipped file of that name.

    Raises:
        ConfigError: if it is neither, listing the shipped names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.exists():
        raise ConfigError(f"{path} is not a file: give a YAML file or a shipped {kind} name")
    folder = RECIPES_DIR / "prompts" if kind == "prompts" else RECIPES_DIR
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    shipped = folder / f"{stem}.yaml"
    if len(path.parts) == 1 and shipped.is_file():
        return shipped
    names = ", ".join(available(kind)) or "none"
    raise ConfigError(f"{kind} {str(name_or_path)!r} is neither a file nor a shipped {kind} (shipped: {names})")


__all__ = ["RECIPES_DIR", "available", "resolve"]
