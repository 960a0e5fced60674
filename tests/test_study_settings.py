"""run.sh compare's per-strategy settings: the registry's study settings, and the fairness
weight only for the strategies that own `lambda` (so run.sh keeps no list of them)."""

from fl_app.study_settings import main


def test_a_fair_strategy_gets_the_weight_after_its_study_settings(capsys):
    assert main(["fair-ifca", "--lambda", "0.5"]) == 0
    assert capsys.readouterr().out.split() == ["lr=0.05", "local-epochs=1", "lambda=0.5"]


def test_a_strategy_without_lambda_ignores_the_weight(capsys):
    assert main(["ifca", "--lambda", "0.5"]) == 0
    assert capsys.readouterr().out.split() == ["lr=0.05", "local-epochs=1"]
