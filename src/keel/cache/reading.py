"""How a question reads, case-blind: who it is about, what it does, what it asks for and in
what form; `keel.cache.verify` rejects a semantic hit whose reading differs.

Real chat text is often all lower-case and full of request frames ("can you tell me",
"i need to know"), so this works on lower-cased words with contractions expanded, frames
set aside and common synonyms folded, never on capital letters.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from difflib import SequenceMatcher

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _bag(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Contractions, written with or without the apostrophe (chat text drops it).
_EXPAND = {
    "n't": ("not",), "'m": ("am",), "'re": ("are",), "'ve": ("have",), "'d": ("would",),
    "'ll": ("will",),
}  # fmt: skip
_WHOLE = {
    "can't": ("can", "not"), "cant": ("can", "not"), "cannot": ("can", "not"),
    "won't": ("will", "not"), "dont": ("do", "not"), "doesnt": ("does", "not"),
    "didnt": ("did", "not"), "isnt": ("is", "not"), "arent": ("are", "not"),
    "wasnt": ("was", "not"), "werent": ("were", "not"), "havent": ("have", "not"),
    "hasnt": ("has", "not"), "wouldnt": ("would", "not"), "shouldnt": ("should", "not"),
    "couldnt": ("could", "not"), "im": ("i", "am"), "ive": ("i", "have"),
    "whats": ("what", "is"), "wheres": ("where", "is"), "hows": ("how", "is"),
    "whos": ("who", "is"), "thats": ("that", "is"), "theres": ("there", "is"),
    "wanna": ("want", "to"), "gonna": ("going", "to"), "gotta": ("have", "to"),
    "youre": ("you", "are"), "ur": ("your",), "u": ("you",), "pls": ("please",),
    "plz": ("please",),
}  # fmt: skip

# Words of one meaning folded to one form (general English, not a topic's vocabulary).
_SYNONYMS = {
    word: canonical
    for canonical, words in {
        "want": "want need wish like wanting needing wishing",
        "kind": "kind kinds type types sort sorts",
        "help": "help assistance assist aid",
        "all": "all whole entire full complete",
        "nearest": "nearest closest",
        "percent": "percent percentage",
        "big": "big large huge",
        "small": "small little tiny",
        "buy": "buy purchase",
        "start": "start begin",
        "finish": "finish end",
        "find": "find locate",
        "symptom": "symptom symptoms sign signs",
        "author": "author writer write wrote written writes",
        "make": "make cook prepare",
        "reset": "reset recover restore",
        "reply": "reply respond answer",
        "car": "car vehicle",
        "movie": "movie film",
        "remember": "remember recall",
        "quick": "quick fast",
        "correct": "correct right",
        "use": "use used uses utilize",
        "take": "take taken took takes taking",
        "spend": "spend spent spending",
    }.items()
    for word in words.split()
}

_FIRST = frozenset({"i", "me", "my", "mine", "myself", "we", "us", "our", "ours"})
_SECOND = frozenset({"you", "your", "yours", "yourself"})
_WH = {"what": "info", "which": "info", "who": "info", "whom": "info", "whose": "info",
       "when": "when", "where": "where", "why": "why", "how": "how"}  # fmt: skip
_HOW = {"many": "info", "much": "info", "long": "when", "often": "when", "soon": "when",
        "far": "where"}  # fmt: skip
_AUX = frozenset({"is", "are", "am", "was", "were", "do", "does", "did", "have", "has",
                  "had", "will", "would", "should", "shall", "can", "could", "may",
                  "might", "must"})  # fmt: skip
_DETERMINERS = frozenset({"my", "your", "the", "a", "an", "this", "that", "these", "those",
                          "our", "his", "her", "their", "its", "some"})  # fmt: skip
_PARTICLES = frozenset({"on", "in", "into", "onto", "off", "out", "up", "down", "away",
                        "back", "over"})  # fmt: skip
_DURATIONS = frozenset({"days", "hours", "minutes", "weeks", "months", "years", "longer",
                        "time"})  # fmt: skip
_UNTIL = frozenset({"until", "till", "til", "before"})
_FINDING = frozenset({"find", "get", "see", "locate", "obtain", "view", "check"})
_HELP = frozenset({"help", "assistance", "guidance", "assist"})
_BE = frozenset({"is", "are", "am", "was", "were"})
# "detroit is in what timezone", "the definition of zesty is what": a question word late
# in the sentence after one of these asks the question.
_BEFORE_LATE_WH = frozenset({"and", "or", "in", "at", "on", "for", "of", "to", "from", "with",
                             "by", "is", "are", "was", "like"})  # fmt: skip
_ASKING_AUX = frozenset({"can", "could", "would", "will", "may"})  # "can you set …" asks for action
_PAST = frozenset({"did", "was", "were", "had", "last", "ago", "yesterday", "previous",
                   "previously", "since"})  # fmt: skip
_FUTURE = frozenset({"will", "next", "until", "tomorrow", "upcoming", "should", "shall",
                     "going"})  # fmt: skip
# Not "left": "do i have left" asks what remains.
_PARTICIPLES = frozenset({"taken", "spent", "gone", "done", "made", "been", "got", "gotten",
                          "had", "paid", "sent", "given", "seen"})  # fmt: skip
# Imperatives that ask for information, not for something to be done.
_SHOWING = frozenset({"list", "read", "display", "name", "describe", "recite", "show",
                      "convert", "calculate", "compute", "translate", "define", "explain",
                      "summarize", "recommend", "suggest", "spell", "search"})  # fmt: skip
_WAY_NOUNS = frozenset({"way", "ways", "steps", "step", "instructions", "procedure",
                        "process", "recipe", "guide", "method"})  # fmt: skip
_WHEN_NOUNS = frozenset({"time", "date", "day", "year", "month", "hour"})
_PRESENT = frozenset({"do", "does", "is", "are", "am", "has", "have"})
_STATEMENT_START = frozenset({"i", "my", "me", "the", "a", "an", "our", "it", "there",
                              "this", "that", "we", "its", "their", "his", "her"})  # fmt: skip
_POLITE = frozenset({"please", "hey", "hi", "hello", "ok", "okay", "so", "um", "uh", "well",
                     "kindly", "just", "quickly", "now", "and", "also", "yo", "siri",
                     "alexa", "google", "computer", "assistant"})  # fmt: skip

# Frames that wrap a question ("can you tell me …", "i need to know …", "i'm not sure
# how to …"): set aside before the form, persons and negations are read.
_FRAMES = tuple(
    tuple(frame.split())
    for frame in sorted(
        {
            "can you tell me", "could you tell me", "would you tell me", "will you tell me",
            "can you let me know", "could you let me know", "would you let me know",
            "can you show me", "could you show me", "can you give me", "could you give me",
            "can you find out", "can you check",
            "can you look up", "can you explain", "could you explain", "can you say",
            "can you find", "could you find", "would you please tell me",
            "help me understand", "help me find", "help me figure out",
            "do you know", "did you know", "would you know", "i want to know",
            "i would want to know", "i am wanting to know", "i want to find out",
            "i want to learn", "i want to see", "i want to check", "i want to understand",
            "i have to know", "i got to know", "i would like to know", "i wonder",
            "i was wondering", "i am wondering", "i am curious", "i am not sure",
            "i am unsure", "i do not know", "i do not remember", "i can not remember",
            "i am unable to remember", "i forgot", "i have forgotten", "i have no idea",
            "not sure", "tell me", "let me know", "show me", "give me", "find out",
            "look up", "check", "explain", "i am trying to figure out",
            "figure out", "i want to be informed", "inform me", "remind me",
            "i am looking to find out", "i want to ask", "i would like to ask",
        },
        key=lambda f: -len(f.split()),
    )
)  # fmt: skip
_ASK_FRAMES: dict[str, tuple[tuple[str, ...], ...]] = {
    first: tuple(frame for frame in _FRAMES if frame[0] == first)
    for first in {frame[0] for frame in _FRAMES}
}  # by first word, longest first

# Words that carry no fact of their own: function words, request frames, and fillers.
_LIGHT = (
    _FIRST | _SECOND | _AUX | _POLITE | frozenset(_WH) | frozenset(_HOW) | _SHOWING | _WAY_NOUNS
    | _bag(
        """the a an this that these those some any of to for in on at by with about from and
        or so if whether there here it its be been being not no tell know let show give
        find out look check see want help like really exactly actually currently right
        provide inform learn wonder curious sure unsure idea understand say one thing things
        way steps step information info details detail anything something get got getting
        go able possible again very more most many much amount number total count quantity
        what then than up as into yes kindly please mind ask question yet still already"""
    )
)  # fmt: skip

# Actions done to an object; two readings with different actions ask for different work.
_ACTIONS = {
    word: action
    for action, words in {
        "add": "add put include insert append place",
        "remove": "remove delete erase drop clear",
        "use": "use take spend consume",
        "raise": "increase raise higher boost extend",
        "lower": "decrease reduce lower",
        "freeze": "freeze frozen froze block blocked lock locked suspend",
        "cancel": "cancel",
        "change": "change update edit modify alter replace switch reset",
        "create": "create schedule reserve",
        "pay": "pay",
        "report": "report",
        "order": "order buy",
        "transfer": "transfer send move",
        "request": "request apply",
        "share": "share",
        "redeem": "redeem",
    }.items()
    for word in words.split()
}
_ACTION_STARTS = frozenset(word[:3] for word in (*_ACTIONS, *_SYNONYMS))
_EXTREMES = _bag(
    """lowest highest minimum maximum min max least cheapest best worst smallest
    biggest largest fastest earliest latest first last top"""
)
_NEGATIONS = frozenset({"not", "no", "never", "without", "nothing", "none", "nobody",
                        "neither", "nor", "avoid", "prevent", "except", "unless"})  # fmt: skip


def synonym(word: str) -> str:
    """The one form a word of several synonyms is read as ("need" → "want")."""
    return _SYNONYMS.get(word, word)


def light(word: str) -> bool:
    """True for a word that carries no fact of its own (function words, frames, fillers)."""
    return word in _LIGHT or synonym(word) in _LIGHT


def stem(word: str) -> str:
    """A crude English stem, enough to match "changed" with "change", "days" with "day"."""
    word = _SYNONYMS.get(word, word)
    for suffix, keep in (("ies", "y"), ("ied", "y"), ("ing", ""), ("ed", ""), ("es", ""),
                         ("s", "")):  # fmt: skip
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: len(word) - len(suffix)] + keep
            break
    return word.rstrip("e") if len(word) > 3 else word


_PHRASES = dict((
    ("would like", "want"), ("would love", "want"), ("thank you", "thanks"),
    ("have to", "want to"), ("got to", "want to"), ("need to", "want to"),
    ("gone through", "used"), ("go through", "use"), ("went through", "used"),
    ("best way", "way"), ("good way", "way"), ("good recipe", "recipe"),
    ("short for", "stand for"), ("abbreviation of", "stand for"),
    ("abbreviation for", "stand for"), ("full form of", "stand for"),
    ("wish to", "want to"), ("desire to", "want to"), ("i must", "i want to"),
    ("how come", "why"), ("how much time", "how long"), ("what amount of", "how much"),
    ("is it possible to", "can i"), ("will it be possible to", "can i"),
    ("what do i do to", "how do i"), ("what can i do to", "how can i"),
    ("what should i do to", "how should i"), ("what steps can i take to", "how can i"),
    ("what steps should i take to", "how should i"), ("does one", "do i"),
    ("can one", "can i"), ("should one", "should i"), ("go ahead and", ""),
    ("try and", "try to"), ("i intend to", "i want to"), ("is there a way to", "can i"),
    ("are you able to", "can you"), ("am i able to", "can i"),
))  # fmt: skip
# Adverbs that soften or stress a request anywhere in it ("i really want to know").
_FILLERS = frozenset({"really", "actually", "just", "exactly", "kindly", "truly", "please",
                      "honestly", "definitely", "basically"})  # fmt: skip
# "what's", "how's", "it's": the "'s" is "is" after these, a possessive elsewhere.
_IS_AFTER = frozenset({"what", "where", "how", "who", "when", "why", "that", "there", "it",
                       "here", "which"})  # fmt: skip
_PHRASE = re.compile(r"\b(?:" + "|".join(map(re.escape, _PHRASES)) + r")\b")


def words(text: str) -> list[str]:
    """Lower-cased words, contractions expanded, possessive 's dropped."""
    found: list[str] = []
    for token in _WORD.findall(text.lower().replace("\u2019", "'")):
        if token in _WHOLE:
            found.extend(_WHOLE[token])
            continue
        head, apostrophe, tail = token.partition("'")
        if apostrophe:
            suffix = "'" + tail
            if token.endswith("n't"):
                found.extend((token[:-3], "not"))
                continue
            found.append(head)
            if suffix == "'s" and head in _IS_AFTER:
                found.append("is")
            found.extend(_EXPAND.get(suffix, ()))  # "'s" is a possessive or "is": dropped
            continue
        found.append(token)
    # "would like to" and "have to" are "want to"; "thank you" names no one.
    joined = _PHRASE.sub(lambda match: _PHRASES[match.group()], " ".join(found))
    return [word for word in joined.split() if word not in _FILLERS]


