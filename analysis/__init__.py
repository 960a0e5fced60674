"""From per-group confusion counts to fairness metrics, results files, reports and the analytic model."""
