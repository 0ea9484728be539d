"""The answer at the top of the book: the key findings and the replication table are read from the
findings' cases by a stated rule (findings.claim_status, replication_table, key_findings)."""
import pandas as pd

from lorafair import findings


def _case(metric_key, verdict, counted=True, experiment="vision_classification", dataset="openmoji_people",
          model="mobilenet_v2", lr="", seeds=15, diff=-0.01):
    metric = {"accuracy": "accuracy", "worst_group_accuracy": "worst group accuracy", "accuracy_gap": "accuracy gap",
              "calibration_gap": "calibration gap (temperature-scaled)", "loss_auc": "loss-attack AUC",
              "ece_ts": "ECE after temperature scaling"}[metric_key]
    return {"experiment": experiment, "dataset": dataset, "model": model, "comparison": "LoRA - full",
            "metric_key": metric_key, "metric": metric, "verdict": verdict if counted else "no verdict",
            "counted": counted, "lr_robustness": lr, "lr_neighbour": "", "seeds": seeds, "difference": diff,
            "lo": diff - 0.02, "hi": diff + 0.02, "not counted because": None if counted else "3 seeds (fewer than 8)"}


def test_the_status_of_a_claim_follows_its_counted_verdicts():
    s = findings.claim_status
    assert s(pd.DataFrame([_case("worst_group_accuracy", "equivalent"), _case("accuracy_gap", "LoRA better")])) \
        == "replicated"
    assert s(pd.DataFrame([_case("worst_group_accuracy", "equivalent"), _case("accuracy_gap", "inconclusive")])) \
        == "replicated where decided"
    assert s(pd.DataFrame([_case("worst_group_accuracy", "LoRA worse"), _case("accuracy_gap", "equivalent")])) \
        == "partly contradicted"
    assert s(pd.DataFrame([_case("worst_group_accuracy", "LoRA worse")])) == "contradicted"
    assert s(pd.DataFrame([_case("worst_group_accuracy", "inconclusive")])) == "undecided"
    # a case that is not counted says nothing, whatever its interval
    assert s(pd.DataFrame([_case("worst_group_accuracy", "LoRA worse", counted=False)])) == "not testable here"


def test_the_replication_table_marks_a_verdict_that_depends_on_the_learning_rate():
    cases = pd.DataFrame([_case("worst_group_accuracy", "equivalent", lr="depends on the learning rate: ..."),
                          _case("accuracy_gap", "equivalent", lr="holds at every neighbouring rate"),
                          _case("loss_auc", "inconclusive", counted=False, experiment="membership_inference")])
    t = findings.replication_table(cases).set_index("claim")
    assert t.loc["subgroup accuracy", "status"] == "replicated, at the chosen learning rates only"
    assert "2 of 2 cases counted: 2 equivalent" in t.loc["subgroup accuracy", "this study (offline scale)"]
    assert "1 of them depends on the learning rate" in t.loc["subgroup accuracy", "this study (offline scale)"]
    assert t.loc["membership inference", "status"] == "not testable here"
    assert t.loc["membership inference", "this study (offline scale)"].startswith("none of 1 cases counted: 3 seeds")
    assert t.loc["gender bias in generation", "this study (offline scale)"] == "no case in the records"


def test_the_key_findings_are_at_most_four_bounded_statements():
    cases = pd.DataFrame([_case("accuracy", "inconclusive"), _case("worst_group_accuracy", "equivalent", diff=-0.012),
                          _case("accuracy", "equivalent", dataset="adult", model="minilm", experiment="llm_classification",
                                seeds=14),
                          _case("calibration_gap", "equivalent"),
                          _case("loss_auc", "inconclusive", counted=False, experiment="membership_inference")])
    points = findings.key_findings(cases)
    assert len(points) == 4 and sum(len(p.split()) for p in points) < 200
    assert points[0].startswith("**MobileNetV2 on OpenMoji people** (15 seeds)")
    assert "worst group accuracy -0.012 [-0.032, +0.008], equivalent" in points[0]
    assert "(14 seeds)" in points[1] and "Calibration across groups" in points[2]
    # a better / worse verdict whose whole interval lies inside the margin says so
    small = pd.DataFrame([_case("worst_group_accuracy", "LoRA worse", diff=-0.021)]).assign(margin=0.05)
    assert "LoRA worse by less than the ±0.05 margin" in findings.key_findings(small)[0]
    assert points[3].startswith("**Not decided at this scale:** membership inference")