def _strip_frames(tokens: list[str]) -> tuple[list[str], bool]:
    """Drop leading politeness and asking frames; True when a frame asked a question."""
    asked = False
    changed = True
    while changed and tokens:
        changed = False
        while tokens and tokens[0] in _POLITE:
            tokens, changed = tokens[1:], True
        for frame in _ASK_FRAMES.get(tokens[0], ()) if tokens else ():
            if tuple(tokens[: len(frame)]) == frame:
                tokens, asked, changed = tokens[len(frame) :], True, True
                break
    return tokens, asked


@dataclass(frozen=True, slots=True)
class Reading:
    form: str  # what answer is wanted: see _form
    persons: tuple[int, ...]  # 1 and 2 in order of mention, repeats collapsed, frames left out
    tense: str  # "past", "present", "future" or "" (the first auxiliary, else time words)
    time: frozenset[str]  # "past" / "future" for words like last, next, until, ago
    actions: frozenset[str]
    content: tuple[str, ...]  # stems of the words that carry facts, in order
    negations: int  # outside question frames ("not sure how to" negates nothing)
    # Stems of words followed by "me" ("call me bob" names the user; "call bob" phones
    # him); empty when "for me" / "to me" says the same without the order.
    to_me: frozenset[str]
    # The verb a request starts with and the first particle after it ("put … on" plays,
    # "put … in" adds); "" when there is none.
    particle: tuple[str, str]
    # Stems joined by "and" / "or" ("water and electricity bill"): an object listed.
    listed: frozenset[str]


