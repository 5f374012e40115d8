"""`raytune-llm evaluate` and `raytune-llm predict`: score an exported model on any dataset.

- `metrics`, `calibration`, `slices`: pure functions over label ids and probabilities
  (no torch, no Ray), cross-checked against scikit-learn in the tests;
- `inputs`: the data step's reader and normalisation, applied to an evaluation or
  prediction file, plus the settings stored beside a model;
- `model`: load a merged model (transformers) or a LoRA adapter folder (peft) and score text;
- `evaluate`, `report`: the in-process evaluation and its JSON / Markdown / PNG report;
- `predict`: batch inference with a Ray Data actor pool, streamed to Parquet or JSON lines;
- `cli`: the two subcommands.
"""
