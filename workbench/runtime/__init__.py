"""How the workbench runs, whatever it computes: the thread policy (set before torch
loads), bfloat16 and low-precision blocks, the mixed unembedding, the on-disk cache,
progress and cancellation, atomic output files and the Ray pool.

What it may import: ``workbench.errors``, ``checks``, ``results`` and itself. It imports
nothing here on purpose: ``import workbench`` must apply the thread policy before torch loads.
"""