def _wh(tokens: list[str], index: int) -> str:
    """The kind of answer a question word at `index` asks for."""
    word, after = tokens[index], tokens[index + 1 : index + 3]
    nxt = after[0] if after else ""
    if word == "how":
        if (nxt in ("many", "much") and _DURATIONS & set(tokens[index + 2 : index + 4])
                and _UNTIL & set(tokens[index + 3 : index + 6])):  # fmt: skip
            return "when"  # "how many days until my day off" asks when; "… in 3 hours" not
        if nxt in _HOW:
            return _HOW[nxt]
        if (nxt in _AUX and nxt not in _BE) or nxt == "to":
            return "procedure"  # "how do i …", "how to …"; "how is my …" asks what it is
        return "info"  # "how is the weather"
    if word in ("what", "which"):
        near = tokens[index + 1 : index + 6]
        if any(t in _WHEN_NOUNS and u != "zone" for t, u in itertools.pairwise([*near, ""])):
            return "when"  # "what time", "which day"; "what time zone" asks which zone
        if any(t in _WAY_NOUNS for t in near):
            return "procedure"  # "what's the way to", "what are the steps"
    finding = tokens[index + 3] if len(tokens) > index + 3 else ""
    if word == "where" and after[1:] and after[0] in _AUX and after[1] in _FIRST | _SECOND:
        return "procedure" if finding in _FINDING else "where"  # "where can i find my w-2"
    return _WH[word]


