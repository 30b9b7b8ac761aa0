# One Snakemake rule per stage of samc.pipeline.stages(): inputs, outputs and the command come
# from there. `params: fingerprint` is the hash of the parameters the stage reads, so a changed
# value (e.g. samc.mu) re-runs exactly the stages that read it (Snakemake's `params` rerun trigger).
for _st in STAGES:

    rule:
        name:
            _st.name
        input:
            _st.deps,
        output:
            [_out(o) for o in _st.outs] + _st.metrics + _st.plots,
        params:
            cmd=_st.cmd,
            fingerprint=_st.fingerprint,
        log:
            f"logs/{_st.name}.log",
        threads: _st.resources.get("threads", 1)
        resources:
            kind=_st.resources.get("kind", "cpu"),
            **kind_resources(_st.resources.get("kind", "cpu")),
        shell:
            "{params.cmd} > {log} 2>&1"
