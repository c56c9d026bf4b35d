"""The aggregator's domain: fetch posts from an upstream API, store them, serve them."""
