"""Offline noun-phrase extraction for free captions.

The official demo runs NLTK on the lowercased caption (``word_tokenize`` → ``pos_tag`` →
``RegexpParser("NP: {<DT>?<JJ.*>*<NN.*>+}")``), which downloads its tagger at import time. No
small, permissively licensed English tagger with bundled data exists on PyPI, so this module
approximates the same chunks with rules and word lists, offline and in well under a millisecond
per caption:

1. split the lowercased caption into words, clitics (``'s``, ``n't``) and punctuation, keeping
   character offsets;
2. tag each word from closed-class lists (determiners, pronouns, prepositions, conjunctions,
   auxiliaries and modals, adverbs), a list of common adjectives, a list of common verbs with their
   inflections, and suffixes (``-ing``/``-ed`` participles, ``-ly`` adverbs, ``-ous``/``-ful``/...
   adjectives); any other word is a noun;
3. decide ambiguous words from their neighbours: a participle or ``-ly`` word between a
   determiner/adjective and a noun modifies the noun (``"a sleeping cat"``), one after a noun is a
   verb (``"a man walking a dog"``); a verb-or-noun word (``"walks"``, ``"stop"``) is a noun after a
   determiner, adjective or preposition and a verb after a pronoun, an auxiliary or (for ``-s``
   forms, or base forms after a plural) a noun;
4. chunk ``determiner? numeral? ((degree-adverb)* adjective)* noun+``, scanning left to right like
   the ``RegexpParser``.

Deliberate differences from the NLTK grammar, chosen because they give better grounding phrases:
numerals are kept in the determiner slot (``"two cats"``, not ``"cats"``: phrase-grounding data
such as Flickr30K annotates ``"two young guys"``), degree adverbs before an adjective are kept
(``"a very large elephant"``), and ``"in front of"`` / ``"on top of"`` act as prepositions.
As in NLTK, possessive pronouns are not part of the phrase (``"her dog"`` → ``"dog"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_TOKEN_RE = re.compile(
    r"[a-z]+(?=n['’]t\b)"  # "do" of "don't"
    r"|n['’]t\b"  # "n't"
    r"|['’](?:s|re|ve|ll|d|m)\b"  # clitics
    r"|[^\W_]+(?:(?:-|['’](?!(?:s|re|ve|ll|d|m|t)\b))[^\W_]+|(?<=[0-9])\.[0-9]+)*"  # words
    r"|\S"  # any other character is punctuation
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Coarse tags.
DET, NUM, ADJ, NOUN, VERB, ADV, DEG = "DET", "NUM", "ADJ", "NOUN", "VERB", "ADV", "DEG"
PRON, POSS, PREP, CONJ, AUX, PUNCT, OTHER = "PRON", "POSS", "PREP", "CONJ", "AUX", "PUNCT", "OTHER"
# Lexical classes resolved from context.
VFORM, PART, LY = "VFORM", "PART", "LY"

_DETERMINERS = _words("a an the this that these those each every some any no another all both either neither half")
_NUMERALS = _words(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand "
    "dozen"
)
_PRONOUNS = _words(
    "i me you he him she it we us they them myself yourself himself herself itself ourselves themselves "
    "someone somebody everyone everybody anyone anybody nobody none mine yours hers ours theirs"
)
_POSSESSIVES = _words("my your his her its our their")
_PREPOSITIONS = _words(
    "in on at of with by for from into onto over under underneath near behind beside besides between among "
    "through across along alongside around about above below beneath against toward towards up down off out "
    "inside outside past without within upon during after before like via amid atop throughout than as "
    "aboard beyond"
)
_CONJUNCTIONS = _words("and or but nor so yet while because although though if whereas then plus")
_AUXILIARIES = _words(
    "is are was were be been being am has have had having do does did will would can could shall should "
    "may might must n't n’t 're ’re 've ’ve 'll ’ll 'd ’d 'm ’m"
)
_DEGREE = _words("very really quite extremely rather fairly so too super slightly somewhat incredibly partly")
_ADVERBS = _words(
    "also just still almost here now together away back even only nearly mostly else ever never always "
    "often sometimes already again upside outdoors indoors downstairs upstairs nearby far alone ahead "
    "apart aside anyway instead sideways overhead underwater home"
)
_OTHER = _words("to not there what who whom whose which where when why how yes please etc 's ’s '")
_ADJECTIVES = _words(
    # colours and looks
    "red blue green yellow black white brown gray grey orange pink purple silver golden gold beige tan "
    "maroon navy teal turquoise violet dark bright pale colorful colourful multicolored shiny striped "
    "spotted plaid blond blonde bald hairy furry fluffy fuzzy curly straight pretty beautiful ugly cute "
    "handsome lovely nice fancy plain"
    # size and shape
    " big small large little tiny huge giant enormous tall short long wide narrow thick thin fat skinny "
    "high low round square flat deep shallow heavy fast slow quick strong soft hard smooth rough sharp "
    "loud calm"
    # age, state, quality
    " old new young elderly adult ancient modern good bad great fine clean dirty messy neat empty full "
    "open closed wet dry hot cold warm cool fresh ripe rotten raw sweet sour broken busy crowded quiet "
    "sunny cloudy rainy snowy foggy windy stormy grassy rocky sandy muddy dusty leafy wooden wooded "
    "frozen stuffed happy sad angry tired hungry asleep awake alive dead ready real fake"
    # quantity, order, kind
    " many few several other same different various single double triple first second third fourth "
    "fifth last next main whole entire own favorite favourite male female free wild domestic electric "
    "digital public private outdoor indoor rear upper lower "
    "professional local urban rural busy french italian chinese japanese mexican asian african american"
)
_NOUN_EXCEPTIONS = _words(
    # -ing nouns
    "thing something nothing anything everything king ring earring wing string spring sling ceiling "
    "building clothing painting drawing evening morning awning railing icing frosting pudding wedding "
    "bedding stuffing topping siding lightning dumpling sibling duckling seedling herring offspring viking "
    "crossing setting dressing seating lighting flooring tubing netting wiring opening filling clearing "
    "landing"
    # -ed / -ly / -ful / -able nouns
    " bed shed sled seed weed reed steed speed tweed hundred breed"
    " family butterfly dragonfly firefly belly jelly lily rally bully ally supply assembly holly tally "
    "gully july italy reply doily"
    " handful mouthful spoonful cupful armful table cable vegetable stable fable turntable timetable"
)
_IRREGULAR_PLURALS = _words("people men women children police mice geese feet teeth cattle sheep deer fish folks")
_VERB_BASES = (
    "walk run sit stand ride hold eat drink play look wear carry jump lie lay sleep fly swim surf ski "
    "skate snowboard throw catch hit kick swing talk watch read write cook cut drive park pull push use "
    "wait cross climb rest lean hang grow graze feed pose smile laugh reach show take make get go "
    "come move fill stare chase bite brush wash pick put open close touch hug kiss shake "
    "fall float sail paddle sell buy prepare serve slice work perform dance sing celebrate gather "
    "stop turn travel tow load lift practice paint build sew see sleep wave help want love enjoy begin "
    "start finish keep give bring leave need "
    "cry yell talk speak listen pour mix bake roast grill fry chop peel pack wrap drag kneel crouch "
    "squat bend lick sniff bark fetch herd dive splash wade flip smash shoot aim"
)
_IRREGULAR_VERB_FORMS = _words(
    "sat stood held ate eaten drank drunk ran rode ridden wore worn lain slept flew flown swam swum threw "
    "thrown caught made took taken got gotten went gone came fell fallen hung grew grown fed shook shaken "
    "shown left built put saw seen gave given brought kept began begun bought sold told found thought "
    "stuck spun sung hid hidden bit bitten broke broken froze frozen spread stolen stole chose chosen "
    "driven drove written wrote struck swung knelt lit"
)
_MULTIWORD_PREPOSITIONS = (("in", "front", "of"), ("on", "top", "of"))
_NP_PREFIX = frozenset({DET, NUM, ADJ, DEG, POSS})
_NOUNISH = frozenset({NOUN, VFORM, ADJ, PART, LY})


def _inflections(base: str) -> tuple[set[str], set[str]]:
    """(base and -s forms, -ing and -ed forms) of a regular verb; over-generating is harmless."""
    if base.endswith(("s", "sh", "ch", "x", "z", "o")):
        third = base + "es"
    elif base.endswith("y") and base[-2:-1] not in "aeiou":
        third = base[:-1] + "ies"
    else:
        third = base + "s"
    if base.endswith("ie"):
        stem = base[:-2] + "y"
    elif base.endswith("e") and not base.endswith("ee"):
        stem = base[:-1]
    else:
        stem = base
    participles = {stem + "ing", base + base[-1] + "ing"}  # "ride" -> "riding", "sit" -> "sitting"
    if base.endswith("e"):
        participles.add(base + "d")
    elif base.endswith("y") and base[-2:-1] not in "aeiou":
        participles.add(base[:-1] + "ied")
    else:
        participles |= {base + "ed", base + base[-1] + "ed"}
    return {base, third}, participles


def _build_verb_tables() -> tuple[dict[str, bool], frozenset[str]]:
    finite: dict[str, bool] = {}  # word -> is an -s form
    participles: set[str] = set(_IRREGULAR_VERB_FORMS)
    for base in _VERB_BASES.split():
        forms, parts = _inflections(base)
        for form in forms:
            finite.setdefault(form, form != base)
        participles |= parts
    return finite, frozenset(participles)


_FINITE_VERBS, _PARTICIPLES = _build_verb_tables()


def _lexical_tag(word: str) -> str:
    """Context-free tag of one lowercased token."""
    if not any(ch.isalnum() for ch in word):
        return PUNCT if word not in _OTHER else OTHER
    if word[0].isdigit():
        return NUM
    for tag, words in (
        (DET, _DETERMINERS), (NUM, _NUMERALS), (PRON, _PRONOUNS), (POSS, _POSSESSIVES),
        (PREP, _PREPOSITIONS), (CONJ, _CONJUNCTIONS), (AUX, _AUXILIARIES), (DEG, _DEGREE),
        (ADV, _ADVERBS), (OTHER, _OTHER), (ADJ, _ADJECTIVES), (NOUN, _NOUN_EXCEPTIONS),
    ):  # fmt: skip
        if word in words:
            return tag
    if word in _FINITE_VERBS:
        return VFORM
    if word in _PARTICIPLES:
        return PART
    if (word.endswith("ing") and len(word) > 4) or (word.endswith("ed") and len(word) > 3):
        return PART
    if word.endswith("ly") and len(word) > 3:
        return LY
    if word.endswith(("ous", "ful", "less", "able", "ible")) and len(word) > 5:
        return ADJ
    return NOUN


def _is_plural(word: str) -> bool:
    if word in _IRREGULAR_PLURALS:
        return True
    return len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is", "ous"))


def _resolve(words: list[str], lexical: list[str]) -> list[str]:
    """Replace ambiguous lexical classes with NOUN / VERB / ADJ / ADV / AUX / PREP from context."""
    tags = list(lexical)
    for i, (word, tag) in enumerate(zip(words, lexical, strict=True)):
        prev = tags[i - 1] if i > 0 else None
        if prev == PUNCT:
            prev = None
        nxt = lexical[i + 1] if i + 1 < len(lexical) else None
        for phrase in _MULTIWORD_PREPOSITIONS:
            if i > 0 and word == phrase[1] and tuple(words[i - 1 : i + 2]) == phrase:
                tags[i] = PREP
        if tags[i] == PREP:
            continue
        if word == "that" and prev == NOUN:
            tags[i] = OTHER  # relative pronoun: "a dog that runs"
        elif word == "can" and prev in _NP_PREFIX | {NOUN} and nxt not in (VFORM, AUX, ADV, OTHER):
            tags[i] = NOUN  # "a soda can", "a trash can next to ..."
        elif tag == VFORM:
            tags[i] = _resolve_verb_form(words, tags, i, prev)
        elif tag == PART:
            in_np = prev in _NP_PREFIX or (prev in (None, PREP) and not word.endswith("ing"))
            if in_np and nxt in _NOUNISH:
                tags[i] = ADJ  # "a sleeping cat", "the parked car", "sliced apples"
            elif prev in _NP_PREFIX:
                tags[i] = NOUN  # "a building", "the painting on the wall"
            else:
                tags[i] = VERB  # "a man walking a dog", "is riding"
        elif tag == LY:
            in_np = prev in _NP_PREFIX or prev is None
            tags[i] = ADJ if in_np and nxt in _NOUNISH else ADV
    return tags


def _resolve_verb_form(words: list[str], tags: list[str], i: int, prev: str | None) -> str:
    """A word that is a common verb's base or -s form, and possibly a noun."""
    if prev is None or prev in _NP_PREFIX or prev in (PREP, ADJ):
        return NOUN  # "a walk", "the bus stop sign", "on skis"
    if prev in (PRON, AUX, ADV, OTHER):
        return VERB  # "she walks", "can ride", "to play"
    if prev == NOUN:
        if _FINITE_VERBS[words[i]] or _is_plural(words[i - 1]):
            return VERB  # "a man walks", "dogs play"
        return NOUN  # "a bus stop", "a fruit stand"
    if prev == CONJ:
        before = tags[i - 2] if i >= 2 else None
        return VERB if before == VERB else NOUN  # "sits and waits" / "a knife and fork"
    return NOUN  # after a verb: its object, "eating leaves"


