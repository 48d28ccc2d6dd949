"""Knowledge Workbench: locate and edit factual knowledge in language models.

The public API, in the order a user meets it::

    import workbench as wb
    model = wb.load_model()                      # Gemma 3 270M, offline
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
    wb.probe(model, fact.text, targets=["Paris", "Rome"])
"""

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
from workbench.loading import BUILTIN_MODELS, DEFAULT_MODEL
from workbench.model import Model, load_model
from workbench.probing import ProbeResult, generate, probe
from workbench.progress import CancelToken, Cancelled

# -- locator --
from workbench.tracing import AIEResult, TraceResult, average_indirect_effect, patch, trace
from workbench.interventions import amplify, intervene, suppress
from workbench.keycontexts import KeyProfile, key_profile, top_contexts
from workbench.lens import LensResult, lens
from workbench.memories import MemoryReport, find_keys, memories
from workbench.neurons import NeuronReport, integrated_gradients, knowledge_neurons

# -- editor --
from workbench.editing import EditHandle, active_edits, edit, load_edit, revert_all

# -- evaluation --
from workbench.evaluation import CompareReport, EvalReport, compare, evaluate, read_report, score_fact

# -- ui --
def __getattr__(name: str):
    # wb.Workbench needs ipywidgets (the "ui" extra); import it on first use only,
    # so that `import workbench` never imports ipywidgets.
    if name == "Workbench":
        from workbench.ui import Workbench

        return Workbench
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


__all__ = [name for name in dir() if not name.startswith("_")]
