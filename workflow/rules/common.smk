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
STAGES = pipeline.stages(CFG) + pipeline.benchmark_stages(CFG)   # benchmarks: targets results/<name>/...
TARGETS = [o for st in STAGES if st.name == "report" for o in st.outs]


def _out(path):
    """Folders are directory() outputs; figures go into `snakemake --report report.html`."""
    ext = os.path.splitext(path)[1]
    if not ext:
        return directory(path)
    if ext == ".png":
        return report(path, category="results", subcategory=os.path.basename(os.path.dirname(path)))
    return path
