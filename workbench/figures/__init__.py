"""Figures: pure functions from result objects to plotly figures (no computation, no widgets).

    tracing      trace heatmaps, average-indirect-effect curves
    memories     sub-update bars, logit-lens heatmap, knowledge-neuron attributions
    knockout     attention-knockout curves per edge group, the subject's attribute rate
    evaluation   method scores side by side

What it may import: plotly, and the result classes of the layers below (model
layer, ``locate``, ``editing``, ``evaluation``) — never ``ui`` or ``cli``.
"""
