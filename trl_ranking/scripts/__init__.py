"""The scripts behind the `trl-ranking` commands, shaped like TRL's `trl/scripts/`: `pro`, `dove` and `eval`, each
with `make_parser()` and `main()`, and `utils` with the pieces they share (dataset formats, the training run)."""
