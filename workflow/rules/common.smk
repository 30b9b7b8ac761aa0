# Validate params.yaml against the schema the CLI uses, then build the stage list.
import os

from snakemake.utils import validate

from samc import pipeline
from samc.config import from_dict

# Per-kind resources of the rules (prepare | train | evaluate) come from the execution profile
# (workflow/profiles/slurm, .../gpu: `config: rule_resources:`), not from params.yaml.
RULE_RESOURCES = config.pop("rule_resources", {})


def kind_resources(kind):
    """The profile's resources for rules of ``kind`` (numbers as numbers: mem_mb, runtime, gpu)."""
    out = {}
    for key, value in (RULE_RESOURCES.get(kind) or {}).items():
        text = str(value)
        out[key] = int(text) if text.isdigit() else value
    return out


validate(config, "../schemas/params.schema.json")
CFG = from_dict(config, source="params.yaml (Snakemake configfile)")
# benchmarks (targets results/<name>/...): only the stages of those the requested targets name (a
# dry run over every benchmark builds ~5,000 rules); every benchmark for a cluster job or a target
# that cannot be placed
def _requested():
    """The targets of this snakemake command line (None when it cannot be read or is a cluster job's:
    an API call, `--target-jobs`)."""
    import sys

    if "snakemake" not in os.path.basename(sys.argv[0]) and "snakemake" not in sys.argv[0].split(os.sep)[-2:-1]:
        return None                           # not snakemake's own command line (an API call)
    try:
        from snakemake.cli import get_argument_parser

        args = get_argument_parser().parse_args(sys.argv[1:])
    except BaseException:                     # argparse exits on what it cannot parse
        return None
    if getattr(args, "target_jobs", None):   # a cluster job's snakemake (entries are dicts)
        return None
    return list(args.targets or [])


_GRID = pipeline.stages(CFG)
_REQ = _requested()
_WANTED = None if _REQ is None else pipeline.benchmarks_for(CFG, _REQ, {st.name for st in _GRID})
STAGES = _GRID + pipeline.benchmark_stages(CFG, only=_WANTED)
TARGETS = [o for st in STAGES if st.name == "report" for o in st.outs]


REPORT = os.path.join(workflow.basedir, "workflow", "report")   # captions of `snakemake --report`
_CAPTIONS = {"accuracy_matrix.png": "accuracy_matrix.rst", "first_task.png": "first_task.rst",
             "loss.png": "loss.rst", "report.csv": "report_table.rst"}


def _out(path):
    """Folders are directory() outputs; figures and the report table go into `snakemake --report
    report.html`, each with its caption (workflow/report/)."""
    ext = os.path.splitext(path)[1]
    name = os.path.basename(path)
    if not ext:
        return directory(path)
    if ext == ".png" or name == "report.csv":
        caption = os.path.join(REPORT, _CAPTIONS.get(name, "benchmark.rst"))
        category = "metrics" if name == "report.csv" else "results"
        return report(path, caption=caption, category=category,
                      subcategory=os.path.basename(os.path.dirname(path)) or "grid")
    return path