def _chunks(tags: list[str]) -> Iterable[tuple[int, int]]:
    """Token ranges ``[i, j)`` matching ``DET? NUM? ((DEG)* ADJ)* NOUN+``, left to right."""
    i, n = 0, len(tags)
    while i < n:
        j = i
        if tags[j] == DET:
            j += 1
        if j < n and tags[j] == NUM:
            j += 1
        while j < n:
            k = j
            while k < n and tags[k] == DEG:
                k += 1
            if k < n and tags[k] == ADJ:
                j = k + 1
            else:
                break
        k = j
        while k < n and tags[k] == NOUN:
            k += 1
        if k > j:
            yield i, k
            i = k
        else:
            i += 1


def tag_words(caption: str) -> list[tuple[str, str, int, int]]:
    """Tokenise and tag a caption: ``(word, tag, start, end)`` per token of the lowercased caption."""
    text = caption.lower()
    matches = list(_TOKEN_RE.finditer(text))
    words = [m.group() for m in matches]
    tags = _resolve(words, [_lexical_tag(w) for w in words])
    return [(w, t, m.start(), m.end()) for w, t, m in zip(words, tags, matches, strict=True)]


def extract_noun_phrases(caption: str) -> list[str]:
    """Noun phrases of a caption, lowercased, in order of first appearance, without duplicates.

    Each phrase is a substring of ``caption.lower()`` (so it can be searched for in the caption)
    and contains no punctuation apart from word-internal hyphens and apostrophes.

    >>> extract_noun_phrases("A man walking a dog.")
    ['a man', 'a dog']
    >>> extract_noun_phrases("two cats sleeping on a red couch")
    ['two cats', 'a red couch']
    """
    text = caption.lower()
    tagged = tag_words(caption)
    tags = [t for _, t, _, _ in tagged]
    phrases: list[str] = []
    for i, j in _chunks(tags):
        phrase = text[tagged[i][2] : tagged[j - 1][3]]
        if phrase not in phrases:
            phrases.append(phrase)
    return phrases
