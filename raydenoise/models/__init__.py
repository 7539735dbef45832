"""The networks (one table: networks.py), their torch code, model folders and built-ins, the inference engines."""
