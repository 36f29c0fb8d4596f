"""Mechanism: model zoo, safe loading, analysis, surgery, evaluation and fine-tuning."""
