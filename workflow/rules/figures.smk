rule plot_figure:
    input:
        unpack(figure_tables),
    output:
        pdf=f"{R}/figures/{{figure}}.pdf",
        png=report(
            f"{R}/figures/{{figure}}.png",
            caption="../report/figure.rst",
            category="Figures",
        ),
    log:
        f"{LOGS}/plot_figure/{{figure}}.log",
    conda:
        "../../envs/iclbench.yaml"
    params:
        options=lambda wc: config["figures"][wc.figure],
        caption=lambda wc: PLAN.figure_captions[wc.figure],
    script:
        "../scripts/plot_figure.py"
