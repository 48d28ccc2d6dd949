"""The locator: where a model recalls a fact, read-only.

What it holds, one concept per module::

    tracing        causal tracing of one fact (trace)
      setup          the checked input, clean and corrupted runs every trace starts from
      spans          where the subject is in the prompt's tokens
      cells          kinds of state, ROME's restore window, settings checks
      noise          the noise scale and the fixed-seed draw
      blocks         running the blocks from any layer; p(answer) from hidden states
      sweep          the batched sweep over (kind, token, layer) cells
      trace_settings TraceSettings: a trace's settings, their defaults, checks and cache key
      trace_result   TraceResult
      reference      the slow, obvious trace the tests compare with
    attribution    the first-order preview of a trace (attribution patching)
    aie            average indirect effect over many facts, by token group
    patching       activation patching between two prompts
    ffn            FFN keys and values read off the model (shared primitives)
    memories       sub-updates of one FFN layer at one token; keys that promote a token
    keycontexts    a key's top-activating contexts in natural text
    neurons        knowledge neurons by integrated gradients
    lens           the logit lens, and reading residual vectors as tokens
    interventions  set, scale or suppress chosen keys inside a ``with`` block
    knockout       attention knockout: edges into the last token blocked over windows of layers
    enrichment     the subject's attribute rate over layers (logit lens at its last token)

What it may import: the model layer below it (``workbench.core.model``,
``workbench.facts``, ``workbench.probing``, ``workbench.corpus``,
``workbench.runtime.cache``, ``workbench.runtime.progress``, ``workbench.results``,
``workbench.errors``) and itself — never ``editing``, ``evaluation``,
``figures``, ``ui`` or ``cli``. Nothing here writes a weight.

Example:
    >>> from workbench.locate import trace
    >>> r = trace(model, ("The {} is located in the city of", "Eiffel Tower"), kinds="mlp")  # doctest: +SKIP
"""

from workbench.locate.aie import AIEResult, average_indirect_effect
from workbench.locate.enrichment import EnrichmentResult, enrichment
from workbench.locate.interventions import amplify, intervene, suppress
from workbench.locate.keycontexts import KeyProfile, key_profile, top_contexts
from workbench.locate.knockout import KnockoutResult, knockout
from workbench.locate.lens import LensResult, lens
from workbench.locate.memories import MemoryReport, find_keys, memories
from workbench.locate.neurons import NeuronReport, integrated_gradients, knowledge_neurons
from workbench.locate.patching import patch
from workbench.locate.trace_result import TraceResult
from workbench.locate.trace_settings import TraceSettings
from workbench.locate.tracing import trace

__all__ = [
    "AIEResult", "EnrichmentResult", "KeyProfile", "KnockoutResult", "LensResult", "MemoryReport", "NeuronReport", "TraceResult", "TraceSettings",
    "amplify", "average_indirect_effect", "find_keys", "integrated_gradients", "intervene",
    "enrichment", "key_profile", "knockout", "knowledge_neurons", "lens", "memories", "patch", "suppress", "top_contexts", "trace",
]
