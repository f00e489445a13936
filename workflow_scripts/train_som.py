"""Entry point of rule train_som: the quality SOM and its K-means clusters, from the training tiles."""

from skysift.runtime import rule_logging
from skysift.som import plot_som, sample_features, save_som, train_som

with rule_logging(snakemake.log[0], snakemake.threads):
    s = snakemake.params.settings
    x, n_total = sample_features(list(snakemake.input.components), s["max_samples"], snakemake.params.seed)
    model = train_som(x, rows=s["rows"], cols=s["cols"], sigma=s["sigma"], epochs=s["epochs"],
                      batch_size=s["batch_size"], n_clusters=s["n_clusters"], seed=snakemake.params.seed,
                      chunk=s["chunk"])
    model.meta["n_components_available"] = n_total
    save_som(model, snakemake.output.model)
    plot_som(model, x, snakemake.output.png)
