rule plot_figure:
    input:
        unpack(figure_tables),
    output:
        pdf="results/figures/{figure}.pdf",
        png=report(
            "results/figures/{figure}.png",
            caption="../report/figure.rst",
            category="Figures",
        ),
    log:
        "logs/plot_figure/{figure}.log",
    conda:
        "../../envs/iclbench.yaml"
    params:
        options=lambda wc: config["figures"][wc.figure],
        caption=lambda wc: PLAN.figure_captions[wc.figure],
    script:
        "../scripts/plot_figure.py"
