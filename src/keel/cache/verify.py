"""The stricter check a semantic hit must pass: the facts that change an answer must match.

Sentence embeddings place "How do I enable X?" and "How do I disable X?" close together;
so this check compares what they blur: numbers, named entities, negations, words of
direction (enable/disable, to/from) and which entity follows "to", "from" or "than".
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import Counter
from dataclasses import dataclass
from difflib import SequenceMatcher

from keel.cache.reading import differs, light, read, stem
from keel.cache.reading import words as read_words_of

_TOKEN = re.compile(r"[A-Za-z][A-Za-z'\u2019\-]*|\d+(?:[.,]\d+)*%?")
# Searched in the gap before a token only (the text before it, quadratic, was slow).
_SENTENCE_START = re.compile(r"(?:[.!?:;]\s+|[\"\u201c(]\s*)$")
# Longer questions get no semantic hit (exact ones still): MiniLM reads only the first 256
# word pieces (about 200 words), so their similarity says nothing about the rest, and
# comparing them would cost the event loop milliseconds per candidate.
_MAX_WORDS = 200

_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "fifteen": "15", "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50",
    "hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000",
    "half": "0.5", "twice": "2", "double": "2", "triple": "3", "first": "1st",
    "second": "2nd", "third": "3rd", "once": "1",
}  # fmt: skip

# "how does one …", "my other one", "which one": "one" that counts nothing.
_NOT_A_NUMBER = frozenset({"does", "do", "can", "could", "should", "would", "will", "must",
                           "no", "any", "every", "each", "some", "which", "this", "that",
                           "the", "other", "another", "new", "old", "my", "your", "a"})  # fmt: skip

_NEGATIONS = frozenset(
    {"not", "no", "never", "none", "nothing", "nobody", "neither", "nor", "without",
     "cannot", "cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent",
     "wont", "shouldnt", "wouldnt", "couldnt", "havent", "hasnt", "hadnt", "mustnt",
     "avoid", "stop", "prevent", "except", "unless"}
)  # fmt: skip

# Words whose opposite turns the question around; each side lists its common forms.
_OPPOSITES: tuple[tuple[frozenset[str], frozenset[str]], ...] = tuple(
    (frozenset(a.split()), frozenset(b.split()))
    for a, b in (
        ("enable enabled enabling enables", "disable disabled disabling disables"),
        ("encode encoded encoding encodes encoder", "decode decoded decoding decodes decoder"),
        ("encrypt encrypted encrypting encryption", "decrypt decrypted decrypting decryption"),
        (
            "increase increased increasing increases raise",
            "decrease decreased decreasing decreases lower reduce",
        ),
        ("add adding added adds insert", "remove removing removed removes delete deleting"),
        ("upload uploading uploaded uploads", "download downloading downloaded downloads"),
        ("import importing imported imports", "export exporting exported exports"),
        ("buy buying bought purchase", "sell selling sold"),
        ("before", "after"),
        ("above", "below"),
        ("min minimum smallest lowest", "max maximum largest highest biggest"),
        ("more", "less fewer"),
        (
            "larger bigger greater longer taller older heavier faster",
            "smaller shorter less younger lighter slower",
        ),
        ("ascending", "descending"),
        ("start starting started starts", "stop stopping stopped"),
        ("open opening opened", "close closing closed"),
        ("push pushing", "pull pulling"),
        ("compress compressing compression zip", "decompress decompressing unzip extract"),
        ("serialize serializing serialization", "deserialize deserializing deserialization"),
        ("lock locking locked", "unlock unlocking unlocked"),
        ("install installing installed", "uninstall uninstalling uninstalled"),
        ("true", "false"),
        ("pros advantages benefits", "cons disadvantages drawbacks"),
        ("hot hotter warm", "cold colder cool"),
        ("win won winning", "lose lost losing"),
        ("first", "last"),
        ("north northern", "south southern"),
        ("east eastern", "west western"),
        ("up", "down"),
        ("in", "out"),
        ("inside", "outside"),
        ("maximize", "minimize"),
        ("best", "worst"),
        ("cheap cheaper cheapest", "expensive pricier"),
        ("safe safest", "dangerous unsafe"),
    )
)
_NEGATING_PREFIXES = ("un", "dis", "non")
_SWAP_WORDS = 3  # the longest replaced span that still makes a minimal pair
_LINK_WORDS = 6  # names further apart than this are not compared as a pair
_ROLE_WORDS = frozenset({"to", "into", "from", "than", "vs", "versus", "over", "per", "by"})
_STOPWORDS = frozenset(
    {"the", "a", "an", "my", "your", "our", "their", "his", "her", "its", "this", "that",
     "these", "those", "some", "any", "all", "of"}
)  # fmt: skip

_FUNCTION_WORDS = _STOPWORDS | frozenset(
    {"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "is", "are",
     "was", "were", "be", "do", "does", "did", "can", "could", "should", "would", "will",
     "may", "might", "must", "name", "tell", "give", "show", "list", "explain", "describe",
     "me", "i", "you", "we", "please", "whats", "hows", "whos", "wheres", "in", "on", "at",
     "for", "with", "and", "or", "it", "there", "here", "so", "just", "exactly"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Facts:
    numbers: Counter[str]
    entities: tuple[str, ...]  # capitalised words not starting a sentence, lower-cased, in order
    words: frozenset[str]  # every lower-cased token
    negations: int
    roles: dict[str, str]  # role word → the content word after it (the first time)
    links: frozenset[tuple[str, tuple[str, ...], str]]  # (name, words between, next name)
    tokens: tuple[str, ...]  # every token, folded, in order


def _fold(token: str) -> str:
    """Lower case, possessive dropped, apostrophes removed: "Austria's" → "austria"."""
    lowered = token.lower().replace("\u2019", "'")
    if lowered.endswith("'s"):
        lowered = lowered[:-2]
    return lowered.replace("'", "")


@functools.lru_cache(maxsize=4096)  # the same question is checked against every candidate
def facts(text: str) -> Facts:
    numbers: Counter[str] = Counter()
    entities: list[str] = []
    words: set[str] = set()
    negations = 0
    roles: dict[str, str] = {}
    named: list[int] = []  # token positions of entities
    tokens = list(_TOKEN.finditer(text))
    for index, match in enumerate(tokens):
        token = match.group()
        folded = _fold(token)
        words.add(folded)
        if token[0].isdigit():
            numbers[token.rstrip("%").replace(",", "")] += 1
            continue
        previous = _fold(tokens[index - 1].group()) if index else ""
        if folded in _NUMBER_WORDS and not (folded == "one" and previous in _NOT_A_NUMBER):
            numbers[_NUMBER_WORDS[folded]] += 1
        if folded in _NEGATIONS or token.lower().endswith(("n't", "n\u2019t")):
            negations += 1
        gap = text[tokens[index - 1].end() if index else 0 : match.start()]
        starts_sentence = (index == 0 and not gap) or _SENTENCE_START.search(gap) is not None
        pronoun = token[:2] in ("I", "I'", "I\u2019")  # I, I'm, I've
        if (
            (token[0].isupper() and not starts_sentence) or (len(token) > 1 and token.isupper())
        ) and not pronoun:
            named.append(index)
            if folded not in entities:
                entities.append(folded)
    # "from paris to rome": the content word after each role word ("i need to know the
    # traffic to phoenix": "to know" is no role, "know" carries nothing).
    read_words = read_words_of(text)
    for index, word in enumerate(read_words):
        if word in _ROLE_WORDS and word not in roles:
            for follower in read_words[index + 1 : index + 4]:
                if follower not in _STOPWORDS and not light(follower):
                    roles[word] = follower
                    break
    folded_tokens = [_fold(t.group()) for t in tokens]
    links = frozenset(
        (folded_tokens[i], tuple(folded_tokens[i + 1 : j]), folded_tokens[j])
        for i, j in itertools.pairwise(named)
        if j - i <= _LINK_WORDS
    )
    return Facts(
        numbers, tuple(entities), frozenset(words), negations, roles, links, tuple(folded_tokens)
    )


def _one_word_swapped(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """True for a minimal pair: the same question with one short span of content words
    replaced ("recipe for hummus" / "recipe for lasagna", "arrive" / "leave").

    Paraphrases reword more than that; a synonym swapped alone ("big" / "large") is the
    price: it is a miss, not a wrong answer.
    """
    if a == b:
        return False
    edits = [op for op in SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
             if op[0] != "equal"]  # fmt: skip
    if len(edits) != 1 or edits[0][0] != "replace":
        return False
    _, i1, i2, j1, j2 = edits[0]
    if i2 - i1 > _SWAP_WORDS or j2 - j1 > _SWAP_WORDS:
        return False
    # Both sides must carry meaning: "Name the capital" / "What is the capital" rewords.
    return not set(a[i1:i2]) <= _FUNCTION_WORDS and not set(b[j1:j2]) <= _FUNCTION_WORDS


@functools.lru_cache(maxsize=4096)
def _canonical(text: str) -> tuple[str, ...]:
    """Stems with synonyms folded: "i need X" / "i want X", "cat" / "cats" is no minimal
    pair."""
    return tuple(word if word in _FUNCTION_WORDS else stem(word) for word in read_words_of(text))


def consistent(query: str, cached: str) -> bool:
    """True when `cached` (the stored query) asks for the same facts as `query`."""
    return not why_not(query, cached)


def why_not(query: str, cached: str) -> str:
    """The first reason `cached` answers a different question than `query` ("" if none)."""
    if len(query.split()) > _MAX_WORDS or len(cached.split()) > _MAX_WORDS:
        return "too long to compare"
    a, b = facts(query), facts(cached)
    if a.numbers != b.numbers:
        return "numbers"
    # Who, what and which, read case-blind (keel.cache.reading); its negation count leaves
    # out frames like "i'm not sure how to".
    reason = differs(read(query), read(cached))
    if reason:
        return reason
    # An entity of one must be a word of the other (sentence-initial capitals differ).
    if any(e not in b.words for e in a.entities) or any(e not in a.words for e in b.entities):
        return "entity"
    # "Why did Spain declare war on England?" against the reverse: the same words between
    # two names, the names swapped.
    if any((y, middle, x) in b.links for x, middle, y in a.links):
        return "swapped names"
    for one, other in _OPPOSITES:
        if not (one | other) & a.words or not (one | other) & b.words:
            continue  # one of them does not speak of this at all
        if (bool(one & a.words), bool(other & a.words)) != (
            bool(one & b.words),
            bool(other & b.words),
        ):
            return "opposites"
    if _one_word_swapped(_canonical(query), _canonical(cached)):
        return "minimal pair"
    # mute / unmute, connect / disconnect: a word and its negating prefix.
    either = a.words | b.words
    for word in a.words ^ b.words:
        for prefix in _NEGATING_PREFIXES:
            if word.startswith(prefix) and word[len(prefix) :] in either - {word}:
                return "negating prefix"
    # "from Paris to Rome" against "from Rome to Paris": the same words in swapped roles.
    for role, word in a.roles.items():
        theirs = b.roles.get(role)
        if theirs is not None and theirs != word and theirs in a.words and word in b.words:
            return "roles"
    return ""