def _form(tokens: list[str], asked: bool) -> str:
    """What kind of answer is wanted: "procedure" (how to), "action" (do it for me),
    "info" (what/which/who/how much), "when", "where", "why", "yesno", or "statement"."""
    if not tokens:
        return "info" if asked else "statement"
    first = tokens[0]
    if first in _WH:
        return _wh(tokens, 0)
    if first in _WAY_NOUNS:
        return "procedure"  # "steps to recover my password"
    if first in _AUX:
        if first in _ASKING_AUX and len(tokens) > 1 and tokens[1] in ("you", "i", "we"):
            if len(tokens) > 2 and tokens[2] in _SHOWING:
                return "info"  # "can you read me my list"
            if len(tokens) > 2 and tokens[2] in _HELP:
                return "procedure"  # "can you help me change my pin", as "help me …"
            return "action"  # "can you set a reminder", "can i get a higher limit"
        return "yesno"
    # "i forgot my password, how can i reset it": a question asked later in the sentence.
    for index, token in enumerate(tokens[1:], start=1):
        if (
            token in _WH
            and (
                token != "what"
                or index == len(tokens) - 1
                or tokens[index - 1] in _BEFORE_LATE_WH
                # "my card is lost what do i do"; not "i forgot what my pin is"
                or tokens[index + 1 : index + 3] in (["do", "i"], ["should", "i"], ["can", "i"])
            )
        ):
            return _wh(tokens, index)
    if first in ("if", "whether"):
        return "yesno"
    if first in _SHOWING:
        return "info"  # "list everything on my list", "convert 5 pounds to ounces"
    if _HELP & set(tokens[:3]) and first not in _DETERMINERS:
        return "procedure"  # "help me change my pin", "i want help rolling over my 401k"
    if first in ("want", "to"):  # "(i) want to …" after a frame was dropped, or bare
        return "action"
    if first == "i" and len(tokens) > 1 and synonym(tokens[1]) in ("want", "would", "will", "am"):
        return "action"
    if asked:
        if any(t in _WAY_NOUNS for t in tokens[:3]):
            return "procedure"  # "give me a recipe for …"
        return "info"  # "tell me my balance" asks what it is
    if first in _STATEMENT_START:
        return "statement"
    return "action"  # an imperative: "add milk to my list"


