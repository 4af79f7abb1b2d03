"""Training engine: the only reader of the recipe's trick fields.

    setup.py       device, data, model, teacher, optimizer, scaler, EMA: what a run builds once
    step.py        the training step (TrainStep) and its device-side meter
    loop.py        train(): resume plan, epoch loop, end-of-epoch evaluation, checkpoints, stop protocol
    extend.py      extend_run(): a finished run trained on to more epochs, in a new run folder
    evaluate.py    evaluate(), evaluate_checkpoint() and load_model() (a checkpoint's model, for Python use)
    runfolder.py   new-or-continued run folder, run log, metrics, environment record
    checkpoint.py  atomic checkpoints, the 'latest' pointer, rotation, loading
    signals.py     SIGINT/SIGTERM as a flag read at step boundaries
    distributed.py torchrun process group and the few collectives the loop needs
    syncbn.py      SyncBatchNorm that also works on CPU (gloo)
"""
from bagoftricks.engine.evaluate import LoadedModel, evaluate, evaluate_checkpoint, load_model
from bagoftricks.engine.extend import extend_run
from bagoftricks.engine.loop import train
from bagoftricks.engine.setup import Training, build_data, recipe_model, scheduled_lr, setup_training
from bagoftricks.engine.step import TrainStep

__all__ = ["LoadedModel", "TrainStep", "Training", "build_data", "evaluate", "evaluate_checkpoint", "extend_run",
           "load_model", "recipe_model", "scheduled_lr", "setup_training", "train"]
