"""The Ray Tune + Optuna search over merge plans: config, space, samplers, trials on a worker
pool, results with intervals, held-out validation of the front, export, and the studies and
example family built on the same machinery (see docs/architecture.md)."""