def _tense(tokens: list[str]) -> str:
    for index, token in enumerate(tokens):
        if token in ("have", "has"):
            for following in tokens[index + 1 : index + 4]:
                if following in _DETERMINERS:
                    break  # "should i have my oil changed": have it done, not done
                if _participle(following):
                    return "past"  # "have i used", "do i have saved up", "have i lately spent"
    for index, token in enumerate(tokens):
        if index and tokens[index - 1] == "to":
            continue  # "what to do": an infinitive, no tense
        if token in ("did", "was", "were", "had"):
            return "past"
        if token in ("will", "shall", "should"):
            return "future"
        if token in _PRESENT or token in ("can", "may"):
            return "present"
    return ""


def _participle(token: str) -> bool:
    return token in _PARTICIPLES or (token.endswith("ed") and len(token) >= 4)


@functools.lru_cache(maxsize=4096)  # a lookup reads its question once for all candidates
def read(text: str) -> Reading:
    tokens, asked = _strip_frames(words(text))
    form = _form(tokens, asked)
    # "How do I know if I have the flu? What are the signs?": the last question says
    # what answer is wanted.
    sentences = [part for part in re.split(r"[?.!]+\s+", text.strip()) if part.strip()]
    if len(sentences) > 1:
        form = _form(*_strip_frames(words(sentences[-1])))
    elif form in ("action", "statement") and "," in text:
        # "in tokyo, what time is it", "i got a new job, can you help me with …": the
        # clause that asks says what answer is wanted.
        for clause in text.split(",")[1:]:
            rest, asked_ = _strip_frames(words(clause))
            if rest and (rest[0] in _WH or rest[0] in _AUX):
                form = _form(rest, asked_)
                break
    persons: list[int] = []
    for index, token in enumerate(tokens):
        if index >= 2 and tokens[index - 2] == "how" and tokens[index - 1] in _AUX:
            continue  # "how do you say …", "how do i …": anyone, not a person
        if index == 1 and token == "you" and tokens[0] in _ASKING_AUX:
            continue  # "can you read me my list": the one asked, not the one asked about
        person = 1 if token in _FIRST else 2 if token in _SECOND else 0
        if person and (not persons or persons[-1] != person):
            persons.append(person)
    # Auxiliaries give the tense; these are the other words of time (last, next, until).
    time = frozenset(
        ("past" if t in _PAST else "future")
        for t in tokens
        if (t in _PAST or t in _FUTURE) and t not in _AUX
    )
    tense = _tense(tokens)
    if tense == "future" and form == "procedure":
        tense = "present"  # "how can i …" / "how should i …" / "how will i …" ask one way
    elif tense == "present" and time == {"future"}:
        tense = "future"  # "when is my next paycheck" / "when will my next paycheck be"
    content = tuple(stem(t) for t in tokens if t not in _LIGHT and not t.isdigit())
    actions = frozenset(_ACTIONS[stem_] for t in tokens if (stem_ := _base(t)) in _ACTIONS)
    negations = sum(t in _NEGATIONS for t in tokens)
    return Reading(
        form, tuple(persons), tense, time, actions, content, negations,
        _to_me(tokens), _particle(tokens, form), _listed(tokens),
    )  # fmt: skip


