"""The step-boundary rule shared by the step-boundaries schedule and the point classifier's offline labels."""

from workbench.decoding.boundaries import boundary_points, is_boundary


def test_points_after_newlines_calculator_spans_and_sentence_ends():
    tokens = ["She", " sold", " 48", "/", "2", " =", " <<", "48", "/", "2", "=", "24", ">>", "24", " clips", ".", " Then",
              "\n", "Total", " 3", ".", "5", " x", "."]
    assert boundary_points(tokens) == [12, 15, 17]


def test_decimal_points_and_unclosed_spans_are_not_boundaries():
    assert not is_boundary("It costs 3.", "5")
    assert not is_boundary("so x >>", " y")  # no span opened
    assert not is_boundary("", "\n")
    assert not is_boundary("Done.", "\n")  # the newline's own point follows: one line end, one point
    assert is_boundary("Done.\n", "Next")
    assert is_boundary("a\n", "b")


def test_the_last_token_is_never_a_point():
    assert boundary_points(["a", ".\n"]) == []
    assert boundary_points(["a", ".", "\n", "b"]) == [2]
    assert boundary_points(["a.\n", "b"]) == [0]
