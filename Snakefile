# samc pipeline for Snakemake: `snakemake --cores 4` (see README.md).
# The stages are defined once, in samc/pipeline.py (dvc.yaml is rendered from the same list);
# every stage is one `samc` command that reads params.yaml itself.
configfile: "params.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


# With --use-singularity (--sdm apptainer) every job runs in this image (containers/: build it);
# without it, on the host.
container: CFG.run.container


rule all:
    input:
        TARGETS,
    default_target: True


include: "workflow/rules/stages.smk"
