"""Seconds and peak memory of "what the edit touches" after one ROME edit on the default model.

Prints one line: the workbench it imported (so that two checkouts can be compared with
``PYTHONPATH=<checkout>``), the call's seconds, the process's peak RSS before and after the call
(MiB), and the two KL means (which must not depend on how the KL is computed).

Run: WORKBENCH_PROGRESS=0 .venv/bin/python benchmarks/touched_memory.py
"""

from __future__ import annotations

import resource
import time

import workbench as wb


def main() -> None:
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
    model = wb.load_model()
    handle = wb.edit(model, fact, method="rome")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    start = time.perf_counter()
    result = handle.touched(top_k=8, samples=4000)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(wb.__file__, "touched_s", round(seconds, 1), "maxrss_before_MiB", before, "maxrss_after_MiB", after,
          "kl_top_mean", result.kl_top_mean, "kl_random_mean", result.kl_random_mean)


if __name__ == "__main__":
    main()
