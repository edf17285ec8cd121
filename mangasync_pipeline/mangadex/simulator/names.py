"""Plausible titles, names and blurbs in several languages, drawn from a seeded rng."""

from __future__ import annotations

import random

_EN_ADJ = (
    "Crimson", "Silent", "Last", "Hidden", "Eternal", "Broken", "Golden", "Lonely", "Wandering",
    "Cursed", "Secret", "Little", "Second", "Forgotten", "Reincarnated", "Villainous", "Frozen",
    "Midnight", "Scarlet", "Invincible", "Lazy", "Strongest", "Fake", "Shy", "Useless",
)
_EN_NOUN = (
    "Sword", "Witch", "Knight", "Dragon", "Princess", "Alchemist", "Blade", "Garden", "Heir",
    "Detective", "Saint", "Demon Lord", "Tower", "Summer", "Healer", "Tamer", "Duke", "Maid",
    "Hunter", "Academy", "Villainess", "Chef", "Sorcerer", "Kingdom", "Cat", "Moon", "Dungeon",
)
_EN_TAIL = (
    "", "", "", " of the North", " Next Door", " Who Returned", " in Another World",
    " Wants to Retire", " and Me", " Chronicles", ": Second Life", " After the Ending",
    " Is Secretly Strong", " of the Abyss", " Diaries",
)
_JA_SYL = (
    "ka", "ki", "ku", "ke", "ko", "sa", "shi", "su", "se", "so", "ta", "chi", "tsu", "te",
    "to", "na", "ni", "nu", "ne", "no", "ha", "hi", "fu", "he", "ho", "ma", "mi", "mu", "me",
    "mo", "ya", "yu", "yo", "ra", "ri", "ru", "re", "ro", "wa", "n", "ga", "gi", "go", "za",
    "ji", "zu", "da", "de", "do", "ba", "bi", "bu", "be", "bo", "kyo", "ryu", "sho",
)
_JA_PARTICLE = ("no", "wa", "to", "ga", "ni", "de")
_KO_SYL = (
    "ga", "na", "da", "ra", "ma", "ba", "sa", "ah", "ja", "cha", "ka", "ta", "pa", "ha", "jin",
    "min", "seo", "hyun", "yeon", "woo", "joon", "hee", "soo", "kyung", "sung", "ho", "yoon",
)
_KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわん"
_HANGUL = "가나다라마바사아자차카타파하민서현연우준희수경성호윤"
_ES_WORDS = ("La", "El", "Espada", "Bruja", "Caballero", "Dragón", "Princesa", "Secreto", "Reino")
_FR_WORDS = ("Le", "La", "Épée", "Sorcière", "Chevalier", "Dragon", "Princesse", "Royaume")
_BLURB = (
    "A {n} with a secret past is dragged into a war between kingdoms.",
    "After dying in an accident, a {n} wakes up in the world of a novel.",
    "The {n} only wanted a quiet life, but fate had other plans.",
    "A heartwarming story about a {n} and the people around them.",
    "When the {n} returns from the dungeon, nothing is as it was.",
)
_BLURB_ES = "Una historia sobre {n} y su destino."
_BLURB_FR = "Une histoire sur {n} et son destin."


def _pick(rng: random.Random, seq: str | tuple[str, ...]) -> str:
    return seq[int(rng.random() * len(seq))]


def _ri(rng: random.Random, lo: int, hi: int) -> int:
    return lo + int(rng.random() * (hi - lo + 1))


def _romaji_word(rng: random.Random, syl: tuple[str, ...]) -> str:
    return "".join(_pick(rng, syl) for _ in range(_ri(rng, 2, 4))).capitalize()


def english_title(rng: random.Random) -> str:
    words = [_pick(rng, _EN_ADJ), _pick(rng, _EN_NOUN)]
    if rng.random() < 0.5:
        words.insert(0, "The")
    return " ".join(words) + _pick(rng, _EN_TAIL)


def japanese_romaji_title(rng: random.Random) -> str:
    parts = [_romaji_word(rng, _JA_SYL)]
    for _ in range(_ri(rng, 0, 2)):
        parts += [_pick(rng, _JA_PARTICLE), _romaji_word(rng, _JA_SYL)]
    return " ".join(parts)


def korean_romaji_title(rng: random.Random) -> str:
    return " ".join(_romaji_word(rng, _KO_SYL) for _ in range(_ri(rng, 1, 3)))


def kana_title(rng: random.Random) -> str:
    return "".join(_pick(rng, _KANA) for _ in range(_ri(rng, 3, 9)))


def hangul_title(rng: random.Random) -> str:
    return "".join(_pick(rng, _HANGUL) for _ in range(_ri(rng, 2, 7)))


def spanish_title(rng: random.Random) -> str:
    return " ".join(_pick(rng, _ES_WORDS) for _ in range(_ri(rng, 2, 4)))


def french_title(rng: random.Random) -> str:
    return " ".join(_pick(rng, _FR_WORDS) for _ in range(_ri(rng, 2, 4)))


def person_name(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return f"{_romaji_word(rng, _JA_SYL)} {_romaji_word(rng, _JA_SYL)}"
    if rng.random() < 0.6:
        return f"{_romaji_word(rng, _KO_SYL)} {_romaji_word(rng, _KO_SYL)}"
    return f"{_romaji_word(rng, _JA_SYL)}{_ri(rng, 1, 9999)}"


def group_name(rng: random.Random) -> str:
    kind = _pick(rng, ("Scans", "Translations", "Team", "Subs", "Scanlations", "TL"))
    return f"{_pick(rng, _EN_ADJ)} {_pick(rng, _EN_NOUN)} {kind}"


def blurb(rng: random.Random, lang: str) -> str:
    noun = _pick(rng, _EN_NOUN).lower()
    if lang == "es":
        return _BLURB_ES.format(n=noun)
    if lang == "fr":
        return _BLURB_FR.format(n=noun)
    return _pick(rng, _BLURB).format(n=noun)


def chapter_title(rng: random.Random) -> str:
    return f"{_pick(rng, _EN_ADJ)} {_pick(rng, _EN_NOUN)}"
