"""The fairness-aware keys of Fair-FCA (strategies/ifca.py) and Fair-FL+HC (strategies/flhc.py),
declared once: `lambda`, `fair-attribute`, `fair-metric`, their rules and the rule they form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.settings import at_least, choice
from core.tasks import ATTRIBUTES

FAIR_METRICS = ("sp", "eo", "eodds")


@dataclass(frozen=True)
class FairnessSettings:
    """Mixed in before a clustering strategy's settings (`class Fair(FairnessSettings, Plain)`):
    its fields then follow the plain ones, and `validate` checks the plain keys first."""

    fair_lambda: float = field(default=0.0, metadata={"key": "lambda"})
    fair_attribute: str = "sex"
    fair_metric: str = "sp"

    def validate(self, config: Any) -> None:
        super().validate(config)  # type: ignore[misc]  # the plain strategy's settings, next in the MRO
        at_least("lambda", self.fair_lambda, 0.0)
        choice("fair-attribute", self.fair_attribute, list(ATTRIBUTES))
        choice("fair-metric", self.fair_metric, FAIR_METRICS)

    def fairness(self) -> tuple[float, str, str]:
        """(lambda, attribute, metric): the gap each choice or distance adds, and its weight."""
        return self.fair_lambda, self.fair_attribute, self.fair_metric
