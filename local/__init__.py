"""The local stack: the whole aggregator on a laptop, with no Docker and no AWS account."""
