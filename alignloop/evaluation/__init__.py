"""Evaluation: metrics, win rates and reports."""
