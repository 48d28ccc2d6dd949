"""The model and its loading: ``Model`` (a TransformerLens bridge with its tokenizer),
the offline loaders and the cache of converted weights, the architecture roles, and
``activations`` (one door to read and patch hook points).

What it may import: ``workbench.runtime``, ``errors``, ``checks``, ``results`` and itself.
"""
