"""Extractive-QA exact match and F1: SQuAD v1.1 and MLQA normalisation, hand-counted expectations."""
from __future__ import annotations

import pytest

from trainables.formats.qa_metrics import answer_tokens, exact_match, f1, normalize_answer, qa_scores


# ---- SQuAD v1.1 style -------------------------------------------------------------------------------------------

def test_squad_normalisation_lowercases_strips_punctuation_articles_and_spaces():
    assert normalize_answer("The  Cat, sat!") == "cat sat"      # "the" dropped, "," "!" dropped, spaces collapsed
    assert normalize_answer("U.S.A.") == "usa"                  # punctuation inside a word goes too
    assert normalize_answer("an Anthem") == "anthem"            # "an" is an article, "anthem" keeps its "an"
    assert normalize_answer("Theater") == "theater"             # articles only as whole words
    assert normalize_answer("the-end") == "theend"              # punctuation goes first, so "the" is not a word


def test_squad_exact_match_ignores_case_punctuation_and_articles():
    assert exact_match("the Eiffel Tower.", ["Eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel tower"]) == 0.0


def test_squad_keeps_non_ascii_punctuation():
    # string.punctuation is ASCII only: "«paris»" != "paris"
    assert exact_match("«Paris»", ["Paris"]) == 0.0
    assert f1("«Paris»", ["Paris"]) == 0.0


def test_partial_overlap_f1():
    # pred [quick, brown, fox] vs gold [quick, brown, dog]: overlap 2, P = 2/3, R = 2/3, F1 = 2/3
    assert f1("the quick brown fox", ["quick brown dog"]) == pytest.approx(2 / 3)


def test_repeated_tokens_count_once_per_gold_occurrence():
    # pred [paris, paris, paris] vs gold [paris]: overlap min(3, 1) = 1, P = 1/3, R = 1, F1 = (2/3)/(4/3) = 0.5
    assert f1("Paris Paris Paris", ["Paris"]) == pytest.approx(0.5)
    # pred [paris, paris] vs gold [paris, paris, london]: overlap min(2, 2) = 2, P = 1, R = 2/3, F1 = (4/3)/(5/3) = 0.8
    assert f1("Paris Paris", ["Paris Paris London"]) == pytest.approx(0.8)


def test_best_gold_answer_counts():
    golds = ["quick brown dog", "a brown fox jumps"]
    # gold 1 [quick, brown, dog]: overlap 1, P = 1/2, R = 1/3, F1 = (1/3)/(5/6) = 0.4
    # gold 2 [brown, fox, jumps]: overlap 2, P = 1, R = 2/3, F1 = (4/3)/(5/3) = 0.8 -> max 0.8
    assert f1("brown fox", golds) == pytest.approx(0.8)
    assert exact_match("brown fox", golds) == 0.0
    assert exact_match("Brown fox jumps!", golds) == 1.0     # "a brown fox jumps" -> "brown fox jumps"


def test_empty_prediction_scores_zero():
    assert f1("", ["Paris"]) == 0.0
    assert exact_match("", ["Paris"]) == 0.0
    # the official quirk: both normalise to "" -> exact match 1, but F1 has no overlap -> 0
    assert exact_match("", ["the"]) == 1.0
    assert f1("", ["the"]) == 0.0


def test_qa_scores_average_over_questions_in_points():
    predictions = ["Paris", "brown fox", ""]
    golds = [["paris"], ["quick brown dog", "a brown fox jumps"], ["x"]]
    scores = qa_scores(predictions, golds)
    assert scores["exact_match"] == pytest.approx(100 / 3)   # EM 1 + 0 + 0 over 3 questions
    assert scores["f1"] == pytest.approx(60.0)                # F1 1 + 0.8 + 0 = 1.8 over 3 -> 0.6


def test_squad_style_ignores_language():
    assert normalize_answer("El Prado", language="es") == "el prado"


# ---- MLQA style -------------------------------------------------------------------------------------------------

def test_mlqa_english_also_removes_unicode_punctuation():
    assert exact_match("«Paris»", ["Paris"], "en", "mlqa") == 1.0      # « and » are Unicode category P
    assert normalize_answer("The Cat", "en", "mlqa") == "cat"


