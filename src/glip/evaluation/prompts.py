"""How a dataset's categories become the prompt: names, overrides and caption prompts.

By default the prompt is the category names in id order, cleaned as the official code does
(``"traffic_light"`` → ``"traffic light"``). ODinW-style overrides replace names
(``DATASETS.OVERRIDE_CATEGORY``) or give each class a prefix/suffix around its name
(``DATASETS.CAPTION_PROMPT``; the class's span covers the name only). Overrides are read from a
YAML file mapping dataset names to entries::

    bccd:
      categories: {RBC: red blood cell, WBC: white blood cell, Platelets: platelets}
    pothole:
      caption_prompt:                     # one entry per category, in id order
        - {prefix: "there are some ", name: holes, suffix: " on the road"}
    raccoon:
      template: "a photo of a {}"         # prefix/suffix for every class
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from glip.errors import ConfigError


@dataclass(frozen=True)
class DatasetPrompt:
    """The names and optional caption-prompt entries for one dataset's categories (id order)."""

    names: tuple[str, ...]
    caption_prompts: tuple[dict[str, str], ...] | None = None

    def describe(self) -> str:
        """The prompt's entities as text, for reports."""
        if self.caption_prompts is None:
            return ". ".join(self.names)
        return ". ".join(f"{c.get('prefix', '')}[{c['name']}]{c.get('suffix', '')}" for c in self.caption_prompts)


def dataset_prompt(
    category_names: Sequence[str], override: Mapping[str, Any] | None = None, template: str | None = None
) -> DatasetPrompt:
    """Apply an override entry and/or a ``"... {} ..."`` template to a dataset's category names.

    Raises:
        ConfigError: for unknown override keys, names that are not categories of the dataset,
            a caption prompt of the wrong length, or a template without ``{}``.
    """
    names = list(category_names)
    override = dict(override or {})
    unknown = set(override) - {"categories", "caption_prompt", "template"}
    if unknown:
        raise ConfigError(f"unknown prompt override key(s) {sorted(unknown)}: use categories, caption_prompt, template")
    renames = override.get("categories") or {}
    missing = [k for k in renames if k not in names]
    if missing:
        raise ConfigError(f"prompt override renames {missing}, which are not categories of the dataset ({names[:10]})")
    names = [str(renames.get(n, n)) for n in names]
    template = override.get("template", template)
    entries = override.get("caption_prompt")
    if entries is not None:
        if len(entries) != len(names):
            raise ConfigError(f"caption_prompt has {len(entries)} entries for {len(names)} categories")
        return DatasetPrompt(tuple(names), tuple({k: str(v) for k, v in e.items()} for e in entries))
    if template is not None:
        if template.count("{}") != 1:
            raise ConfigError(f"prompt template {template!r} must contain exactly one '{{}}' for the class name")
        prefix, suffix = template.split("{}")
        return DatasetPrompt(tuple(names), tuple({"prefix": prefix, "name": n, "suffix": suffix} for n in names))
    return DatasetPrompt(tuple(names))


def load_prompt_overrides(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a YAML file of per-dataset prompt overrides (see the module docstring).

    Raises:
        ConfigError: if the file is missing or not a mapping of mappings.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"prompt override file {p} does not exist")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"{p} must map dataset names to override entries (categories / caption_prompt / template)")
    return data
