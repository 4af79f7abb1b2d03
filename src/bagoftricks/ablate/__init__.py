"""`bagoftricks ablate`: a ladder or grid of recipe overrides x seeds -> run folders + results.jsonl.

A spec (YAML) names a base recipe and the steps to measure; each (step, seed) cell is an ordinary run
folder under ``OUT/runs/`` trained by ``bagoftricks train``, and ``OUT/results.jsonl`` gets one line per
finished attempt. Re-running the same command skips finished cells, resumes partial ones and keeps
failed ones (``--retry-failed`` starts them afresh).

    spec.py           the spec: parsing, checking, expansion into cells with validated recipes
    folder.py         the sweep folder's files, cell states, results records
    sweep.py          the driver (run_sweep): the plan, which cells run with which command, progress
    launchers.py      where a command runs: the Executor interface, local subprocesses (--jobs N)
    ray_launcher.py   --launcher ray: each command a Ray task (Ray is imported only then)
    cli.py            the command line, and `python -m bagoftricks.ablate`
"""
from bagoftricks.ablate.cli import add_arguments, cmd_ablate, main
from bagoftricks.ablate.folder import (BASE, CELLS, EXEC_FIELDS, LOCK, RESULTS, TEACHER_BASE, append_result,
                                       cell_state, check_existing, model_cost, read_results, result_record)
from bagoftricks.ablate.launchers import (LAUNCHERS, Executor, Finished, LocalExecutor, available_cores, job_env,
                                          visible_gpus)
from bagoftricks.ablate.ray_launcher import RAY_HINT, RayExecutor, import_ray, probe_address, ray_plan, run_cell_command
from bagoftricks.ablate.spec import (TEACHER_TOKEN, Cell, Spec, Step, cell_recipe, expand, format_value, load_spec,
                                     merge, parse_spec, select_steps, slugify)
from bagoftricks.ablate.sweep import make_executor, run_sweep, train_command, write_plan
from bagoftricks.errors import LauncherError, SpecError

__all__ = [
    "BASE", "CELLS", "EXEC_FIELDS", "LAUNCHERS", "LOCK", "RAY_HINT", "RESULTS", "TEACHER_BASE", "TEACHER_TOKEN",
    "Cell", "Executor", "Finished", "LauncherError", "LocalExecutor", "RayExecutor", "Spec", "SpecError", "Step",
    "add_arguments", "append_result", "available_cores", "cell_recipe", "cell_state", "check_existing", "cmd_ablate",
    "expand", "format_value", "import_ray", "job_env", "load_spec", "main", "make_executor", "merge", "model_cost",
    "parse_spec", "probe_address", "ray_plan", "read_results", "result_record", "run_cell_command", "run_sweep",
    "select_steps", "slugify", "train_command", "visible_gpus", "write_plan",
]
