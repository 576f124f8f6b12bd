"""The owner's block list: entries, and whether a prompt uses one (pure, no I/O).

Matching is deliberately simple so owners can predict it:
- whole words, ignoring case and accents (`Nude` and `nüde` match `nude`; `nudes` does not);
- an entry ending in `*` matches any word that starts with it (`nud*` matches nude, nudes, nudity);
- a phrase matches with any spaces or punctuation between its words (`red fox` matches `red, fox`);
- punctuation (not spaces) between the letters of a word still matches (`n.u.d.e`, `n_u_d_e`, `n-u-d-e`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property

MAX_ENTRY_CHARS = 100
MAX_ENTRIES = 500

# Word characters are letters and digits; `_` counts as a separator, as in booru tags (`red_fox`).
_WORD_CHAR = r"[^\W_]"
_INSIDE_WORD = r"(?:[^\w\s]|_)*"  # punctuation but not whitespace, between the letters of one word
_BETWEEN_WORDS = r"[\W_]+"


def fold_char(char: str) -> str:
    """One character in lower case without accents, compatibility forms unified (full-width letters as ASCII)."""
    decomposed = unicodedata.normalize("NFKD", char)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def fold(text: str) -> str:
    """`fold_char` over a whole text."""
    return "".join(fold_char(c) for c in text)


def _fold_with_origins(text: str) -> tuple[str, list[int]]:
    """The folded text, and for each of its characters the index of the character it came from."""
    parts, origins = [], []
    for index, char in enumerate(text):
        folded = fold_char(char)
        parts.append(folded)
        origins += [index] * len(folded)
    return "".join(parts), origins


class BadEntry(ValueError):
    """An entry an admin cannot add; the message says why."""


def normalize_entry(raw: str) -> str:
    """The canonical form of an entry: folded words separated by single spaces, maybe a trailing `*`."""
    folded = fold(raw).strip()
    prefix = folded.endswith("*")
    words = re.findall(r"[^\W_]+", folded.rstrip("*"))
    if not words:
        raise BadEntry(f"“{raw.strip()}” has no letters or digits to match.")
    entry = " ".join(words) + ("*" if prefix else "")
    if len(entry) > MAX_ENTRY_CHARS:
        raise BadEntry(f"Entries are at most {MAX_ENTRY_CHARS} characters; “{raw.strip()[:40]}…” is longer.")
    return entry


def split_entries(raw: str) -> list[str]:
    """Several entries typed in one option, separated by commas."""
    return [part for part in (p.strip() for p in raw.split(",")) if part]


def _pattern(entry: str) -> str:
    prefix = entry.endswith("*")
    words = entry.rstrip("*").split(" ")
    body = _BETWEEN_WORDS.join(_INSIDE_WORD.join(re.escape(letter) for letter in word) for word in words)
    end = rf"{_WORD_CHAR}*" if prefix else ""
    return rf"(?<!{_WORD_CHAR}){body}{end}(?!{_WORD_CHAR})"


@dataclass(frozen=True)
class BlockList:
    """Normalized entries (see `normalize_entry`), matched as the module docstring describes."""

    entries: tuple[str, ...] = ()

    @cached_property
    def _regex(self) -> re.Pattern[str] | None:
        if not self.entries:
            return None
        # Longest first, so a phrase wins over a word it starts with and the reported match is the whole phrase.
        ordered = sorted(self.entries, key=len, reverse=True)
        return re.compile("|".join(f"(?:{_pattern(e)})" for e in ordered))

    def find(self, text: str) -> str | None:
        """The first blocked word or phrase in `text`, as written there, or None."""
        if self._regex is None:
            return None
        folded, origins = _fold_with_origins(text)
        match = self._regex.search(folded)
        if match is None:
            return None
        return text[origins[match.start()] : origins[match.end() - 1] + 1]
