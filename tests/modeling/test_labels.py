"""labels.py: the bundled label tables in class-head order, generic labels, class resolution."""

import json
from pathlib import Path

import pytest

from videomt_cli.modeling import labels
from videomt_cli.errors import InputError


def test_dataset_names():
    assert labels.dataset_names() == ["ytvis2019", "ytvis2021", "ovis", "vipseg", "vspw"]


def test_bundled_copy_matches_shared():
    shared = Path(__file__).resolve().parents[3] / "shared" / "labels.json"
    if not shared.is_file():
        pytest.skip("shared/labels.json not beside the checkout")
    bundled = Path(labels.__file__).parent / "data" / "labels.json"
    assert json.loads(bundled.read_text()) == json.loads(shared.read_text())


def test_ytvis2019_is_40_classes_in_id_order():
    cats = labels.categories("ytvis2019")
    assert [c.id for c in cats] == list(range(1, 41))
    assert cats[0].name == "person" and cats[0].color == (220, 20, 60) and cats[0].isthing
    assert all(c.isthing for c in cats)


def test_ytvis2022_alias_and_ovis():
    assert labels.categories("ytvis2022") == labels.categories("ytvis2021")
    assert len(labels.categories("ovis")) == 25


@pytest.mark.parametrize("name", ["vipseg", "vspw"])
def test_panoptic_heads_list_things_first(name):
    cats = labels.categories(name)
    assert len(cats) == 124
    flags = [c.isthing for c in cats]
    assert flags == [True] * 58 + [False] * 66
    things, stuff = [c.id for c in cats[:58]], [c.id for c in cats[58:]]
    assert things == sorted(things) and stuff == sorted(stuff)
    assert sorted(things + stuff) == list(range(124))
    assert (cats[0].id, cats[0].name) == (2, "door")
    assert (cats[58].id, cats[58].name) == (0, "wall")


def test_unknown_dataset():
    with pytest.raises(InputError, match="ytvis2019"):
        labels.categories("coco")


def test_generic_categories():
    cats = labels.generic_categories(3)
    assert [c.id for c in cats] == [1, 2, 3] and cats[0].name == "class_1"
    assert len({c.color for c in cats}) == 3
    assert labels.generic_categories(3) == cats  # stable colours
    named = labels.generic_categories(2, ["cat", "dog"])
    assert [c.name for c in named] == ["cat", "dog"]
    with pytest.raises(InputError):
        labels.generic_categories(2, ["cat"])


def test_resolve_by_name_and_id():
    cats = labels.categories("ytvis2019")
    assert labels.resolve_classes(["person", "3"], cats) == {1, 3}
    assert labels.resolve_classes(["Giant Panda", "dog,sedan"], cats) == {2, 8, 6}
    ovis = labels.categories("ovis")
    assert labels.resolve_classes(["person"], ovis) == {1}  # OVIS names are capitalised
    vip = labels.categories("vipseg")
    assert labels.resolve_classes(["0", "door"], vip) == {0, 2}  # VIPSeg ids start at 0


def test_resolve_unknown_lists_close_matches():
    cats = labels.categories("ytvis2019")
    with pytest.raises(InputError, match="person"):
        labels.resolve_classes(["persn"], cats)
    with pytest.raises(InputError, match="41"):
        labels.resolve_classes(["41"], cats)
