"""Hard-example mining: Sedna's cross-entropy criterion and the margin criterion on distributions
whose values are known, the filter's decision, and the confidence every Engine Result carries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgefpga.fleet.mining import EscalationBudget, HardExampleFilter, confidence
from edgefpga.runtime import Result
from edgefpga.runtime.confidence import cross_entropy_confidence, margin_confidence


def result_with(probabilities: list[float]) -> Result:
    k = int(np.argmax(probabilities))
    classes = [f"c{i}" for i in range(len(probabilities))]
    return Result(label=classes[k], label_index=k, defective=k > 0, score=1 - probabilities[0],
                  scores=list(np.log(np.clip(probabilities, 1e-12, None))), probabilities=probabilities,
                  classes=classes, latency_ms=0.1, batch_size=1, backend="onnx", model_id="m")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("k", [2, 3, 10])
def test_uniform_is_zero_and_one_hot_is_one(k):
    uniform, one_hot = np.full(k, 1 / k), np.eye(k)[k - 1]
    assert cross_entropy_confidence(uniform)[0] == pytest.approx(0.0, abs=1e-12)
    assert cross_entropy_confidence(one_hot)[0] == pytest.approx(1.0)
    assert margin_confidence(uniform)[0] == pytest.approx(0.0)
    assert margin_confidence(one_hot)[0] == pytest.approx(1.0)


@pytest.mark.timeout(10)
def test_known_values():
    # two classes at 0.9/0.1: 1 + (0.9 ln 0.9 + 0.1 ln 0.1) / ln 2
    expected = 1 + (0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    assert confidence([0.1, 0.9]) == pytest.approx(expected)  # 0.531
    assert confidence([0.1, 0.9], "margin") == pytest.approx(0.8)
    # the criteria differ where the doubt is spread: the margin sees only the top two
    spread = [0.6, 0.1, 0.1, 0.1, 0.1]
    assert confidence(spread, "margin") == pytest.approx(0.5)
    assert confidence(spread) == pytest.approx(1 + (0.6 * math.log(0.6) + 4 * 0.1 * math.log(0.1)) / math.log(5))
    # rows at once; a sigmoid head's single probability p is the distribution [1-p, p]
    np.testing.assert_allclose(cross_entropy_confidence([[0.5, 0.5], [1.0, 0.0]]), [0.0, 1.0], atol=1e-12)
    assert cross_entropy_confidence([0.9])[0] == pytest.approx(expected)


@pytest.mark.timeout(10)
def test_bad_probabilities_are_refused():
    with pytest.raises(ValueError, match="finite"):
        cross_entropy_confidence([0.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        margin_confidence([np.nan, 1.0])


@pytest.mark.timeout(10)
def test_filter_decides_hard_below_the_threshold():
    sure, unsure = result_with([0.02, 0.98]), result_with([0.45, 0.55])
    assert sure.confidence == pytest.approx(confidence([0.02, 0.98]))  # computed by the Result itself
    ce = HardExampleFilter("cross_entropy", 0.5)
    assert not ce.is_hard(sure) and ce.is_hard(unsure)
    margin = HardExampleFilter("margin", 0.2)
    assert margin.confidence(unsure) == pytest.approx(0.1)
    assert not margin.is_hard(sure) and margin.is_hard(unsure)
    assert not HardExampleFilter("cross_entropy", 0.0).is_hard(unsure)  # threshold 0: nothing is hard
    assert HardExampleFilter("margin", 1.0).is_hard(sure)  # 1: everything short of certainty is
    with pytest.raises(ValueError, match="unknown hard-example criterion"):
        HardExampleFilter("entropy")
    with pytest.raises(ValueError, match="within"):
        HardExampleFilter(threshold=1.5)


@pytest.mark.timeout(10)
def test_a_budget_escalates_the_least_confident_share_and_never_more():
    rng = np.random.default_rng(0)
    stream = rng.beta(5, 1, 2000)  # confidences piled up near 1, a tail of unsure ones
    budget = EscalationBudget(0.2, window=200)
    admitted = np.array([budget.admit(c) for c in stream])
    # the cap holds on every prefix, and the share comes near it
    assert np.all(np.cumsum(admitted) <= 0.2 * np.arange(1, len(stream) + 1))
    assert 0.17 <= admitted.mean() <= 0.2
    # the admitted are the unsure ones: nearly all lie under the stream's 30 % quantile
    assert np.mean(stream[admitted] <= np.quantile(stream, 0.3)) > 0.95
    # a stream that turns unsure (a new lot, a dirty lens) still gets only the budget
    shifted = EscalationBudget(0.1, window=100)
    flags = [shifted.admit(c) for c in np.concatenate([stream[:500], stream[500:1000] * 0.3])]
    assert sum(flags) <= 0.1 * 1000
    # through the filter: under the threshold and within the budget; every result is ranked
    capped = HardExampleFilter("cross_entropy", 0.5, EscalationBudget(0.5, window=4))
    hard = [capped.is_hard(result_with(p)) for p in ([0.45, 0.55], [0.02, 0.98], [0.4, 0.6], [0.3, 0.7])]
    assert hard == [False, False, True, False]  # 1st: over the cap (0.5 x 1 seen); 4th: over its 50 % rank
    assert capped.budget.seen == 4
    with pytest.raises(ValueError, match="escalation budget"):
        EscalationBudget(0.0)
    with pytest.raises(ValueError, match="window"):
        EscalationBudget(0.2, window=0)


@pytest.mark.timeout(60)
def test_engine_results_carry_the_confidence(zoo_model, elpv_data):
    import edgefpga.runtime as rt

    with rt.open(zoo_model, backend="onnx") as engine:
        results = engine.infer(list(elpv_data.images[:8]))
    for r in results:
        assert r.confidence == pytest.approx(cross_entropy_confidence(r.probabilities)[0])
        assert 0.0 <= r.confidence <= 1.0
        assert r.to_dict()["confidence"] == r.confidence
