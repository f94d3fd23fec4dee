"""The step-boundary rule: where one step of a chain of reasoning ends (no torch).

A point belongs after token t when the text through t ends a step, judged once token t + 1 is known:

* the text through t ends with a newline (a new line of reasoning starts);
* the text through t closes a GSM8K calculator span ``<<…>>``;
* the text through t ends with "." and token t + 1 starts with a space or tab (a sentence ended and the next begins
  on the same line; "3.5" is not one, and a "." before a newline leaves the point to the newline, so one line end
  is one point, not two).

Used by the ``step-boundaries`` schedule while decoding and for the offline labels of the point classifier
(``boundary_points`` over a reference text's tokens), so both put points in the same places.
"""

from __future__ import annotations


def is_boundary(text: str, next_text: str) -> bool:
    """Whether a step ends after ``text`` (the text through token t), given ``next_text`` (token t + 1's text)."""
    stripped = text.rstrip(" \t")
    if not text:
        return False
    if text.endswith("\n"):
        return True
    if stripped.endswith(">>") and "<<" in stripped:
        return True
    return text.endswith(".") and next_text[:1] in (" ", "\t") and "\n" not in next_text


def boundary_points(token_texts: list[str]) -> list[int]:
    """The points t (indices into ``token_texts``) where a step ends, for a text cut into tokens. The last token is
    never a point (there is no token after it to compress before)."""
    points: list[int] = []
    text = ""
    for t, piece in enumerate(token_texts[:-1]):
        text += piece
        if is_boundary(text, token_texts[t + 1]):
            points.append(t)
    return points
