"""Ray Tune + Optuna search over merge plans (a later issue); for now the embedded example."""
