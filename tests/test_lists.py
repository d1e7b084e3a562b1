import pytest

from latentmotion._lists import parse_list
from latentmotion.errors import InputError


@pytest.mark.parametrize("text", ["", " ", ",", " , ,"])
def test_an_empty_list_is_refused_unless_allowed(text):
    with pytest.raises(InputError, match="--x needs at least one of the comma-separated names"):
        parse_list(text, str, "--x", "names")
    assert parse_list(text, str, "--x", empty=True) == []


def test_items_are_stripped_blank_ones_dropped_and_converted():
    assert parse_list(" a, b ,,c ", str, "--x") == ["a", "b", "c"]
    assert parse_list("0.5, 2", float, "--x") == [0.5, 2.0]


def test_an_item_the_conversion_rejects_names_the_option_and_the_whole_text():
    with pytest.raises(InputError, match=r"--qps must be comma-separated integers, got '20,x'"):
        parse_list("20,x", int, "--qps", "integers")
