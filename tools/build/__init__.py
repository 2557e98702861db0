"""The demo-model build, one module per step: sources (pinned downloads), data (the data sets),
train (fine-tuning), recipes (the four models and their cache keys), cache (cache folders and
install into models/<name>/), builders (each model's steps), progress (step times, build status,
summary table), main (the command line)."""
