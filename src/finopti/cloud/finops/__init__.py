"""FinOps analyses over any `BillingExport`: costs, comparisons, forecasts, anomalies, budgets, commitments."""
