# Validate params.yaml against the schema the CLI uses, then build the stage list.
from snakemake.utils import validate

from samc import pipeline
from samc.config import from_dict

validate(config, "../schemas/params.schema.json")
CFG = from_dict(config, source="params.yaml (Snakemake configfile)")
STAGES = pipeline.stages(CFG) + pipeline.benchmark_stages(CFG)   # benchmarks: targets results/<name>/...
TARGETS = [o for st in STAGES if st.name == "report" for o in st.outs]
