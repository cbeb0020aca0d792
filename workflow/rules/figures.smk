from iclbench.figures import FIGURES as FIGURE_REGISTRY


def figure_tables(wildcards):
    tables = FIGURE_REGISTRY.get(wildcards.figure).tables
    return {t: f"results/summary/{t}.parquet" for t in tables}


rule plot_figure:
    input:
        unpack(figure_tables),
    output:
        pdf=report(
            "results/figures/{figure}.pdf",
            caption="../report/figure.rst",
            category="Figures",
        ),
        png="results/figures/{figure}.png",
    params:
        options=lambda wc: config["figures"][wc.figure],
        caption=lambda wc: FIGURE_REGISTRY.get(wc.figure).caption,
    log:
        "logs/plot_figure/{figure}.log",
    conda:
        "../../envs/iclbench.yaml"
    script:
        "../scripts/plot_figure.py"
