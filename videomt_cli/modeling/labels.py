"""Label tables of the datasets VidEoMT was trained on, in class-head order (DESIGN 4). No torch.

The tables are a copy of ``shared/labels.json`` shipped as package data (``videomt_cli/data``).
They give, for each known dataset, every category's dataset id, name, thing/stuff flag and colour
in the order of the model's class head: head index ``i`` is ``categories(dataset)[i]``. The VIPSeg
and VSPW heads list the 58 thing classes first; do not use a hub config's ``id2label`` for them.
"""

from __future__ import annotations

import colorsys
import difflib
import json
from functools import lru_cache
from importlib import resources

from videomt_cli.errors import InputError
from videomt_cli.records import Category

# Names that use another dataset's table: the 2022 YouTube-VIS model was trained on the 2021 classes.
ALIASES = {"ytvis2022": "ytvis2021"}


@lru_cache(maxsize=1)
def _tables() -> dict:
    text = resources.files("videomt_cli.modeling").joinpath("data/labels.json").read_text(encoding="utf-8")
    return json.loads(text)


def dataset_names() -> list[str]:
    """The datasets with a label table, e.g. ``["ytvis2019", "ytvis2021", "ovis", "vipseg", "vspw"]``.

    ``categories`` also accepts the aliases in ``ALIASES`` (``ytvis2022``).
    """
    return list(_tables())


def has_table(dataset: str) -> bool:
    """True when ``dataset`` names a label table (or an alias of one); registry models trained
    elsewhere (the bundled one) carry their names and ids in the checkpoint instead."""
    return dataset.lower() in _tables() or dataset.lower() in ALIASES


def categories(dataset: str) -> list[Category]:
    """The categories of ``dataset`` in class-head order (a fresh list each call)."""
    key = ALIASES.get(dataset.lower(), dataset.lower())
    tables = _tables()
    if key not in tables:
        known = ", ".join(dataset_names() + sorted(ALIASES))
        raise InputError(f"Unknown label table {dataset!r}; known: {known}.")
    return [
        Category(id=int(c["id"]), name=c["name"], isthing=bool(c["isthing"]), color=tuple(c["color"]))
        for c in tables[key]["categories"]
    ]


def palette_color(index: int) -> tuple[int, int, int]:
    """A stable, well-spread RGB colour for any integer (track ids, generic classes).

    Hues step by the golden ratio so neighbouring indices differ strongly; saturation and value
    cycle a little so that colours a full hue turn apart stay distinguishable.
    """
    hue = (index * 0.618033988749895) % 1.0
    sat = (0.95, 0.75, 0.6)[index % 3]
    val = (1.0, 0.85)[(index // 3) % 2]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def generic_categories(n: int, names: list[str] | None = None) -> list[Category]:
    """Categories for a model without a known label table: ids 1..n, names from ``names`` (for
    example a checkpoint's ``id2label`` in head order) or ``class_<id>``, all things, colours from
    ``palette_color``."""
    if n < 0:
        raise InputError(f"number of classes must be >= 0, got {n}")
    if names is not None and len(names) != n:
        raise InputError(f"{len(names)} class names given for {n} classes")
    return [
        Category(id=i + 1, name=names[i] if names is not None else f"class_{i + 1}", isthing=True,
                 color=palette_color(i + 1))
        for i in range(n)
    ]


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def resolve_classes(spec: list[str], categories: list[Category]) -> set[int]:
    """Class names or dataset ids (as strings) -> the set of dataset ids they name.

    Names match case-insensitively, with spaces or hyphens standing for underscores
    (``"giant panda"`` finds ``giant_panda``); an entry may hold several comma-separated classes.
    A string of digits is a dataset id and must exist in ``categories``. Anything else raises
    ``InputError`` listing the closest names.
    """
    by_name = {_norm(c.name): c.id for c in categories}
    display = {_norm(c.name): c.name for c in categories}
    ids = {c.id for c in categories}
    out: set[int] = set()
    for entry in spec:
        for item in str(entry).split(","):
            item = item.strip()
            if not item:
                continue
            if item.lstrip("-").isdigit():
                value = int(item)
                if value not in ids:
                    raise InputError(
                        f"Class id {value} is not in this model's label table "
                        f"(ids {min(ids)}..{max(ids)})." if ids else f"Class id {value}: the model has no classes.")
                out.add(value)
                continue
            key = _norm(item)
            if key in by_name:
                out.add(by_name[key])
                continue
            close = difflib.get_close_matches(key, list(by_name), n=5, cutoff=0.6)
            hint = f" Did you mean: {', '.join(display[k] for k in close)}?" if close else ""
            raise InputError(f"Unknown class {item!r}.{hint} Use a class name or dataset id of the model's labels.")
    return out
