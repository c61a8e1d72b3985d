"""ml_collections configs, one file per method: `get_config('dataset[,setting[,source]]')`."""
