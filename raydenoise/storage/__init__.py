"""Where bytes live: local folders and S3 (store.py), sorted Parquet parts, the data set format."""
