"""The API's routes, grouped by the function that serves them."""