def test_mlqa_spanish_articles():
    assert normalize_answer("El Museo del Prado", "es", "mlqa") == "museo del prado"   # "el" goes, "del" stays
    assert exact_match("el Museo del Prado", ["Museo del Prado"], "es", "mlqa") == 1.0
    assert exact_match("el Museo del Prado", ["Museo del Prado"]) == 0.0                 # squad keeps "el"
    assert exact_match("¡Los Ángeles!", ["ángeles"], "es", "mlqa") == 1.0   # ¡ ! punctuation, "los" an article


def test_mlqa_german_articles():
    assert exact_match("Die Deutsche Bank", ["deutsche Bank"], "de", "mlqa") == 1.0
    # pred [rhein, in, köln] ("der" dropped) vs gold [köln]: overlap 1, P = 1/3, R = 1, F1 = (2/3)/(4/3) = 0.5
    assert f1("der Rhein in Köln", ["Köln"], "de", "mlqa") == pytest.approx(0.5)


def test_mlqa_vietnamese_articles():
    # "của" is on MLQA's Vietnamese list: [thủ, đô, việt, nam] on both sides
    assert normalize_answer("Thủ đô của Việt Nam", "vi", "mlqa") == "thủ đô việt nam"
    assert exact_match("thủ đô của Việt Nam", ["thủ đô Việt Nam"], "vi", "mlqa") == 1.0


def test_mlqa_arabic_article():
    assert exact_match("الكتاب", ["كتاب"], "ar", "mlqa") == 1.0          # "al-" prefix removed
    assert exact_match("الكتاب،", ["كتاب"], "ar", "mlqa") == 1.0         # Arabic comma is punctuation
    # the official rule removes "ال" anywhere, inside words too: "المال" -> " م " -> "م"
    assert normalize_answer("المال", "ar", "mlqa") == "م"


def test_mlqa_hindi_has_no_article_removal():
    assert normalize_answer("a भारत", "hi", "mlqa") == "a भारत"        # "a" kept: no articles for Hindi
    assert exact_match("भारत।", ["भारत"], "hi", "mlqa") == 1.0          # the danda is punctuation


def test_mlqa_chinese_is_scored_per_character():
    assert answer_tokens("2008年北京奥运会", "zh", "mlqa") == ["2008", "年", "北", "京", "奥", "运", "会"]
    assert answer_tokens("iPhone 手机。", "zh", "mlqa") == ["iphone", "手", "机"]
    # pred [北, 京, 大, 学] vs gold [北, 京]: overlap 2, P = 2/4, R = 2/2, F1 = 1/1.5 = 2/3
    assert f1("北京大学", ["北京"], "zh", "mlqa") == pytest.approx(2 / 3)
    assert f1("北京大学", ["北京"]) == 0.0     # squad: one whitespace token each, no overlap
    # pred [2008, 年] vs gold [2008, 年, 北, 京]: overlap 2, P = 1, R = 1/2, F1 = 1/1.5 = 2/3
    assert f1("2008年", ["2008年，北京"], "zh", "mlqa") == pytest.approx(2 / 3)


def test_mlqa_scores_in_points():
    # EM: 1 (北京) + 0; F1: 1 + 2/3 (北京大学 vs 北京) = 5/3 over 2 -> 83.33
    scores = qa_scores(["北京", "北京大学"], [["北京。"], ["北京"]], "zh", "mlqa")
    assert scores == pytest.approx({"exact_match": 50.0, "f1": 250 / 3})


# ---- errors -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("language", [None, "fr", "ja"])
def test_mlqa_refuses_languages_it_has_no_rules_for(language):
    with pytest.raises(ValueError, match="mlqa"):
        f1("x", ["x"], language, "mlqa")


def test_bad_arguments():
    with pytest.raises(ValueError, match="style"):
        f1("x", ["x"], style="xquad")
    with pytest.raises(TypeError):
        exact_match("Paris", "Paris")            # one string would be read as single-character answers
    with pytest.raises(ValueError, match="gold"):
        f1("Paris", [])
    with pytest.raises(ValueError, match="2 predictions for 1"):
        qa_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError):
        qa_scores([], [])
