"""Entity-level F1 over IOB2 tags (seqeval's default, conlleval-compatible reading) and token accuracy."""
from __future__ import annotations

import pytest

from trainables.formats.tagging_metrics import entity_f1, entity_scores, entity_spans, token_accuracy


@pytest.mark.parametrize("tags, expected", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),        # seqeval's docstring example
    (["O", "I-PER", "I-PER", "O"], [("PER", 1, 2)]),                           # I- after O starts an entity
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 2)]),             # I- of another type starts one
    (["I-PER", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 1)]),
    (["B-PER", "B-PER"], [("PER", 0, 0), ("PER", 1, 1)]),                      # B-X B-X: two entities
    (["B-PER", "I-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 2, 3)]),
    (["O", "B-ORG", "I-ORG"], [("ORG", 1, 2)]),                                # entity at the sentence end
    (["B-ORG"], [("ORG", 0, 0)]),
    (["O", "O"], []),
    ([], []),
])
def test_entity_spans(tags, expected):
    assert entity_spans(tags) == expected


def test_seqeval_docstring_examples():
    gold = [["O", "O", "B-MISC", "I-MISC", "B-MISC", "O", "O"], ["B-PER", "I-PER", "O"]]
    predicted = [["O", "O", "B-MISC", "I-MISC", "B-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    # gold MISC(2,3) MISC(4,4) PER(0,1); predicted MISC(2,3) MISC(4,5) PER(0,1): 2 right of 3 and 3 -> 2/3
    assert entity_f1(gold, predicted) == pytest.approx(200 / 3)

    gold = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    predicted = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    # gold MISC(3,5) PER(0,1); predicted MISC(2,5) PER(0,1): 1 right of 2 and 2 -> P = R = F1 = 50
    assert entity_scores(gold, predicted) == pytest.approx({"precision": 50.0, "recall": 50.0, "f1": 50.0})
    # tokens 2 (O vs B-MISC) and 3 (B-MISC vs I-MISC) wrong: 8 of 10
    assert token_accuracy(gold, predicted) == pytest.approx(80.0)


def test_type_mismatch_inside_an_entity_splits_it():
    gold = [["B-PER", "I-PER", "O"], ["B-ORG"]]
    predicted = [["B-PER", "I-LOC", "O"], ["B-ORG"]]
    # gold PER(0,1) ORG; predicted PER(0,0) LOC(1,1) ORG: right 1 (ORG), predicted 3, gold 2
    # P = 1/3, R = 1/2, F1 = (1/3)/(5/6) = 0.4
    assert entity_scores(gold, predicted) == pytest.approx({"precision": 100 / 3, "recall": 50.0, "f1": 40.0})


def test_i_after_o_counts_as_an_entity_start():
    # gold I-PER I-PER after O reads as PER(1,2), the same entity as B-PER I-PER: 1 right of 1 and 1
    assert entity_f1([["O", "I-PER", "I-PER"]], [["O", "B-PER", "I-PER"]]) == 100.0
    # predicted PER(1,1) is not gold PER(0,1): 0 right
    assert entity_f1([["B-PER", "I-PER"]], [["O", "I-PER"]]) == 0.0


def test_adjacent_entities_of_one_type():
    gold = [["B-PER", "B-PER", "O", "B-LOC"]]
    predicted = [["B-PER", "I-PER", "O", "B-LOC"]]
    # gold PER(0,0) PER(1,1) LOC(3,3); predicted PER(0,1) LOC(3,3): right 1 (LOC), P = 1/2, R = 1/3
    # F1 = (1/3)/(5/6) = 0.4
    assert entity_scores(gold, predicted) == pytest.approx({"precision": 50.0, "recall": 100 / 3, "f1": 40.0})


def test_entities_end_with_their_sentence():
    # sentence 1 ends inside a LOC and sentence 2 starts with I-LOC: two entities, never one across the boundary
    gold = [["O", "B-LOC", "I-LOC"], ["I-LOC", "O"]]
    predicted = [["O", "B-LOC", "I-LOC"], ["B-LOC", "O"]]
    assert entity_f1(gold, predicted) == 100.0       # LOC(1,2) in sentence 1 and LOC(0,0) in sentence 2, both right
    # predicting the last word only misses it: gold 2, predicted 2, right 1 -> 50
    assert entity_f1(gold, [["O", "O", "B-LOC"], ["B-LOC", "O"]]) == pytest.approx(50.0)


def test_all_o_sentences_add_nothing():
    # the all-O sentence has no entity either side; the PER counts: 1 right of 1 and 1
    assert entity_f1([["O", "O"], ["B-PER"]], [["O", "O"], ["B-PER"]]) == 100.0
    # a false positive in an all-O gold sentence: right 1, predicted 2, gold 1 -> P 1/2, R 1, F1 2/3
    assert entity_f1([["O", "O"], ["B-PER"]], [["B-LOC", "O"], ["B-PER"]]) == pytest.approx(200 / 3)
    # no entity anywhere: 0/0 is 0 in seqeval, so 0 rather than 100
    assert entity_scores([["O", "O"]], [["O", "O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_empty_predictions_score_zero():
    gold = [["B-PER", "I-PER", "O"], ["B-LOC"]]
    # nothing predicted: precision 0/0 -> 0, recall 0 of 2 -> 0
    assert entity_scores(gold, [["O", "O", "O"], ["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert token_accuracy(gold, [["O", "O", "O"], ["O"]]) == pytest.approx(100 / 4)   # only the third token is right


def test_perfect_predictions_score_100():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["I-ORG", "B-ORG"]]
    assert entity_scores(gold, gold) == {"precision": 100.0, "recall": 100.0, "f1": 100.0}
    assert token_accuracy(gold, gold) == 100.0


def test_token_accuracy_takes_any_tags():
    # part-of-speech tags: 4 of 5 right
    assert token_accuracy([["DET", "NOUN", "VERB"], ["PROPN", "PUNCT"]],
                          [["DET", "NOUN", "NOUN"], ["PROPN", "PUNCT"]]) == pytest.approx(80.0)


def test_bad_input():
    with pytest.raises(ValueError, match="IOB2"):
        entity_spans(["B-PER", "PER"])
    with pytest.raises(ValueError, match="IOB2"):
        entity_spans(["E-PER"])          # IOBES tags are not IOB2
    with pytest.raises(ValueError, match="IOB2"):
        entity_spans(["B-"])
    with pytest.raises(ValueError, match="sentence 0"):
        entity_f1([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="1 predicted sentences for 2"):
        entity_f1([["O"], ["O"]], [["O"]])
    with pytest.raises(TypeError):
        token_accuracy(["O O"], ["O O"])
    with pytest.raises(ValueError, match="no tokens"):
        token_accuracy([[]], [[]])
