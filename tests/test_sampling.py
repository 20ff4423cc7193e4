"""Splits, set kinds and per-sample class draws."""

from __future__ import annotations

import pytest

from groundiff.data.vocabulary import VOC_SPLIT1, VOC_UNSEEN, load_split
from groundiff.generation.sampling import attempt_seed, class_pools, draw_classes


def test_voc_split1_is_the_papers():
    assert len(VOC_SPLIT1.seen) == 15 and len(VOC_SPLIT1.classes) == 20
    assert VOC_SPLIT1.unseen == ("tvmonitor", "car", "dog", "sofa", "train")


def test_attempt_seeds_depend_on_set_index_and_attempt_only():
    assert attempt_seed(0, "train", 5, 0) == attempt_seed(0, "train", 5, 0)
    seeds = {attempt_seed(s, kind, i, a) for s in (0, 1) for kind in ("train", "val") for i in (0, 1) for a in (0, 1)}
    assert len(seeds) == 16


@pytest.mark.parametrize("objects", [1, 2, 3])
def test_draws_are_distinct_and_from_the_sets_pool(objects):
    for kind, allowed in (("train", VOC_SPLIT1.seen), ("test-unseen", VOC_SPLIT1.unseen)):
        pools = class_pools(VOC_SPLIT1, kind, None, objects)
        for seed in range(50):
            drawn = draw_classes(pools, objects, seed)
            assert len(set(drawn)) == objects and set(drawn) <= set(allowed)


def test_mixed_sets_hold_one_seen_and_one_unseen_class_in_either_order():
    pools = class_pools(VOC_SPLIT1, "test-mixed", None, 2)
    draws = [draw_classes(pools, 2, seed) for seed in range(200)]
    assert all(sum(c in VOC_UNSEEN for c in pair) == 1 for pair in draws)
    assert {pair[0] in VOC_UNSEEN for pair in draws} == {True, False}
    three = [draw_classes(class_pools(VOC_SPLIT1, "test-mixed", None, 3), 3, s) for s in range(50)]
    assert all(len(set(t)) == 3 and any(c in VOC_UNSEEN for c in t) and not set(t) <= set(VOC_UNSEEN) for t in three)


def test_classes_override_restricts_the_pool():
    pools = class_pools(VOC_SPLIT1, "train", ("cat", "cow", "dog"), 2)
    assert pools.seen == ("cat", "cow")  # dog is unseen: not part of a training set
    assert {draw_classes(pools, 2, s) for s in range(20)} <= {("cat", "cow"), ("cow", "cat")}


@pytest.mark.parametrize(
    ("kind", "classes", "objects", "message"),
    [
        ("train", ("catt",), 2, "Unknown class 'catt' for vocabulary 'voc-split1'. Did you mean 'cat'?"),
        ("train", ("cat", "cat", "cow"), 2, "Class 'cat' is listed twice"),
        ("test-unseen", None, 6, "draws 6 distinct classes per prompt but its vocabulary has only 5"),
        ("test-mixed", None, 1, "needs at least 2 objects per prompt"),
        ("test", None, 2, "Unknown set 'test'; choose one of train, val"),
        ("train", None, 0, "objects_per_prompt must be at least 1"),
    ],
)
def test_bad_set_definitions_are_explained(kind, classes, objects, message):
    with pytest.raises(ValueError, match=message.replace("?", "\\?")):
        class_pools(VOC_SPLIT1, kind, classes, objects)


def test_a_users_vocabulary_file(tmp_path):
    path = tmp_path / "kitchen.yaml"
    path.write_text("seen: [cup, plate, fork]\nunseen: [spoon]\n")
    split = load_split(str(path))
    assert (split.name, split.seen, split.unseen) == ("kitchen", ("cup", "plate", "fork"), ("spoon",))
    path.write_text("seen: [cup, cup]\n")
    with pytest.raises(ValueError, match="lists cup more than once"):
        load_split(str(path))
    with pytest.raises(FileNotFoundError, match="neither a built-in split"):
        load_split("voc-split9")
