"""Readers for whole-dataset formats beyond one-row-per-line classification files.

Each module is a set of pure functions returning an Arrow table of usable records plus a
quarantine list (`raytune_llm.data.quarantine.Quarantined`) of the records it could not use:

- `phrasebank`: Financial PhraseBank with each sentence's annotator agreement level;
- `labelstudio`: Label Studio JSON exports (choices by majority vote, long-form votes, spans);
- `conll`: CoNLL/BIO token files (IOB1 and IOB2, IOB1 converted to IOB2);
- `spans`: JSON lines with character spans, and span <-> BIO conversion;
- `instruct`: Alpaca-style, seed-task and chat `messages` instruction data.

The classification reader (`raytune_llm.data.readers`) uses `phrasebank` and `labelstudio`;
`raytune_llm.data.tasks.read_task_table` dispatches every format from a `DataConfig`.
"""
