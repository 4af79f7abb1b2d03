"""Training engine: the only reader of the recipe's trick fields.

    derive.py       recipe -> values (device, precision, normalisation, the model, the lr of a step); a leaf
    classify.py     classification's part of the step: the per-step tricks, the loss (the Classify task)
    step.py         the one training step (TrainStep) for every task, and its device-side meter
    setup.py        what a classification run builds once: data, model, teacher, optimizer, scaler, EMA
    loop.py         the one run loop (run_job, train) and its contract with a job (Job)
    checkpointer.py what a run's checkpoint holds, written as a collective
    evaluate.py     evaluate(): top-1/top-5 (and TTA) of a model on a test split
    inference.py    load_model() (with predict) and evaluate_checkpoint(): a trained model out of its run
    extend.py       extend_run(): a finished run trained on to more epochs, in a new run folder
    runfolder.py    new-or-continued run folder (the run's plan), run log, metrics, environment record
    signals.py      SIGINT/SIGTERM as a flag read at step boundaries; the stop protocol
    distributed.py  torchrun process group and the few collectives the loop needs
    syncbn.py       SyncBatchNorm that also works on CPU (gloo)

Names load on first use: importing one module of the engine does not import the others. (No name here
is also a module's: `engine.evaluate` is the module, its function is `engine.evaluate.evaluate`.)
"""
from __future__ import annotations

from bagoftricks.lazy import lazy_exports

_EXPORTS = {
    "LoadedModel": "inference", "evaluate_checkpoint": "inference", "load_model": "inference",
    "extend_run": "extend",
    "Job": "loop", "run_job": "loop", "train": "loop",
    "Training": "setup", "build_data": "setup", "setup_training": "setup",
    "recipe_model": "derive", "scheduled_lr": "derive", "model_from_checkpoint": "derive",
    "TrainStep": "step",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
