"""The writing system of each language (ISO 639-1), to group the per-language answer: transfer from English is
expected to be easier into languages that share its script (subword vocabulary overlap)."""
from __future__ import annotations

ENGLISH_SCRIPT = "Latin"
SCRIPTS = {
    "Latin": "af az ca cs cy da de en es et eu fi fr ga gl hr hu id is it jv lt lv ms mt nl no pl pt ro sk sl sq sv "
             "sw tl tr uz vi yo zu",
    "Arabic": "ar fa ps ug ur",
    "Cyrillic": "be bg kk ky mk mn ru sr tg uk",
    "Greek": "el",
    "Hebrew": "he yi",
    "Armenian": "hy",
    "Georgian": "ka",
    "Devanagari": "hi mr ne sa",
    "Bengali": "as bn",
    "Gurmukhi": "pa",
    "Gujarati": "gu",
    "Tamil": "ta",
    "Telugu": "te",
    "Kannada": "kn",
    "Malayalam": "ml",
    "Sinhala": "si",
    "Thai": "th",
    "Lao": "lo",
    "Khmer": "km",
    "Myanmar": "my",
    "Ethiopic": "am ti",
    "Han": "zh",
    "Japanese (kanji and kana)": "ja",
    "Hangul": "ko",
}
_SCRIPT_OF = {code: script for script, codes in SCRIPTS.items() for code in codes.split()}


def script(language: str) -> str:
    return _SCRIPT_OF.get(language, "unknown script")


def shares_english_script(language: str) -> bool:
    return script(language) == ENGLISH_SCRIPT


def group_order(language: str) -> tuple:
    """Sort key: languages sharing the English script first, then by script, then by code."""
    return (not shares_english_script(language), script(language), language)