def _to_me(tokens: list[str]) -> frozenset[str]:
    if any(a in ("for", "to") and b in ("me", "us") for a, b in itertools.pairwise(tokens)):
        return _FOR_ME
    padded = [*tokens, "", ""]
    return frozenset(
        stem(word)
        for index, word in enumerate(tokens)
        # "set me an alarm", "require me to": me is who it is for, as "for me" says
        if padded[index + 1] in ("me", "us")
        and word not in _LIGHT
        and padded[index + 2] not in _DETERMINERS
        and padded[index + 2] != "to"
    )


_FOR_ME = frozenset({"for me"})  # "set an alarm for me": compared with nothing


def _particle(tokens: list[str], form: str) -> tuple[str, str]:
    if form != "action" or not tokens or tokens[0] in _LIGHT:
        return ("", "")
    for token in tokens[1:6]:
        if token in _PARTICLES:
            return (tokens[0], token)
    return (tokens[0], "")


def _listed(tokens: list[str]) -> frozenset[str]:
    listed: set[str] = set()
    for index in range(1, len(tokens) - 1):
        if tokens[index] in ("and", "or"):
            listed.update(
                stem(word) for word in (tokens[index - 1], tokens[index + 1])
                if word not in _LIGHT and synonym(word) not in _LIGHT and not word.isdigit()
            )  # fmt: skip
    return frozenset(listed)


def _base(token: str) -> str:
    """The dictionary form of a verb, for the action table ("added" → "add")."""
    if token == "using" or token[:3] not in _ACTION_STARTS:  # "using python": no use
        return token
    token = _SYNONYMS.get(token, token)
    if token in _ACTIONS:
        return token
    for suffix, keep in (("ied", "y"), ("ing", "e"), ("ing", ""), ("ed", "e"), ("ed", ""),
                         ("es", ""), ("s", "")):  # fmt: skip
        if token.endswith(suffix):
            base = token[: len(token) - len(suffix)] + keep
            if base in _ACTIONS:
                return base
            if len(base) > 2 and base[-1] == base[-2] and base[:-1] in _ACTIONS:
                return base[:-1]  # "dropped" → "drop"
    return token


def _unmatched(words: tuple[str, ...], others: tuple[str, ...]) -> set[str]:
    """Words of one side with no equal in the other, nor a longer or shorter form of them
    ("calorie" / "caloric"; both of five letters or more, within three of each other)."""
    exact = set(others)
    by_start: dict[str, list[str]] = {}
    for other in exact:
        if len(other) >= 5:
            by_start.setdefault(other[:5], []).append(other)
    return {
        word
        for word in words
        if word not in exact
        and not any(
            (word.startswith(other) or other.startswith(word)) and abs(len(word) - len(other)) <= 3
            for other in by_start.get(word[:5], ()) if len(word) >= 5
        )
    }  # fmt: skip


def differs(a: Reading, b: Reading) -> str:
    """Why two readings ask different things ("" when they agree)."""
    if a.form != b.form:
        return "form"
    if (2 in a.persons or 2 in b.persons) and a.persons != b.persons:
        return "persons"
    if a.tense and b.tense and a.tense != b.tense:
        return "tense"
    if a.time and b.time and a.time != b.time:
        return "time"
    if (a.time and not b.time and b.tense and b.tense != "past" and "past" in a.time) or (
        b.time and not a.time and a.tense and a.tense != "past" and "past" in b.time
    ):
        return "time"
    if a.actions != b.actions:
        return "action"
    (verb, particle), (their_verb, their_particle) = a.particle, b.particle
    if verb == their_verb and particle and their_particle and particle != their_particle:
        return "particle"  # "put my playlist on" / "put this in my playlist"
    if _FOR_ME not in (a.to_me, b.to_me) and (a.to_me ^ b.to_me) & set(a.content) & set(b.content):
        return "persons"  # "call me mary" / "call mary"
    if a.negations != b.negations:
        return "negation"
    only_a, only_b = _unmatched(a.content, b.content), _unmatched(b.content, a.content)
    # A word put in another's place ("time in paris" / "timezone of paris"): another fact.
    matcher = SequenceMatcher(None, a.content, b.content, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if (op == "replace" and i2 - i1 == 1 and j2 - j1 == 1 and a.content[i1] in only_a
                and b.content[j1] in only_b):  # fmt: skip
            return "content"
    # "my water bill" / "the bill for my water and electricity": one more thing asked for.
    if (only_a & a.listed) or (only_b & b.listed):
        return "listed"
    # "how much is my bill" / "what is the lowest i can pay": an extreme picks another item.
    if (only_a | only_b) & _EXTREMES:
        return "extreme"
    return ""
