"""Annotation quality: how much annotators agree, and one label per item from many.

Pure functions over numpy and plain Python (no Ray), in layers:

- `annotations`: `(item_id, annotator_id, label)` triples coded as integers, and the
  items x categories count matrix and items x annotators rating matrix built from them;
- `agreement`: Cohen's kappa, Fleiss' kappa, Krippendorff's nominal alpha, per-item
  agreement and mean pairwise Cohen's kappa;
- `aggregate`: majority vote with an explicit tie policy, Dawid-Skene EM, and a
  minimum-agreement filter that counts what it removes;
- `reader`, `report`, `markdown`, `cli`: a long-format file in, a JSON-able report and
  the `raytune-llm agreement` command out.

Nothing is imported here, so that registering the CLI subcommand costs no numpy import
at `raytune-llm` start-up; import from the submodules.
"""
