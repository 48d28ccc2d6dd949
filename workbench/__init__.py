"""Knowledge Workbench: locate and edit factual knowledge in language models.

The public API, in the order a user meets it::

    import workbench as wb
    model = wb.load_model()                      # Gemma 3 270M, offline
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
    wb.probe(model, fact.text, targets=["Paris", "Rome"])
"""

# Before anything imports torch: the OpenMP runtime reads its settings once (workbench/runtime/threads.py).
from workbench.runtime import threads as _threads

_threads.apply()

from workbench.errors import DatasetError, UnknownModelError, WorkbenchError
from workbench.facts import (
    Fact,
    FilteredFacts,
    Implication,
    bundled_facts,
    filter_known,
    read_facts,
    write_facts,
)
from workbench.core.loading import BUILTIN_MODELS, DEFAULT_MODEL
from workbench.core.model import Model, load_model
from workbench.runtime.threads import policy as thread_policy

_threads.settle()
from workbench.probing import ProbeResult, generate, probe
from workbench.runtime.progress import CancelToken, Cancelled

# -- locator --
from workbench.locate import (
    AIEResult,
    EnrichmentResult,
    KeyProfile,
    KnockoutResult,
    LensResult,
    MemoryReport,
    NeuronReport,
    TraceResult,
    TraceSettings,
    amplify,
    average_indirect_effect,
    enrichment,
    find_keys,
    integrated_gradients,
    intervene,
    key_profile,
    knockout,
    knowledge_neurons,
    lens,
    memories,
    patch,
    suppress,
    top_contexts,
    trace,
)

# -- editor --
from workbench.editing import EditHandle, active_edits, edit, load_edit, revert_all, unedited

# -- evaluation --
from workbench.evaluation import CompareReport, EvalReport, compare, evaluate, read_report, score_fact, suggest_probes


# -- ui --
def __getattr__(name: str):
    # wb.Workbench needs ipywidgets (the "ui" extra); import it on first use only,
    # so that `import workbench` never imports ipywidgets.
    if name == "Workbench":
        from workbench.ui import Workbench

        return Workbench
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


__all__ = [name for name in dir() if not name.startswith("_")]
