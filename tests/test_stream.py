"""Streaming text splitters: however the generated text is cut into pieces, the same text comes out."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ponder.think.stream import MarkerCut, ThinkSplitter

ALPHABET = "ab<>/|ed\n"  # enough to spell the markers and near-misses of them
text = st.text(alphabet=ALPHABET, max_size=40)
small = st.text(alphabet="ab<", max_size=30)  # overlapping stop sequences, often


def _pieces(s: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(s) + 1) for c in cuts} | {0, len(s)})
    return [s[a:b] for a, b in zip(points, points[1:])]


@settings(max_examples=300, deadline=None)
@given(reasoning=text, answer=text, tail=text, cuts=st.lists(st.integers(0, 200), max_size=12))
def test_think_splitter_routes_the_same_text_whatever_the_pieces(reasoning, answer, tail, cuts):
    close, end = "</think>", "<|e|>"
    whole = reasoning + close + answer + end + tail
    want_reasoning, _, rest = whole.partition(close)
    want_answer = rest.partition(end)[0]
    splitter = ThinkSplitter(close, end)
    got = [splitter.feed(p) for p in _pieces(whole, cuts)]
    assert "".join(r for r, _ in got) == want_reasoning
    assert "".join(a for _, a in got) == want_answer


@settings(max_examples=300, deadline=None)
@given(s=st.one_of(text, small), cuts=st.lists(st.integers(0, 200), max_size=12),
       stops=st.lists(st.text(alphabet="ab<", min_size=1, max_size=4), max_size=3))
def test_marker_cut_stops_at_the_first_marker_and_flushes_a_false_start(s, cuts, stops):
    cut = MarkerCut(stops)
    out = "".join(cut.feed(p)[0] for p in _pieces(s, cuts)) + cut.flush()
    found = [s.index(m) for m in stops if m in s]
    assert out == (s[: min(found)] if found else s)
    assert (cut.hit is not None) == bool(found)
