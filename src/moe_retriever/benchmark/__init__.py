"""The benchmark harness: methods x missing rates x seeds on the same splits and masks.

* :mod:`.harness` — :func:`run_benchmark`, the built-in methods (``list_methods``), the loop;
* :mod:`.methods` — what one fit gets and returns, the registry of runners, one method on one
  unit scored into rows (what :mod:`.grid` runs per cell);
* :mod:`.anchors` — classical anchors (``lr-late-fusion``, ``lr-mean-impute``, ``hgb``) and
  reference points (``complete-case``, ``late-fusion``), fitted on train, tuned on val;
* :mod:`.fidelity` — cosine / MSE of completed tokens against the encoder's true tokens, and
  the linear-probe R^2 and specificity that a collapsed completion cannot win;
* :mod:`.stats` — paired differences with t / bootstrap / Nadeau-Bengio corrected intervals;
* :mod:`.router` — MoE-Retriever expert usage and its entropy;
* :mod:`.report` / :mod:`.plots` — results.csv / .md / .json and the PNG plots.

Command line:
``moe-retriever benchmark DATA --methods all --missing-rates 0 0.3 0.5 --seeds 0 1 2``
(``--reference``, ``--interval t|bootstrap``, ``--cv K``, ``--vary split|init``,
``--split-seed``).
"""

from moe_retriever.benchmark.harness import list_methods, resolve_methods, run_benchmark

__all__ = ["list_methods", "resolve_methods", "run_benchmark"]
